/* api_auth: who is calling the API, and the login flow.
 *
 * A request is authenticated by, in order:
 *   Authorization: Bearer rlop_...   an operator API token (keyed hash lookup)
 *   Authorization: Bearer <JWT>      a login session token
 *   Cookie: renlayer_session=<JWT>   the console's login cookie
 * A cookie-authenticated request with an unsafe method (POST, PUT, PATCH,
 * DELETE) must also carry the header `X-RenLayer-CSRF: 1`, which a browser
 * cannot send cross-site without a CORS preflight the API never grants.
 *
 * Login: POST /v1/auth/otp/request {email} sends a 6-digit code (SMTP via
 * libcurl when RENLAYER_SMTP_URL is set; written to the log in dev mode),
 * POST /v1/auth/otp/verify {email, code} returns the operator and sets the
 * cookie (HS256 JWT, httpOnly, SameSite=Strict, Secure unless dev mode),
 * POST /v1/auth/logout revokes the session, GET /v1/me describes the caller. */
#ifndef API_AUTH_H
#define API_AUTH_H

#include <stdbool.h>

#include "api.h"
#include "rl_http.h"

typedef enum {
    API_ROLE_NONE = 0,
    API_ROLE_VIEWER = 1,
    API_ROLE_ADMIN = 2,
    API_ROLE_OWNER = 3,
} api_role_t;

/* Parses "owner" / "admin" / "viewer"; API_ROLE_NONE for anything else. */
api_role_t api_role_parse(const char *s);

/* Authenticates req with a connection from the caller (borrowed) and fills
 * actor (tenant, operator, email, role, token id, client address, request
 * id). On failure it has answered 401 (no or bad credentials) or 403 (CSRF
 * header missing), or 503 when the database does not answer, and returns
 * false: the handler just returns. */
bool api_authenticate(api_t *api, rl_pg_t *pg, rl_http_request_t *req, api_actor_t *actor);

/* Route handlers; ctx is the api_t. */
void api_auth_otp_request(rl_http_request_t *req, void *ctx);
void api_auth_otp_verify(rl_http_request_t *req, void *ctx);
void api_auth_logout(rl_http_request_t *req, void *ctx);
void api_auth_me(rl_http_request_t *req, void *ctx);

/* Stops the login-mail sender (started on the first code request when
 * RENLAYER_SMTP_URL is set), giving queued mails up to 5 seconds. Call once
 * after the HTTP server stopped; nothing happens when it never started. */
void api_auth_shutdown(void);

#endif
