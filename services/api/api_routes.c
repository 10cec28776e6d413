#include "api_routes.h"

#include "api_auth.h"

/* Every route of the API. tests/integration/api_*.test.mjs check that each
 * one is in services/api/openapi.json and enforces tenant isolation and RBAC. */
static const rl_http_route_t routes[] = {
    {"GET", "/v1/openapi.json", api_openapi_get},

    {"POST", "/v1/auth/otp/request", api_auth_otp_request},
    {"POST", "/v1/auth/otp/verify", api_auth_otp_verify},
    {"POST", "/v1/auth/logout", api_auth_logout},
    {"GET", "/v1/me", api_auth_me},

    {"POST", "/v1/tenants", api_tenants_signup},

    {"GET", "/v1/operator-tokens", api_tokens_list},
    {"POST", "/v1/operator-tokens", api_tokens_create},
    {"DELETE", "/v1/operator-tokens/{id}", api_tokens_delete},

    {"GET", "/v1/operators", api_operators_list},
    {"POST", "/v1/operators", api_operators_create},
    {"PATCH", "/v1/operators/{id}", api_operators_patch},
    {"DELETE", "/v1/operators/{id}", api_operators_delete},

    {"GET", "/v1/agents", api_agents_list},
    {"POST", "/v1/agents", api_agents_create},
    {"GET", "/v1/agents/{id}", api_agents_get},
    {"PATCH", "/v1/agents/{id}", api_agents_patch},
    {"DELETE", "/v1/agents/{id}", api_agents_delete},

    {"GET", "/v1/agents/{id}/keys", api_keys_list},
    {"POST", "/v1/agents/{id}/keys", api_keys_create},
    {"DELETE", "/v1/agents/{id}/keys/{key_id}", api_keys_delete},
    {"POST", "/v1/agents/{id}/keys/{key_id}/expire", api_keys_expire},

    {"GET", "/v1/agents/{id}/gates", api_gates_list},
    {"POST", "/v1/agents/{id}/gates", api_gates_create},
    {"GET", "/v1/agents/{id}/gates/{gate_id}", api_gates_get},
    {"PATCH", "/v1/agents/{id}/gates/{gate_id}", api_gates_patch},
    {"DELETE", "/v1/agents/{id}/gates/{gate_id}", api_gates_delete},

    {"GET", "/v1/prices", api_prices_list},
    {"PUT", "/v1/prices/{model}", api_prices_put},
    {"DELETE", "/v1/prices/{model}", api_prices_delete},

    {"GET", "/v1/policy-sets", api_policy_sets_list},
    {"POST", "/v1/policy-sets", api_policy_sets_create},
    {"GET", "/v1/policy-sets/{id}", api_policy_sets_get},
    {"PATCH", "/v1/policy-sets/{id}", api_policy_sets_patch},
    {"DELETE", "/v1/policy-sets/{id}", api_policy_sets_delete},
    {"POST", "/v1/policy-sets/{id}/reorder", api_policy_sets_reorder},

    {"GET", "/v1/policies", api_policies_list},
    {"POST", "/v1/policies", api_policies_create},
    {"POST", "/v1/policies/evaluate", api_policies_evaluate}, /* before {id} */
    {"GET", "/v1/policies/{id}", api_policies_get},
    {"PATCH", "/v1/policies/{id}", api_policies_patch},
    {"DELETE", "/v1/policies/{id}", api_policies_delete},

    {"GET", "/v1/dlp/rules", api_dlp_rules_list},
    {"POST", "/v1/dlp/rules", api_dlp_rules_create},
    {"GET", "/v1/dlp/rules/{id}", api_dlp_rules_get},
    {"PATCH", "/v1/dlp/rules/{id}", api_dlp_rules_patch},
    {"DELETE", "/v1/dlp/rules/{id}", api_dlp_rules_delete},
    {"PUT", "/v1/dlp/builtins/{detector}", api_dlp_builtins_put},
    {"DELETE", "/v1/dlp/builtins/{detector}", api_dlp_builtins_delete},
    {"POST", "/v1/dlp/scan", api_dlp_scan},

    {"GET", "/v1/audit", api_audit_list},

    {"GET", "/v1/traces", api_traces_list},
    {"GET", "/v1/traces/{id}", api_traces_get},
    {"GET", "/v1/stats/overview", api_stats_overview},
};

const rl_http_route_t *api_routes(size_t *n)
{
    *n = sizeof routes / sizeof routes[0];
    return routes;
}
