#include "rl_crypto.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

static const char HEX_DIGITS[] = "0123456789abcdef";
static const char B64_STD[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char B64_URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
static const char B62_DIGITS[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* Fetched once and kept for the process: an implicit fetch on every call is a
 * locked lookup in OpenSSL 3's method store. */
static pthread_once_t algs_once = PTHREAD_ONCE_INIT;
static EVP_MD *alg_sha256;
static EVP_MAC *alg_hmac;
static EVP_CIPHER *alg_aes_gcm;

static void algs_fetch(void)
{
    alg_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    alg_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    alg_aes_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
}

static rl_status_t algs_ready(void)
{
    pthread_once(&algs_once, algs_fetch);
    if (alg_sha256 == NULL || alg_hmac == NULL || alg_aes_gcm == NULL) {
        ERR_clear_error();
        return rl_error(RL_ERR_CRYPTO, "OpenSSL provides no SHA256, HMAC or AES-256-GCM");
    }
    return RL_OK;
}

/* Records a failed OpenSSL call. Clears OpenSSL's per-thread error queue so
 * stale entries never surface in another library (libpq, libcurl) later. */
static rl_status_t openssl_failed(const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char reason[128] = "no detail";
    if (e != 0)
        ERR_error_string_n(e, reason, sizeof reason);
    ERR_clear_error();
    return rl_error(RL_ERR_CRYPTO, "%s failed: %s", what, reason);
}

rl_status_t rl_random_bytes(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        int chunk = n > INT_MAX ? INT_MAX : (int)n;
        if (RAND_bytes(p, chunk) != 1)
            return openssl_failed("RAND_bytes");
        p += chunk;
        n -= (size_t)chunk;
    }
    return RL_OK;
}

rl_status_t rl_sha256(const void *data, size_t len, uint8_t out[RL_SHA256_LEN])
{
    rl_status_t st = algs_ready();
    if (st != RL_OK)
        return st;
    unsigned int n = 0;
    if (EVP_Digest(len ? data : "", len, out, &n, alg_sha256, NULL) != 1 || n != RL_SHA256_LEN)
        return openssl_failed("SHA-256");
    return RL_OK;
}

struct rl_hmac {
    EVP_MAC_CTX *ctx; /* keyed; re-initialised (same key) before each message */
};

rl_status_t rl_hmac_new(const void *key, size_t keylen, rl_hmac_t **out)
{
    rl_status_t st = algs_ready();
    if (st != RL_OK)
        return st;
    rl_hmac_t *h = calloc(1, sizeof *h);
    if (h == NULL)
        return rl_error(RL_ERR_NOMEM, "HMAC context");
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    /* A NULL key would mean "keep the previous key" to EVP_MAC_init. */
    const unsigned char *k = keylen ? key : (const unsigned char *)"";
    h->ctx = EVP_MAC_CTX_new(alg_hmac);
    if (h->ctx == NULL || EVP_MAC_init(h->ctx, k, keylen, params) != 1) {
        rl_hmac_free(h);
        return openssl_failed("HMAC-SHA-256 key");
    }
    *out = h;
    return RL_OK;
}

rl_status_t rl_hmac_compute(rl_hmac_t *h, const void *data, size_t len,
                            uint8_t out[RL_SHA256_LEN])
{
    size_t n = 0;
    int ok = EVP_MAC_init(h->ctx, NULL, 0, NULL) == 1 && /* same key, fresh state */
             EVP_MAC_update(h->ctx, len ? data : "", len) == 1 &&
             EVP_MAC_final(h->ctx, out, &n, RL_SHA256_LEN) == 1 && n == RL_SHA256_LEN;
    return ok ? RL_OK : openssl_failed("HMAC-SHA-256");
}

void rl_hmac_free(rl_hmac_t *h)
{
    if (h == NULL)
        return;
    EVP_MAC_CTX_free(h->ctx);
    free(h);
}

rl_status_t rl_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                           uint8_t out[RL_SHA256_LEN])
{
    rl_hmac_t *h = NULL;
    rl_status_t st = rl_hmac_new(key, keylen, &h);
    if (st == RL_OK)
        st = rl_hmac_compute(h, data, len, out);
    rl_hmac_free(h);
    return st;
}

bool rl_ct_equal(const void *a, const void *b, size_t n)
{
    return n == 0 || CRYPTO_memcmp(a, b, n) == 0;
}

