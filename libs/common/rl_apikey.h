/* rl_apikey: RenLayer's secrets that callers present — agent API keys
 * ("rl_live_…") and operator API tokens ("rlop_…") — minted, displayed by
 * prefix, and stored only as keyed hashes. The api mints and stores them; the
 * proxy and the api hash what a caller presents and look the hash up.
 *
 * The hash key is derived from RENLAYER_SECRET_KEY, so a stolen database
 * alone cannot test guesses. */
#ifndef RL_APIKEY_H
#define RL_APIKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rl_crypto.h"
#include "rl_status.h"

#define RL_APIKEY_AGENT_PREFIX "rl_live_"
#define RL_APIKEY_OPERATOR_PREFIX "rlop_"
/* Characters of a secret shown in listings (its type prefix plus a few). */
#define RL_APIKEY_DISPLAY_LEN 12
#define RL_APIKEY_HASH_LEN RL_SHA256_LEN

typedef enum { RL_APIKEY_AGENT, RL_APIKEY_OPERATOR } rl_apikey_kind_t;

/* Derives the key-hashing key from the service's 32-byte secret key. */
void rl_apikey_derive_hash_key(const uint8_t secret_key[32], uint8_t hash_key[32]);

/* Mints a new secret of the kind into out (RL_TOKEN_MAX_SIZE bytes suffice).
 * RL_ERR_CRYPTO if the generator fails. */
rl_status_t rl_apikey_generate(rl_apikey_kind_t kind, char *out, size_t cap);

/* True when s has the shape of a secret of the kind (prefix, length and
 * alphabet): malformed keys are refused before any lookup. */
bool rl_apikey_well_formed(rl_apikey_kind_t kind, const char *s);

/* Writes HMAC-SHA256(hash_key, s) to out. */
rl_status_t rl_apikey_hash(const uint8_t hash_key[32], const char *s,
                           uint8_t out[RL_APIKEY_HASH_LEN]);

/* The same with a keyed HMAC made once from hash_key (rl_hmac_new): what a
 * hot path uses. */
rl_status_t rl_apikey_hash_with(rl_hmac_t *hasher, const char *s, uint8_t out[RL_APIKEY_HASH_LEN]);

/* Writes the display prefix of s ("rl_live_AbCd") into out (cap >=
 * RL_APIKEY_DISPLAY_LEN + 1). */
void rl_apikey_display(const char *s, char *out, size_t cap);

#endif
