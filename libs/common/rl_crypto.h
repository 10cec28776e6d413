/* rl_crypto: random bytes, SHA-256, HMAC-SHA-256, constant-time comparison,
 * AES-256-GCM sealing, secret-key loading, and the text encodings secrets and
 * tokens travel in (hex, base64, base64url, base62). Built on OpenSSL 3's EVP
 * interfaces. Every function is thread-safe; the only state kept is the
 * OpenSSL algorithms, fetched once per process.
 * Error contexts never contain key material. */
#ifndef RL_CRYPTO_H
#define RL_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rl_status.h"

#define RL_SHA256_LEN 32
#define RL_AEAD_KEY_LEN 32
#define RL_AEAD_NONCE_LEN 12
#define RL_AEAD_TAG_LEN 16
/* Bytes rl_aead_seal adds to the plaintext: nonce before, tag after. */
#define RL_AEAD_OVERHEAD (RL_AEAD_NONCE_LEN + RL_AEAD_TAG_LEN)
/* Largest plaintext or associated data rl_aead_seal/rl_aead_open accept (1 GiB). */
#define RL_AEAD_MAX_LEN ((size_t)1 << 30)

/* Buffer sizes, terminating NUL included, the encoders need for n input bytes. */
#define RL_HEX_ENC_SIZE(n) (2 * (n) + 1)
#define RL_BASE64_ENC_SIZE(n) (((n) + 2) / 3 * 4 + 1)
#define RL_BASE64URL_ENC_SIZE(n) (((n)*4 + 2) / 3 + 1)
#define RL_BASE62_ENC_SIZE(n) (((n)*1344 + 999) / 1000 + 1) /* 8/log2(62) < 1.344 */
/* Largest input rl_base62_encode accepts: the conversion is quadratic. */
#define RL_BASE62_MAX_BYTES 256

/* Token sizes for rl_token_generate. */
#define RL_TOKEN_PREFIX_MAX 32
#define RL_TOKEN_MIN_BYTES 16
#define RL_TOKEN_MAX_BYTES 64
#define RL_TOKEN_DEFAULT_BYTES 24 /* 192 bits: a 33-character body */
#define RL_TOKEN_MAX_SIZE 128     /* fits any token, NUL included */

/* Fills buf with n bytes from OpenSSL's CSPRNG. RL_ERR_CRYPTO when the
 * generator fails (buf contents are then unspecified). */
rl_status_t rl_random_bytes(void *buf, size_t n);

/* Writes the SHA-256 digest of len bytes at data (NULL when len is 0) to out.
 * RL_ERR_CRYPTO when OpenSSL fails. */
rl_status_t rl_sha256(const void *data, size_t len, uint8_t out[RL_SHA256_LEN]);

/* Writes HMAC-SHA-256(key, data) to out. key and data may be NULL when their
 * length is 0. RL_ERR_CRYPTO when OpenSSL fails. */
rl_status_t rl_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                           uint8_t out[RL_SHA256_LEN]);

/* An HMAC-SHA-256 key set up once, for hashing many messages under it: each
 * use skips OpenSSL's digest lookup and key schedule (about 0.9 -> 0.2 us for
 * an API key). One owner; not for concurrent use (one per thread). */
typedef struct rl_hmac rl_hmac_t;

/* *out receives a keyed HMAC; key may be NULL when keylen is 0. */
rl_status_t rl_hmac_new(const void *key, size_t keylen, rl_hmac_t **out);

/* Writes HMAC-SHA-256(h's key, data) to out; data may be NULL when len is 0. */
rl_status_t rl_hmac_compute(rl_hmac_t *h, const void *data, size_t len,
                            uint8_t out[RL_SHA256_LEN]);

void rl_hmac_free(rl_hmac_t *h);

/* True when the n bytes at a and b are equal; the time taken depends on n
 * only. Use it for every comparison of a secret or a MAC. */
bool rl_ct_equal(const void *a, const void *b, size_t n);

/* Encrypts and authenticates n bytes of plain (NULL when n is 0) with
 * AES-256-GCM under key, binding aadlen bytes of aad (NULL when 0) that are
 * authenticated but not stored. *out receives nonce(12) || ciphertext(n) ||
 * tag(16), *outlen = n + RL_AEAD_OVERHEAD; returns owned (free() it).
 * The nonce is random, so one key may seal up to 2^32 messages.
 * RL_ERR_TOO_LARGE past RL_AEAD_MAX_LEN, RL_ERR_NOMEM, RL_ERR_CRYPTO; on error
 * *out and *outlen are untouched. */
rl_status_t rl_aead_seal(const uint8_t key[RL_AEAD_KEY_LEN], const void *plain, size_t n,
                         const void *aad, size_t aadlen, uint8_t **out, size_t *outlen);

/* Verifies and decrypts n bytes produced by rl_aead_seal under the same key
 * and aad. *out receives the plaintext, *outlen its length; returns owned
 * (free() it; never NULL on success, even for an empty plaintext).
 * RL_ERR_CRYPTO when the input is shorter than RL_AEAD_OVERHEAD or any byte,
 * the key or the aad differ; RL_ERR_TOO_LARGE past RL_AEAD_MAX_LEN;
 * RL_ERR_NOMEM. On error no plaintext is released and *out, *outlen are
 * untouched. */