rl_status_t rl_aead_seal(const uint8_t key[RL_AEAD_KEY_LEN], const void *plain, size_t n,
                         const void *aad, size_t aadlen, uint8_t **out, size_t *outlen)
{
    if (n > RL_AEAD_MAX_LEN || aadlen > RL_AEAD_MAX_LEN)
        return rl_error(RL_ERR_TOO_LARGE, "AEAD input of %zu bytes, aad %zu: limit is %zu", n,
                        aadlen, RL_AEAD_MAX_LEN);
    rl_status_t st = algs_ready();
    if (st != RL_OK)
        return st;
    size_t total = n + RL_AEAD_OVERHEAD;
    uint8_t *buf = malloc(total); /* owned here until handed to *out */
    if (buf == NULL)
        return rl_error(RL_ERR_NOMEM, "AEAD output of %zu bytes", total);
    st = rl_random_bytes(buf, RL_AEAD_NONCE_LEN);
    if (st != RL_OK) {
        free(buf);
        return st;
    }
    uint8_t *ct = buf + RL_AEAD_NONCE_LEN;
    int len = 0;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int ok =
        ctx != NULL && EVP_EncryptInit_ex2(ctx, alg_aes_gcm, key, buf, NULL) == 1 &&
        (aadlen == 0 || EVP_EncryptUpdate(ctx, NULL, &len, aad, (int)aadlen) == 1) &&
        (n == 0 || (EVP_EncryptUpdate(ctx, ct, &len, plain, (int)n) == 1 && (size_t)len == n)) &&
        EVP_EncryptFinal_ex(ctx, ct + n, &len) == 1 && len == 0 &&
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, RL_AEAD_TAG_LEN, ct + n) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok) {
        OPENSSL_cleanse(buf, total);
        free(buf);
        return openssl_failed("AES-256-GCM seal");
    }
    *out = buf;
    *outlen = total;
    return RL_OK;
}

rl_status_t rl_aead_open(const uint8_t key[RL_AEAD_KEY_LEN], const void *sealed, size_t n,
                         const void *aad, size_t aadlen, uint8_t **out, size_t *outlen)
{
    if (n < RL_AEAD_OVERHEAD)
        return rl_error(RL_ERR_CRYPTO, "sealed input of %zu bytes is shorter than nonce and tag",
                        n);
    size_t plen = n - RL_AEAD_OVERHEAD;
    if (plen > RL_AEAD_MAX_LEN || aadlen > RL_AEAD_MAX_LEN)
        return rl_error(RL_ERR_TOO_LARGE, "AEAD input of %zu bytes, aad %zu: limit is %zu", plen,
                        aadlen, RL_AEAD_MAX_LEN);
    rl_status_t st = algs_ready();
    if (st != RL_OK)
        return st;
    const uint8_t *nonce = sealed;
    const uint8_t *ct = nonce + RL_AEAD_NONCE_LEN;
    const uint8_t *tag = ct + plen;
    uint8_t *plain = malloc(plen ? plen : 1); /* owned here until handed to *out */
    if (plain == NULL)
        return rl_error(RL_ERR_NOMEM, "AEAD plaintext of %zu bytes", plen);
    int len = 0;
    uint8_t final_block[16];
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int ok = ctx != NULL && EVP_DecryptInit_ex2(ctx, alg_aes_gcm, key, nonce, NULL) == 1 &&
             (aadlen == 0 || EVP_DecryptUpdate(ctx, NULL, &len, aad, (int)aadlen) == 1) &&
             (plen == 0 ||
              (EVP_DecryptUpdate(ctx, plain, &len, ct, (int)plen) == 1 && (size_t)len == plen)) &&
             EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, RL_AEAD_TAG_LEN, (void *)tag) == 1 &&
             EVP_DecryptFinal_ex(ctx, final_block, &len) == 1 && len == 0;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok) {
        OPENSSL_cleanse(plain, plen);
        free(plain);
        ERR_clear_error();
        return rl_error(RL_ERR_CRYPTO, "AES-256-GCM open: authentication failed");
    }
    *out = plain;
    *outlen = plen;
    return RL_OK;
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

