/* Gates: an agent's routes to upstreams, with sealed injected headers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_resources.h"
#include "api_validate.h"
#include "rl_crypto.h"
#include "rl_gate_secret.h"

#define MAX_GATE_HEADERS 32

/* The gate as the API shows it: header values never, only name and last 4. */
#define GATE_JSON                                                                             \
    "json_build_object('id', g.id, 'agent_id', g.agent_id, 'name', g.name, 'kind', g.kind, " \
    "'upstream_url', g.upstream_url, 'is_default', g.is_default, "                           \
    "'pinned_model', g.pinned_model, 'strategy', g.strategy, "                               \
    "'fallback_gate_ids', to_json(g.fallback_gate_ids), "                                    \
    "'request_defaults', g.request_defaults, 'session_settings', g.session_settings, "       \
    "'headers', COALESCE((SELECT json_agg(json_build_object('name', h.name, 'set', true, "   \
    "'last4', h.value_last4) ORDER BY lower(h.name)) FROM renlayer.gate_headers h "          \
    "WHERE h.tenant_id = g.tenant_id AND h.gate_id = g.id), '[]'::json), "                   \
    "'created_at', g.created_at, 'updated_at', g.updated_at)"

static const char *const kinds[] = {"openai", "anthropic", "mcp", "http", NULL};
static const char *const strategies[] = {"single", "fallback", "round-robin", NULL};

static bool valid_header_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("!#$%&'*+.^_`|~-", c)))
            return false;
    }
    return true;
}

static bool valid_header_value(const char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s < 0x20 && *s != '\t')
            return false;
    }
    return true;
}

static rl_status_t insert_header(api_t *api, rl_pg_t *pg, const api_actor_t *actor,
                                 const char *gate_id, const char *name, const char *value)
{
    uint8_t *sealed = NULL;
    size_t n = 0;
    rl_status_t st = rl_gate_secret_seal(api->secret_key, gate_id, name, value, &sealed, &n);
    if (st != RL_OK)
        return st;
    size_t hexcap = 2 * n + 3;
    char *hex = malloc(hexcap);
    if (hex == NULL) {
        free(sealed);
        return rl_error(RL_ERR_NOMEM, "header");
    }
    hex[0] = '\\', hex[1] = 'x';
    rl_hex_encode(sealed, n, hex + 2, hexcap - 2);
    free(sealed);
    size_t vlen = strlen(value);
    char last4[8];
    snprintf(last4, sizeof last4, "%s", vlen >= 8 ? value + vlen - 4 : "");
    char id[40];
    api_new_id(id);
    const char *p[] = {id, actor->tenant_id, gate_id, name, hex, last4};
    PGresult *r = NULL;
    st = rl_pg_query(pg,
                     "INSERT INTO renlayer.gate_headers (id, tenant_id, gate_id, name, "
                     "value_ciphertext, value_last4) VALUES ($1, $2, $3, $4, $5::bytea, $6)",
                     6, p, &r);
    PQclear(r);
    free(hex);
    return st;
}

