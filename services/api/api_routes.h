/* api_routes: the API's route table and every handler it names. Each
 * handler's ctx is the api_t. */
#ifndef API_ROUTES_H
#define API_ROUTES_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "rl_dlp.h"
#include "rl_http.h"
#include "rl_pg.h"

/* The route table (static storage) and its length. */
const rl_http_route_t *api_routes(size_t *n);

void api_openapi_get(rl_http_request_t *req, void *ctx);
void api_tenants_signup(rl_http_request_t *req, void *ctx);

void api_operators_list(rl_http_request_t *req, void *ctx);
void api_operators_create(rl_http_request_t *req, void *ctx);
void api_operators_patch(rl_http_request_t *req, void *ctx);
void api_operators_delete(rl_http_request_t *req, void *ctx);

void api_tokens_list(rl_http_request_t *req, void *ctx);
void api_tokens_create(rl_http_request_t *req, void *ctx);
void api_tokens_delete(rl_http_request_t *req, void *ctx);

void api_agents_list(rl_http_request_t *req, void *ctx);
void api_agents_create(rl_http_request_t *req, void *ctx);
void api_agents_get(rl_http_request_t *req, void *ctx);
void api_agents_patch(rl_http_request_t *req, void *ctx);
void api_agents_delete(rl_http_request_t *req, void *ctx);

void api_keys_list(rl_http_request_t *req, void *ctx);
void api_keys_create(rl_http_request_t *req, void *ctx);
void api_keys_delete(rl_http_request_t *req, void *ctx);
void api_keys_expire(rl_http_request_t *req, void *ctx);

void api_gates_list(rl_http_request_t *req, void *ctx);
void api_gates_create(rl_http_request_t *req, void *ctx);
void api_gates_get(rl_http_request_t *req, void *ctx);
void api_gates_patch(rl_http_request_t *req, void *ctx);
void api_gates_delete(rl_http_request_t *req, void *ctx);

void api_prices_list(rl_http_request_t *req, void *ctx);
void api_prices_put(rl_http_request_t *req, void *ctx);
void api_prices_delete(rl_http_request_t *req, void *ctx);

void api_policy_sets_list(rl_http_request_t *req, void *ctx);
void api_policy_sets_create(rl_http_request_t *req, void *ctx);
void api_policy_sets_get(rl_http_request_t *req, void *ctx);
void api_policy_sets_patch(rl_http_request_t *req, void *ctx);
void api_policy_sets_delete(rl_http_request_t *req, void *ctx);
void api_policy_sets_reorder(rl_http_request_t *req, void *ctx);

void api_policies_list(rl_http_request_t *req, void *ctx);
void api_policies_create(rl_http_request_t *req, void *ctx);
void api_policies_evaluate(rl_http_request_t *req, void *ctx);
void api_policies_get(rl_http_request_t *req, void *ctx);
void api_policies_patch(rl_http_request_t *req, void *ctx);
void api_policies_delete(rl_http_request_t *req, void *ctx);

void api_dlp_rules_list(rl_http_request_t *req, void *ctx);
void api_dlp_rules_create(rl_http_request_t *req, void *ctx);
void api_dlp_rules_get(rl_http_request_t *req, void *ctx);
void api_dlp_rules_patch(rl_http_request_t *req, void *ctx);
void api_dlp_rules_delete(rl_http_request_t *req, void *ctx);
void api_dlp_builtins_put(rl_http_request_t *req, void *ctx);
void api_dlp_builtins_delete(rl_http_request_t *req, void *ctx);
void api_dlp_scan(rl_http_request_t *req, void *ctx);

void api_audit_list(rl_http_request_t *req, void *ctx);

void api_traces_list(rl_http_request_t *req, void *ctx);
void api_traces_get(rl_http_request_t *req, void *ctx);
void api_stats_overview(rl_http_request_t *req, void *ctx);

/* The ?from= and ?to= of the trace and stats routes (api_traces.c). Each,
 * when present and not empty, must be an ISO 8601 timestamp naming a real
 * instant (a calendar day, hours < 24, offset within ±15:59), so that
 * PostgreSQL accepts it; one without an offset is UTC. Writes the value to
 * hand to PostgreSQL into from/to ("" when absent) and records a message per
 * bad field in errors (borrowed). Returns true when both are fine. */
bool api_trace_window_parse(rl_http_request_t *req, json_t *errors, char from[64], char to[64]);

/* The DLP engine the proxy would run for tenant_id (api_dlp.c): every
 * built-in with the tenant's dlp_builtin_overrides applied, plus its enabled
 * dlp_rules (a row the engine refuses is skipped, as a loader must). Reads
 * through pg (borrowed; inside or outside a transaction). Returns owned *out
 * (release with rl_dlp_engine_release); on error *out is untouched and the
 * status is rl_pg_query's or rl_dlp_engine_create's. */
rl_status_t api_dlp_engine_for_tenant(rl_pg_t *pg, const char *tenant_id, rl_dlp_engine_t **out);

#endif
