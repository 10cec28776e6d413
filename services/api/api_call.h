/* api_call: the frame of every authenticated API handler — a database
 * connection from the pool, the authenticated caller, the role check — and
 * the mapping of statuses to HTTP errors, and keyset pagination.
 *
 *   api_call_t call;
 *   if (!api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
 *       return;                      // it has answered 401/403/503
 *   ... call.pg, call.actor ...
 *   api_call_end(&call);
 */
#ifndef API_CALL_H
#define API_CALL_H

#include <stdbool.h>

#include "api.h"
#include "api_auth.h"
#include "rl_http.h"

typedef struct {
    api_t *api;
    rl_http_request_t *req;
    rl_pg_t *pg;        /* borrowed from the pool until api_call_end */
    api_actor_t actor;
    api_role_t role;
} api_call_t;

/* Acquires a connection, authenticates and checks that the caller's role is
 * at least min_role. On failure it has answered (503, 401 or 403), released
 * everything and returns false. */
bool api_call_begin(void *ctx, rl_http_request_t *req, api_role_t min_role, api_call_t *call);

/* Releases the connection. */
void api_call_end(api_call_t *call);

/* Answers the error matching st: RL_ERR_INVALID → 400 validation_failed with
 * field_errors (borrowed; may be NULL or empty, then the rl_error message),
 * RL_ERR_NOT_FOUND → 404, RL_ERR_CONFLICT → 409, RL_ERR_TOO_LARGE → 413,
 * RL_ERR_UNAVAILABLE/RL_ERR_TIMEOUT → 503, anything else → 500 (logged). */
void api_respond_status(rl_http_request_t *req, rl_status_t st, json_t *field_errors);

/* Ends a mutation: with st RL_OK, commits and answers status with body
 * (borrowed; NULL sends no body), else — or when the commit fails — rolls
 * back and answers the error of st (field_errors borrowed, may be NULL). */
void api_call_finish(api_call_t *call, rl_status_t st, unsigned status, json_t *body,
                     json_t *field_errors);

/* Keyset pagination from ?limit= (1..200, default 50) and ?cursor=. */
typedef struct {
    int limit;
    char limit_plus_one[16]; /* text parameter for LIMIT */
    char after[40];          /* the id to continue after, "" for the first page */
} api_page_t;

/* Parses the query; on a bad value answers 400 and returns false. */
bool api_page_parse(rl_http_request_t *req, api_page_t *page);

/* Runs sql, whose rows are (id text, resource json text) ordered by id
 * descending and limited to page->limit + 1, and answers 200
 * {"data": [...], "next_cursor": ...}. Errors are answered too. */
void api_respond_page(rl_http_request_t *req, rl_pg_t *pg, const api_page_t *page,
                      const char *sql, int n, const char *const *params);

/* Answers 200 with the first column of sql's first row (JSON text), 404 when
 * there is no row, or the error. */
void api_respond_one(rl_http_request_t *req, rl_pg_t *pg, unsigned status, const char *sql, int n,
                     const char *const *params);

/* GET of a tenant's resources for a viewer and up: sql takes $1 the caller's
 * tenant, $2 the cursor id (NULL on the first page) and $3 the limit + 1,
 * and returns what api_respond_page wants. */
void api_list_for_tenant(rl_http_request_t *req, void *ctx, const char *sql);

/* GET of one resource by the path's {id} for a viewer and up: sql takes $1
 * the caller's tenant and $2 the id (api_respond_one). */
void api_get_for_tenant(rl_http_request_t *req, void *ctx, const char *sql);

/* DELETE of one resource by the path's {id} for an admin and up, in one
 * transaction: the row as it was (lock_sql: $1 the caller's tenant, $2 the
 * id, one JSON column, FOR UPDATE; 404 when there is none), delete_sql
 * (same parameters), one audit row (action, target_type). Answers 204. */
void api_delete_for_tenant(rl_http_request_t *req, void *ctx, const char *lock_sql,
                           const char *delete_sql, const char *action, const char *target_type);

/* The path parameter name as a UUID; answers 404 (an id that cannot exist)
 * and returns NULL otherwise. */
const char *api_path_uuid(rl_http_request_t *req, const char *name);

#endif
