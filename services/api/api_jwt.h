/* api_jwt: the login session token, a compact JWS (RFC 7515/7519) signed
 * with HMAC-SHA-256 ("HS256") under the API's 32-byte JWT key.
 *
 * Only one shape is ever issued and only that shape is accepted: the header
 * is exactly {"alg":"HS256","typ":"JWT"} (so "none", RS256 and friends are
 * refused whatever their signature), three base64url segments without
 * padding, at most API_JWT_MAX_LEN bytes, a 32-byte signature compared in
 * constant time before the claims are parsed, and every claim below present
 * and well typed. The token proves who signed it; whether the session is
 * still alive (not revoked, operator not disabled) is the caller's database
 * lookup of the jti. Thread-safe: no state. */
#ifndef API_JWT_H
#define API_JWT_H

#include <stdint.h>
#include <stddef.h>

#include "rl_status.h"

/* Longest token accepted (and produced), in bytes. */
#define API_JWT_MAX_LEN 4096
/* Buffer size that holds any token api_jwt_sign writes, NUL included. */
#define API_JWT_SIZE (API_JWT_MAX_LEN + 1)
/* Clock skew tolerated on nbf (between API replicas), in seconds. */
#define API_JWT_LEEWAY_S 30

/* The claims of a session token. */
typedef struct {
    char sub[40]; /* operator id (UUID) */
    char tid[40]; /* tenant id (UUID) */
    char role[8]; /* owner, admin, viewer: at issue time, informational */
    char jti[40]; /* session id (UUIDv7): the operator_sessions row */
    int64_t iat;  /* issued at, Unix seconds */
    int64_t exp;  /* expires at, Unix seconds */
} api_jwt_claims_t;

/* Writes the signed token for claims (sub, tid, jti must be UUIDs, role one
 * of owner/admin/viewer, exp > iat) and a NUL into out, which holds cap
 * bytes (API_JWT_SIZE always suffices). RL_ERR_INVALID for bad claims,
 * RL_ERR_TOO_LARGE when cap is short, RL_ERR_CRYPTO, RL_ERR_NOMEM; out is
 * then unspecified. */
rl_status_t api_jwt_sign(const uint8_t key[32], const api_jwt_claims_t *claims, char *out,
                         size_t cap);

/* Verifies token (NUL-terminated) at Unix time now and fills *out with its
 * claims. Errors, *out untouched:
 *   RL_ERR_TOO_LARGE  longer than API_JWT_MAX_LEN;
 *   RL_ERR_INVALID    not three base64url segments, a header other than
 *                     HS256/JWT, claims missing, mistyped or malformed;
 *   RL_ERR_CRYPTO     the signature does not match (any byte tampered);
 *   RL_ERR_TIMEOUT    expired (exp <= now) or not yet valid
 *                     (nbf > now + API_JWT_LEEWAY_S). */
rl_status_t api_jwt_verify(const uint8_t key[32], const char *token, int64_t now,
                           api_jwt_claims_t *out);

#endif
