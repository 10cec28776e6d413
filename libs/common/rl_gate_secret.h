/* rl_gate_secret: sealing of a gate's injected upstream header values
 * (provider API keys) at rest. The api seals on write; the proxy opens in
 * memory when it loads the gate. AES-256-GCM under RENLAYER_SECRET_KEY, bound
 * to the gate id and the lower-cased header name, so a sealed value copied to
 * another gate or header does not open. */
#ifndef RL_GATE_SECRET_H
#define RL_GATE_SECRET_H

#include <stddef.h>
#include <stdint.h>

#include "rl_status.h"

/* Seals value for (gate_id, header_name). *out is owned (free()).
 * Errors as rl_aead_seal. */
rl_status_t rl_gate_secret_seal(const uint8_t key[32], const char *gate_id,
                                const char *header_name, const char *value, uint8_t **out,
                                size_t *outlen);

/* Opens a sealed value into an owned NUL-terminated string *out (free()).
 * RL_ERR_CRYPTO when the value was sealed for another gate or header, under
 * another key, or altered. */
rl_status_t rl_gate_secret_open(const uint8_t key[32], const char *gate_id,
                                const char *header_name, const uint8_t *sealed, size_t n,
                                char **out);

#endif