rl_status_t rl_key_from_hex(const char *hex, uint8_t key[RL_AEAD_KEY_LEN])
{
    if (hex == NULL || strnlen(hex, 2 * RL_AEAD_KEY_LEN + 1) != 2 * RL_AEAD_KEY_LEN)
        return rl_error(RL_ERR_INVALID, "a key must be %d hex characters", 2 * RL_AEAD_KEY_LEN);
    uint8_t tmp[RL_AEAD_KEY_LEN];
    size_t n = 0;
    rl_status_t st = rl_hex_decode(hex, 2 * RL_AEAD_KEY_LEN, tmp, sizeof tmp, &n);
    if (st == RL_OK)
        memcpy(key, tmp, sizeof tmp);
    OPENSSL_cleanse(tmp, sizeof tmp);
    if (st != RL_OK)
        return rl_error(RL_ERR_INVALID, "a key must be %d hex characters", 2 * RL_AEAD_KEY_LEN);
    return RL_OK;
}

rl_status_t rl_key_from_env(const char *var, uint8_t key[RL_AEAD_KEY_LEN])
{
    const char *hex = getenv(var);
    if (hex == NULL || hex[0] == '\0')
        return rl_error(RL_ERR_NOT_FOUND, "%s is not set", var);
    if (rl_key_from_hex(hex, key) != RL_OK)
        return rl_error(RL_ERR_INVALID, "%s must be %d hex characters (a 32-byte key)", var,
                        2 * RL_AEAD_KEY_LEN);
    return RL_OK;
}

/* Every encoder refuses n above this, which keeps each RL_*_ENC_SIZE(n) free
 * of overflow; no real input comes near it. */
#define ENC_MAX_INPUT (SIZE_MAX / 4)

static rl_status_t enc_room(size_t n, size_t need, size_t cap, const char *what)
{
    if (n > ENC_MAX_INPUT || cap < need)
        return rl_error(RL_ERR_TOO_LARGE, "%s of %zu bytes needs %zu bytes of room, have %zu", what,
                        n, need, cap);
    return RL_OK;
}

rl_status_t rl_hex_encode(const void *in, size_t n, char *out, size_t cap)
{
    rl_status_t st = enc_room(n, n > ENC_MAX_INPUT ? 0 : RL_HEX_ENC_SIZE(n), cap, "hex");
    if (st != RL_OK)
        return st;
    const uint8_t *p = in;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = HEX_DIGITS[p[i] >> 4];
        out[2 * i + 1] = HEX_DIGITS[p[i] & 0x0f];
    }
    out[2 * n] = '\0';
    return RL_OK;
}

rl_status_t rl_hex_decode(const char *in, size_t len, void *out, size_t cap, size_t *outlen)
{
    if (len % 2 != 0)
        return rl_error(RL_ERR_INVALID, "hex of odd length %zu", len);
    if (cap < len / 2)
        return rl_error(RL_ERR_TOO_LARGE, "hex decodes to %zu bytes, room for %zu", len / 2, cap);
    uint8_t *o = out;
    for (size_t i = 0; i < len; i += 2) {
        int hi = hex_value((unsigned char)in[i]);
        int lo = hex_value((unsigned char)in[i + 1]);
        if (hi < 0 || lo < 0)
            return rl_error(RL_ERR_INVALID, "not a hex digit at offset %zu", hi < 0 ? i : i + 1);
        o[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    *outlen = len / 2;
    return RL_OK;
}

/* Writes the base64 of n bytes with alphabet alpha, '='-padded when pad, and a
 * NUL; the caller has checked the room. */
static void b64_encode(const uint8_t *in, size_t n, char *out, const char *alpha, bool pad)
{
    size_t o = 0;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = alpha[v >> 18];
        out[o++] = alpha[v >> 12 & 0x3f];
        out[o++] = alpha[v >> 6 & 0x3f];
        out[o++] = alpha[v & 0x3f];
    }
    size_t rest = n - i;
    if (rest > 0) {
        uint32_t v = (uint32_t)in[i] << 16 | (rest == 2 ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = alpha[v >> 18];
        out[o++] = alpha[v >> 12 & 0x3f];
        if (rest == 2)
            out[o++] = alpha[v >> 6 & 0x3f];
        else if (pad)
            out[o++] = '=';
        if (pad)
            out[o++] = '=';
    }
    out[o] = '\0';
}

rl_status_t rl_base64_encode(const void *in, size_t n, char *out, size_t cap)
{
    rl_status_t st = enc_room(n, n > ENC_MAX_INPUT ? 0 : RL_BASE64_ENC_SIZE(n), cap, "base64");
    if (st == RL_OK)
        b64_encode(in, n, out, B64_STD, true);
    return st;
}

rl_status_t rl_base64url_encode(const void *in, size_t n, char *out, size_t cap)
{
    rl_status_t st =
        enc_room(n, n > ENC_MAX_INPUT ? 0 : RL_BASE64URL_ENC_SIZE(n), cap, "base64url");
    if (st == RL_OK)
        b64_encode(in, n, out, B64_URL, false);
    return st;
}

static int b64_value(unsigned char c, bool url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

/* Decodes len unpadded base64 characters (padding already stripped). */
static rl_status_t b64_decode(const char *in, size_t len, void *out, size_t cap, size_t *outlen,
                              bool url)
{
    size_t rest = len % 4;
    if (rest == 1)
        return rl_error(RL_ERR_INVALID, "base64 of impossible length %zu", len);
    size_t need = len / 4 * 3 + (rest ? rest - 1 : 0);
    if (cap < need)
        return rl_error(RL_ERR_TOO_LARGE, "base64 decodes to %zu bytes, room for %zu", need, cap);
    uint8_t *o = out;
    size_t w = 0;
    uint32_t acc = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)in[i], url);
        if (v < 0)
            return rl_error(RL_ERR_INVALID, "not a %s character at offset %zu",
                            url ? "base64url" : "base64", i);
        acc = acc << 6 | (uint32_t)v;
        if (i % 4 == 3) {
            o[w++] = (uint8_t)(acc >> 16);
            o[w++] = (uint8_t)(acc >> 8);
            o[w++] = (uint8_t)acc;
            acc = 0;
        }
    }
    /* A tail of 2 or 3 characters carries 12 or 18 bits for 8 or 16; the
     * unused low bits must be zero or two texts would decode alike. */
    if (rest == 2) {
        if (acc & 0x0f)
            return rl_error(RL_ERR_INVALID, "base64 tail has unused bits set");
        o[w++] = (uint8_t)(acc >> 4);
    } else if (rest == 3) {
        if (acc & 0x03)
            return rl_error(RL_ERR_INVALID, "base64 tail has unused bits set");
        o[w++] = (uint8_t)(acc >> 10);
        o[w++] = (uint8_t)(acc >> 2);
    }
    *outlen = w;
    return RL_OK;
}

