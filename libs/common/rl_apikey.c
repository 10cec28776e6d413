#include "rl_apikey.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define SECRET_BYTES RL_TOKEN_DEFAULT_BYTES

static const char *prefix_of(rl_apikey_kind_t kind)
{
    return kind == RL_APIKEY_AGENT ? RL_APIKEY_AGENT_PREFIX : RL_APIKEY_OPERATOR_PREFIX;
}

void rl_apikey_derive_hash_key(const uint8_t secret_key[32], uint8_t hash_key[32])
{
    static const char label[] = "renlayer/apikey-hash/v1";
    rl_hmac_sha256(secret_key, 32, label, sizeof label - 1, hash_key);
}

rl_status_t rl_apikey_generate(rl_apikey_kind_t kind, char *out, size_t cap)
{
    return rl_token_generate(prefix_of(kind), SECRET_BYTES, out, cap);
}

bool rl_apikey_well_formed(rl_apikey_kind_t kind, const char *s)
{
    const char *prefix = prefix_of(kind);
    size_t plen = strlen(prefix);
    if (s == NULL || strncmp(s, prefix, plen) != 0)
        return false;
    const char *body = s + plen;
    size_t n = strlen(body);
    static _Atomic size_t body_len; /* computed once: a big-number digit count */
    size_t want = atomic_load_explicit(&body_len, memory_order_relaxed);
    if (want == 0) {
        want = rl_token_body_len(SECRET_BYTES);
        atomic_store_explicit(&body_len, want, memory_order_relaxed);
    }
    if (n != want)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = body[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
            return false;
    }
    return true;
}

rl_status_t rl_apikey_hash(const uint8_t hash_key[32], const char *s,
                           uint8_t out[RL_APIKEY_HASH_LEN])
{
    return rl_hmac_sha256(hash_key, 32, s, strlen(s), out);
}

rl_status_t rl_apikey_hash_with(rl_hmac_t *hasher, const char *s, uint8_t out[RL_APIKEY_HASH_LEN])
{
    return rl_hmac_compute(hasher, s, strlen(s), out);
}

void rl_apikey_display(const char *s, char *out, size_t cap)
{
    snprintf(out, cap, "%.*s", RL_APIKEY_DISPLAY_LEN, s);
}
