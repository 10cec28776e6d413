#include "rl_gate_secret.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rl_crypto.h"

/* "renlayer/gate-header/v1:<gate id>:<lower-cased header name>" */
static size_t make_aad(const char *gate_id, const char *header_name, char *aad, size_t cap)
{
    int n = snprintf(aad, cap, "renlayer/gate-header/v1:%s:%s", gate_id, header_name);
    if (n < 0 || (size_t)n >= cap)
        return 0;
    size_t name_at = (size_t)n - strlen(header_name);
    for (size_t i = name_at; i < (size_t)n; i++)
        aad[i] = (char)tolower((unsigned char)aad[i]);
    return (size_t)n;
}

rl_status_t rl_gate_secret_seal(const uint8_t key[32], const char *gate_id,
                                const char *header_name, const char *value, uint8_t **out,
                                size_t *outlen)
{
    char aad[256];
    size_t aadlen = make_aad(gate_id, header_name, aad, sizeof aad);
    if (aadlen == 0)
        return rl_error(RL_ERR_INVALID, "gate id or header name too long");
    return rl_aead_seal(key, value, strlen(value), aad, aadlen, out, outlen);
}

rl_status_t rl_gate_secret_open(const uint8_t key[32], const char *gate_id,
                                const char *header_name, const uint8_t *sealed, size_t n,
                                char **out)
{
    char aad[256];
    size_t aadlen = make_aad(gate_id, header_name, aad, sizeof aad);
    if (aadlen == 0)
        return rl_error(RL_ERR_INVALID, "gate id or header name too long");
    uint8_t *plain = NULL;
    size_t plen = 0;
    rl_status_t st = rl_aead_open(key, sealed, n, aad, aadlen, &plain, &plen);
    if (st != RL_OK)
        return st;
    char *s = malloc(plen + 1);
    if (s == NULL) {
        free(plain);
        return rl_error(RL_ERR_NOMEM, "gate secret");
    }
    memcpy(s, plain, plen);
    s[plen] = '\0';
    free(plain);
    *out = s;
    return RL_OK;
}