rl_status_t rl_base64_decode(const char *in, size_t len, void *out, size_t cap, size_t *outlen)
{
    if (len % 4 != 0)
        return rl_error(RL_ERR_INVALID, "padded base64 of length %zu, not a multiple of 4", len);
    size_t pad = 0;
    while (pad < 2 && pad < len && in[len - 1 - pad] == '=')
        pad++;
    return b64_decode(in, len - pad, out, cap, outlen, false);
}

rl_status_t rl_base64url_decode(const char *in, size_t len, void *out, size_t cap, size_t *outlen)
{
    return b64_decode(in, len, out, cap, outlen, true);
}

static int b62_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'Z')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 36;
    return -1;
}

/* Divides the big-endian number num[0..n) by 62 in place; returns the remainder. */
static unsigned b62_divmod(uint8_t *num, size_t n)
{
    unsigned rem = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned acc = rem << 8 | num[i];
        num[i] = (uint8_t)(acc / 62);
        rem = acc % 62;
    }
    return rem;
}

/* Writes the base62 digits of big-endian num[0..n) to out, most significant
 * first, and returns their count: exactly width digits when width > 0
 * (zero-padded; the number must fit), otherwise as many as the value needs
 * (none for zero). Consumes num. */
static size_t b62_digits(uint8_t *num, size_t n, char *out, size_t width)
{
    size_t start = 0;
    size_t d = 0;
    for (;;) {
        while (start < n && num[start] == 0)
            start++;
        if (width ? d == width : start == n)
            break;
        out[d++] = B62_DIGITS[b62_divmod(num + start, n - start)];
    }
    for (size_t i = 0; i < d / 2; i++) {
        char t = out[i];
        out[i] = out[d - 1 - i];
        out[d - 1 - i] = t;
    }
    return d;
}