rl_status_t rl_aead_open(const uint8_t key[RL_AEAD_KEY_LEN], const void *sealed, size_t n,
                         const void *aad, size_t aadlen, uint8_t **out, size_t *outlen);

/* Loads a 32-byte key from exactly 64 hex characters (either case, nothing
 * else: no spaces, no "0x"). RL_ERR_INVALID otherwise; key is then untouched. */
rl_status_t rl_key_from_hex(const char *hex, uint8_t key[RL_AEAD_KEY_LEN]);

/* Loads a 32-byte key from the hex in environment variable var (e.g.
 * "RENLAYER_SECRET_KEY"). RL_ERR_NOT_FOUND when it is unset or empty,
 * RL_ERR_INVALID when it is not 64 hex characters; key is then untouched.
 * Reads the environment: call at startup, not alongside setenv(). */
rl_status_t rl_key_from_env(const char *var, uint8_t key[RL_AEAD_KEY_LEN]);

/* Encoders: write the text for n bytes at in (NULL when n is 0) and a NUL to
 * out, which holds cap bytes. RL_ERR_TOO_LARGE when cap is below the
 * RL_*_ENC_SIZE(n) of the encoding; out is then untouched. */

/* Lower-case hex. */
rl_status_t rl_hex_encode(const void *in, size_t n, char *out, size_t cap);
/* Standard base64 (RFC 4648 section 4, '+' '/'), padded with '='. */
rl_status_t rl_base64_encode(const void *in, size_t n, char *out, size_t cap);
/* base64url (RFC 4648 section 5, '-' '_') without padding, as JWT uses. */
rl_status_t rl_base64url_encode(const void *in, size_t n, char *out, size_t cap);
/* Base62 ("0-9A-Za-z") of in read as one big-endian number, each leading zero
 * byte written as one leading '0' so every byte string round-trips (the
 * base58 convention). The text length varies with the value; cap must still
 * reach RL_BASE62_ENC_SIZE(n). RL_ERR_TOO_LARGE past RL_BASE62_MAX_BYTES. */
rl_status_t rl_base62_encode(const void *in, size_t n, char *out, size_t cap);

/* Decoders: read len characters at in (no NUL needed, so a slice of a larger
 * string works), write the bytes to out, which holds cap bytes, and their
 * count to *outlen. Strict: only the encoding's alphabet, no whitespace, and
 * no unused bits set, so each byte string has exactly one accepted text.
 * RL_ERR_INVALID on malformed text, RL_ERR_TOO_LARGE when cap is short; on
 * error *outlen is untouched and out's contents are unspecified. */

/* Hex of either case; len must be even. Decodes to len / 2 bytes. */
rl_status_t rl_hex_decode(const char *in, size_t len, void *out, size_t cap, size_t *outlen);
/* Standard base64; len a multiple of 4, '=' padding required. At most len / 4 * 3 bytes. */
rl_status_t rl_base64_decode(const char *in, size_t len, void *out, size_t cap, size_t *outlen);
/* base64url without padding ('=' is rejected). At most len * 3 / 4 bytes. */
rl_status_t rl_base64url_decode(const char *in, size_t len, void *out, size_t cap, size_t *outlen);
/* The inverse of rl_base62_encode. At most len bytes. RL_ERR_TOO_LARGE when
 * len exceeds RL_BASE62_ENC_SIZE(RL_BASE62_MAX_BYTES) - 1. */
rl_status_t rl_base62_decode(const char *in, size_t len, void *out, size_t cap, size_t *outlen);

/* Length of the base62 body rl_token_generate writes for random_bytes bytes:
 * the digits of the largest such number (33 for 24 bytes, 43 for 32). 0 when
 * random_bytes is outside [RL_TOKEN_MIN_BYTES, RL_TOKEN_MAX_BYTES]. */
size_t rl_token_body_len(size_t random_bytes);

/* Writes a fresh secret token, prefix followed by random_bytes random bytes
 * as fixed-width base62 ("rl_live_" + 33 characters for 24 bytes), and a NUL
 * to out, which holds cap bytes. Fixed width (leading '0' digits kept) gives
 * every token of one kind the same length, so malformed keys are refused
 * before any lookup; the body is an opaque secret, not meant to be decoded.
 * prefix: at most RL_TOKEN_PREFIX_MAX characters of [A-Za-z0-9_], may be "".
 * RL_ERR_INVALID on a bad prefix or random_bytes outside
 * [RL_TOKEN_MIN_BYTES, RL_TOKEN_MAX_BYTES]; RL_ERR_TOO_LARGE when cap is below
 * strlen(prefix) + rl_token_body_len(random_bytes) + 1 (RL_TOKEN_MAX_SIZE
 * always suffices); RL_ERR_CRYPTO when the generator fails. */
rl_status_t rl_token_generate(const char *prefix, size_t random_bytes, char *out, size_t cap);

#endif
