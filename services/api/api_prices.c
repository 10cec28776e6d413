/* Model prices: the shared list prices, and each tenant's own overrides.
 * An operator changes only their tenant's prices, never another's. */
#include <stdio.h>
#include <string.h>

#include "api_call.h"
#include "api_routes.h"
#include "api_validate.h"
#include "api_views.h"

/* The effective prices of tenant $1: its overrides, then the list prices. */
#define EFFECTIVE_PRICES                                                                      \
    "SELECT model, provider, input_per_mtok, output_per_mtok, cached_input_per_mtok, "       \
    "cache_write_per_mtok, updated_at, 'tenant' AS source FROM renlayer.tenant_model_prices " \
    "WHERE tenant_id = $1 UNION ALL SELECT l.model, l.provider, l.input_per_mtok, "          \
    "l.output_per_mtok, l.cached_input_per_mtok, l.cache_write_per_mtok, l.updated_at, "     \
    "'list' FROM renlayer.model_prices l WHERE NOT EXISTS (SELECT 1 FROM "                   \
    "renlayer.tenant_model_prices o WHERE o.tenant_id = $1 AND o.model = l.model)"

void api_prices_list(rl_http_request_t *req, void *ctx)
{
    api_call_t call;
    if (!api_call_begin(ctx, req, API_ROLE_VIEWER, &call))
        return;
    const char *p[] = {call.actor.tenant_id};
    api_respond_one(req, call.pg, 200,
                    "SELECT json_build_object('data', COALESCE(json_agg(" API_PRICE_JSON
                    " ORDER BY p.provider, p.model), '[]'::json)) FROM (" EFFECTIVE_PRICES ") p",
                    1, p);
    api_call_end(&call);
}

static bool valid_model_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 200)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || !strchr("._:/@-", c)))
            return false;
    }
    return true;
}

/* Reads a price field: absent, or a number of USD per million tokens >= 0. */
static bool price_field(const json_t *body, const char *key, bool required, json_t *errors,
                        char *out, size_t cap, bool *present)
{
    json_t *v = json_object_get(body, key);
    *present = v && !json_is_null(v);
    if (!*present) {
        if (required)
            api_field_error(errors, key, "is required");
        return !required;
    }
    if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1e6) {
        api_field_error(errors, key, "must be a number of USD per million tokens, >= 0");
        *present = false;
        return false;
    }
    snprintf(out, cap, "%.6f", json_number_value(v));
    return true;
}

/* Sets the tenant's own price of a model (an override of the list price). */
void api_prices_put(rl_http_request_t *req, void *ctx)
{
    const char *model = rl_http_param(req, "model");
    json_t *body = rl_http_json_body(req);
    api_call_t call;
    if (body == NULL || !api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
        return;
    json_t *errors = json_object(), *before = NULL, *after = NULL;
    char in[32], out[32], cached[32], write[32];
    bool has_in, has_out, has_cached, has_write;
    const char *provider;
    bool ok = valid_model_name(model);
    if (!ok)
        api_field_error(errors, "model", "must be 1..200 letters, digits and ._:/@- characters");
    ok = price_field(body, "input_per_mtok", true, errors, in, sizeof in, &has_in) && ok;
    ok = price_field(body, "output_per_mtok", true, errors, out, sizeof out, &has_out) && ok;
    ok = price_field(body, "cached_input_per_mtok", false, errors, cached, sizeof cached,
                     &has_cached) && ok;
    ok = price_field(body, "cache_write_per_mtok", false, errors, write, sizeof write,
                     &has_write) && ok;
    ok = api_field_str(body, "provider", false, 32, errors, &provider) && ok;
    const char *p[] = {call.actor.tenant_id, model, provider, in, out,
                       has_cached ? cached : NULL, has_write ? write : NULL};
    rl_status_t st = ok ? rl_pg_begin(call.pg) : rl_error(RL_ERR_INVALID, "price");
    if (st == RL_OK) {
        st = api_query_json(call.pg,
                            "SELECT " API_PRICE_JSON " FROM (" EFFECTIVE_PRICES ") p "
                            "WHERE p.model = $2",
                            2, p, &before);
        if (st == RL_ERR_NOT_FOUND)
            st = RL_OK;
    }
    if (st == RL_OK) {
        st = api_query_json(
            call.pg,
            "WITH up AS (INSERT INTO renlayer.tenant_model_prices AS t (tenant_id, model, "
            "provider, input_per_mtok, output_per_mtok, cached_input_per_mtok, "
            "cache_write_per_mtok) VALUES ($1, $2, COALESCE($3, (SELECT provider FROM "
            "renlayer.model_prices WHERE model = $2), CASE WHEN $2 LIKE 'claude%' THEN "
            "'anthropic' ELSE 'openai' END), $4::numeric, $5::numeric, $6::numeric, $7::numeric) "
            "ON CONFLICT (tenant_id, model) DO UPDATE SET provider = COALESCE($3, t.provider), "
            "input_per_mtok = EXCLUDED.input_per_mtok, output_per_mtok = EXCLUDED.output_per_mtok, "
            "cached_input_per_mtok = EXCLUDED.cached_input_per_mtok, "
            "cache_write_per_mtok = EXCLUDED.cache_write_per_mtok RETURNING *) "
            "SELECT " API_PRICE_JSON " FROM (SELECT up.*, 'tenant' AS source FROM up) p",
            7, p, &after);
        if (st == RL_ERR_INVALID)
            api_field_error(errors, "provider", "must be lower-case letters, digits and -");
    }
    if (st == RL_OK)
        st = api_audit(call.pg, &call.actor, "model_price.set", "model_price", model, before,
                       after);
    api_call_finish(&call, st, 200, after, errors);
    json_decref(before);
    json_decref(after);
    json_decref(errors);
    api_call_end(&call);
}

/* Removes the tenant's own price of a model: the list price applies again. */
void api_prices_delete(rl_http_request_t *req, void *ctx)
{
    const char *model = rl_http_param(req, "model");
    api_call_t call;
    if (!api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
        return;
    json_t *before = NULL;
    const char *p[] = {call.actor.tenant_id, model};
    rl_status_t st = rl_pg_begin(call.pg);
    if (st == RL_OK)
        st = api_query_json(call.pg,
                            "WITH d AS (DELETE FROM renlayer.tenant_model_prices WHERE "
                            "tenant_id = $1 AND model = $2 RETURNING *) SELECT " API_PRICE_JSON
                            " FROM (SELECT d.*, 'tenant' AS source FROM d) p",
                            2, p, &before);
    if (st == RL_OK)
        st = api_audit(call.pg, &call.actor, "model_price.reset", "model_price", model, before,
                       NULL);
    api_call_finish(&call, st, 204, NULL, NULL);
    json_decref(before);
    api_call_end(&call);
}