rl_status_t rl_base62_encode(const void *in, size_t n, char *out, size_t cap)
{
    if (n > RL_BASE62_MAX_BYTES)
        return rl_error(RL_ERR_TOO_LARGE, "base62 input of %zu bytes, limit %d", n,
                        RL_BASE62_MAX_BYTES);
    if (cap < RL_BASE62_ENC_SIZE(n))
        return rl_error(RL_ERR_TOO_LARGE, "base62 of %zu bytes needs %zu bytes of room, have %zu",
                        n, (size_t)RL_BASE62_ENC_SIZE(n), cap);
    const uint8_t *p = in;
    size_t zeros = 0;
    while (zeros < n && p[zeros] == 0)
        out[zeros++] = '0';
    uint8_t num[RL_BASE62_MAX_BYTES];
    if (n > zeros)
        memcpy(num, p + zeros, n - zeros);
    size_t d = b62_digits(num, n - zeros, out + zeros, 0);
    OPENSSL_cleanse(num, n - zeros);
    out[zeros + d] = '\0';
    return RL_OK;
}

rl_status_t rl_base62_decode(const char *in, size_t len, void *out, size_t cap, size_t *outlen)
{
    if (len > RL_BASE62_ENC_SIZE(RL_BASE62_MAX_BYTES) - 1)
        return rl_error(RL_ERR_TOO_LARGE, "base62 text of %zu characters, limit %d", len,
                        RL_BASE62_ENC_SIZE(RL_BASE62_MAX_BYTES) - 1);
    uint8_t *o = out;
    size_t zeros = 0;
    while (zeros < len && in[zeros] == '0')
        zeros++;
    if (zeros > cap)
        return rl_error(RL_ERR_TOO_LARGE, "base62 decodes past %zu bytes of room", cap);
    for (size_t i = 0; i < zeros; i++)
        o[i] = 0;
    /* The value accumulates little-endian in o[zeros..end), then flips. */
    size_t end = zeros;
    for (size_t i = zeros; i < len; i++) {
        int v = b62_value((unsigned char)in[i]);
        if (v < 0)
            return rl_error(RL_ERR_INVALID, "not a base62 character at offset %zu", i);
        unsigned carry = (unsigned)v;
        for (size_t j = zeros; j < end; j++) {
            carry += o[j] * 62u;
            o[j] = (uint8_t)carry;
            carry >>= 8;
        }
        while (carry > 0) {
            if (end == cap)
                return rl_error(RL_ERR_TOO_LARGE, "base62 decodes past %zu bytes of room", cap);
            o[end++] = (uint8_t)carry;
            carry >>= 8;
        }
    }
    for (size_t i = zeros, j = end; i + 1 < j; i++, j--) {
        uint8_t t = o[i];
        o[i] = o[j - 1];
        o[j - 1] = t;
    }
    *outlen = end;
    return RL_OK;
}

size_t rl_token_body_len(size_t random_bytes)
{
    if (random_bytes < RL_TOKEN_MIN_BYTES || random_bytes > RL_TOKEN_MAX_BYTES)
        return 0;
    uint8_t max[RL_TOKEN_MAX_BYTES];
    char digits[RL_BASE62_ENC_SIZE(RL_TOKEN_MAX_BYTES)];
    memset(max, 0xff, random_bytes);
    return b62_digits(max, random_bytes, digits, 0);
}

static bool token_prefix_ok(const char *prefix)
{
    size_t i = 0;
    for (; prefix[i] != '\0'; i++) {
        unsigned char c = (unsigned char)prefix[i];
        bool ok =
            (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
        if (!ok || i == RL_TOKEN_PREFIX_MAX)
            return false;
    }
    return true;
}

rl_status_t rl_token_generate(const char *prefix, size_t random_bytes, char *out, size_t cap)
{
    if (prefix == NULL || !token_prefix_ok(prefix))
        return rl_error(RL_ERR_INVALID, "a token prefix is at most %d characters of [A-Za-z0-9_]",
                        RL_TOKEN_PREFIX_MAX);
    size_t width = rl_token_body_len(random_bytes);
    if (width == 0)
        return rl_error(RL_ERR_INVALID, "a token has %d to %d random bytes, not %zu",
                        RL_TOKEN_MIN_BYTES, RL_TOKEN_MAX_BYTES, random_bytes);
    size_t plen = strlen(prefix);
    if (cap < plen + width + 1)
        return rl_error(RL_ERR_TOO_LARGE, "a token needs %zu bytes of room, have %zu",
                        plen + width + 1, cap);
    uint8_t secret[RL_TOKEN_MAX_BYTES];
    rl_status_t st = rl_random_bytes(secret, random_bytes);
    if (st == RL_OK) {
        memcpy(out, prefix, plen);
        b62_digits(secret, random_bytes, out + plen, width);
        out[plen + width] = '\0';
    }
    OPENSSL_cleanse(secret, sizeof secret);
    return st;
}