rl_status_t api_gate_create(api_t *api, rl_pg_t *pg, const api_actor_t *actor,
                            const char *agent_id, const json_t *input, json_t *field_errors,
                            json_t **out)
{
    const char *name, *kind, *url, *model, *strategy;
    json_t *defaults = NULL, *session = NULL, *headers = NULL;
    bool is_default = false, has_default;
    bool ok = api_field_str(input, "name", true, 200, field_errors, &name);
    ok = api_field_enum(input, "kind", true, kinds, field_errors, &kind) && ok;
    ok = api_field_url(input, "upstream_url", false, field_errors, &url) && ok;
    ok = api_field_bool(input, "is_default", field_errors, &is_default, &has_default) && ok;
    ok = api_field_str(input, "pinned_model", false, 200, field_errors, &model) && ok;
    ok = api_field_enum(input, "strategy", false, strategies, field_errors, &strategy) && ok;
    ok = api_field_object(input, "request_defaults", field_errors, &defaults) && ok;
    ok = api_field_object(input, "session_settings", field_errors, &session) && ok;
    ok = api_field_object(input, "headers", field_errors, &headers) && ok;
    json_t *fallbacks = json_object_get(input, "fallback_gate_ids");
    if (fallbacks && !json_is_null(fallbacks)) {
        bool good = json_is_array(fallbacks) && json_array_size(fallbacks) <= 16;
        size_t i;
        json_t *v;
        json_array_foreach(fallbacks, i, v) good = good && api_valid_uuid(json_string_value(v));
        if (!good) {
            api_field_error(field_errors, "fallback_gate_ids", "must be a list of up to 16 gate ids");
            ok = false;
        }
    }
    if (headers) {
        const char *k;
        json_t *v;
        if (json_object_size(headers) > MAX_GATE_HEADERS) {
            api_field_error(field_errors, "headers", "at most 32 headers");
            ok = false;
        }
        json_object_foreach(headers, k, v)
        {
            if (!valid_header_name(k) || !json_is_string(v) || !valid_header_value(json_string_value(v)) ||
                strlen(json_string_value(v)) > 8192) {
                char key[160];
                snprintf(key, sizeof key, "headers.%.128s", k);
                api_field_error(field_errors, key, "must be a valid header name with a string value");
                ok = false;
            }
        }
    }
    if (!ok)
        return rl_error(RL_ERR_INVALID, "invalid gate");

    char id[40];
    api_new_id(id);
    char *defaults_s = defaults ? json_dumps(defaults, JSON_COMPACT) : strdup("{}");
    char *session_s = session ? json_dumps(session, JSON_COMPACT) : strdup("{}");
    char *fb_s = json_is_array(fallbacks) ? json_dumps(fallbacks, JSON_COMPACT) : strdup("[]");
    json_t *gate = NULL;
    rl_status_t st = (defaults_s && session_s && fb_s) ? rl_pg_begin(pg)
                                                      : rl_error(RL_ERR_NOMEM, "gate");
    if (st == RL_OK) {
        const char *p[] = {id,    actor->tenant_id, agent_id,   name,        kind, url,
                           is_default ? "true" : "false", model, strategy ? strategy : "single",
                           fb_s,  defaults_s,      session_s};
        st = api_query_json(
            pg,
            "WITH ins AS (INSERT INTO renlayer.gates (id, tenant_id, agent_id, name, kind, "
            "upstream_url, is_default, pinned_model, strategy, fallback_gate_ids, "
            "request_defaults, session_settings) SELECT $1, $2, a.id, $4, $5, $6, $7::boolean, "
            "$8, $9, ARRAY(SELECT jsonb_array_elements_text($10::jsonb)::uuid), $11::jsonb, "
            "$12::jsonb FROM renlayer.agents a WHERE a.tenant_id = $2 AND a.id = $3 "
            "AND a.deleted_at IS NULL RETURNING id) SELECT to_json(id) FROM ins",
            12, p, &gate);
        json_decref(gate);
        gate = NULL;
        if (st == RL_ERR_CONFLICT)
            st = rl_error(RL_ERR_CONFLICT, "this agent has a gate named '%s' or a default gate already",
                          name);
    }
    if (st == RL_OK && headers) {
        const char *k;
        json_t *v;
        json_object_foreach(headers, k, v)
        {
            if (st == RL_OK)
                st = insert_header(api, pg, actor, id, k, json_string_value(v));
        }
    }
    if (st == RL_OK) {
        const char *p[] = {actor->tenant_id, id};
        st = api_query_json(pg,
                            "SELECT " GATE_JSON " FROM renlayer.gates g "
                            "WHERE g.tenant_id = $1 AND g.id = $2",
                            2, p, &gate);
    }
    if (st == RL_OK)
        st = api_audit(pg, actor, "gate.create", "gate", id, NULL, gate);
    if (st == RL_OK)
        st = rl_pg_commit(pg);
    if (st != RL_OK) {
        rl_pg_rollback(pg);
        json_decref(gate);
        gate = NULL;
    }
    free(defaults_s);
    free(session_s);
    free(fb_s);
    if (st == RL_OK)
        *out = gate;
    return st;
}
