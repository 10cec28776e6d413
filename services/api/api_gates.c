/* Gates: an agent's routes to upstreams, with sealed injected headers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_resources.h"
#include "api_views.h"
#include "api_validate.h"
#include "rl_crypto.h"
#include "rl_gate_secret.h"
#include "rl_json.h"

#define MAX_GATE_HEADERS 32

/* The gate as the API shows it: header values never, only name and last 4. */
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

/* Validates a gate body; create requires name and kind, a patch nothing.
 * Unknown fields are errors, so a typo is not silently ignored. */
static bool valid_gate(const json_t *input, bool create, json_t *errors)
{
    const char *s;
    json_t *obj;
    bool b, has;
    bool ok = true;
    if (create || json_object_get(input, "name"))
        ok = api_field_str(input, "name", true, 200, errors, &s) && ok;
    if (create || json_object_get(input, "kind"))
        ok = api_field_enum(input, "kind", true, kinds, errors, &s) && ok;
    ok = api_field_url(input, "upstream_url", false, errors, &s) && ok;
    ok = api_field_bool(input, "is_default", errors, &b, &has) && ok;
    ok = api_field_str(input, "pinned_model", false, 200, errors, &s) && ok;
    if (json_object_get(input, "strategy"))
        ok = api_field_enum(input, "strategy", true, strategies, errors, &s) && ok;
    ok = api_field_object(input, "request_defaults", errors, &obj) && ok;
    ok = api_field_object(input, "session_settings", errors, &obj) && ok;
    ok = api_field_object(input, "headers", errors, &obj) && ok;
    json_t *fallbacks = json_object_get(input, "fallback_gate_ids");
    if (fallbacks && !json_is_null(fallbacks)) {
        bool good = json_is_array(fallbacks) && json_array_size(fallbacks) <= 16;
        size_t i;
        json_t *v;
        json_array_foreach(fallbacks, i, v) good = good && api_valid_uuid(json_string_value(v));
        if (!good) {
            api_field_error(errors, "fallback_gate_ids", "must be a list of up to 16 gate ids");
            ok = false;
        }
    }
    if (obj && json_object_get(input, "headers") == obj) {
        const char *k;
        json_t *v;
        if (json_object_size(obj) > MAX_GATE_HEADERS) {
            api_field_error(errors, "headers", "at most 32 headers");
            ok = false;
        }
        json_object_foreach(obj, k, v)
        {
            bool removal = !create && json_is_null(v);
            if (!valid_header_name(k) ||
                (!removal && (!json_is_string(v) || !valid_header_value(json_string_value(v)) ||
                              strlen(json_string_value(v)) > 8192))) {
                char key[160];
                snprintf(key, sizeof key, "headers.%.128s", k);
                api_field_error(errors, key, "must be a header name with a string value");
                ok = false;
            }
        }
    }
    static const char *const known[] = {"name", "kind", "upstream_url", "is_default",
                                        "pinned_model", "strategy", "fallback_gate_ids",
                                        "request_defaults", "session_settings", "headers", NULL};
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)input, k, v)
    {
        bool found = false;
        for (size_t i = 0; known[i]; i++)
            found = found || strcmp(k, known[i]) == 0;
        if (!found) {
            api_field_error(errors, k, "is not a field of a gate");
            ok = false;
        }
    }
    return ok;
}

/* Writes the headers of a body: a value seals and upserts, null removes. */
static rl_status_t apply_headers(api_t *api, rl_pg_t *pg, const api_actor_t *actor,
                                 const char *gate_id, const json_t *headers)
{
    const char *k;
    json_t *v;
    rl_status_t st = RL_OK;
    json_object_foreach((json_t *)headers, k, v)
    {
        const char *p[] = {actor->tenant_id, gate_id, k};
        PGresult *r = NULL;
        st = rl_pg_query(pg,
                         "DELETE FROM renlayer.gate_headers WHERE tenant_id = $1 AND gate_id = $2 "
                         "AND lower(name) = lower($3)",
                         3, p, &r);
        PQclear(r);
        if (st == RL_OK && json_is_string(v))
            st = insert_header(api, pg, actor, gate_id, k, json_string_value(v));
        if (st != RL_OK)
            break;
    }
    return st;
}

/* Checks the fallback chain names other gates of the same agent, and makes
 * this gate the agent's only default when asked. */
static rl_status_t check_links(rl_pg_t *pg, const api_actor_t *actor, const char *agent_id,
                               const char *gate_id, const json_t *input, json_t *errors)
{
    json_t *fallbacks = json_object_get(input, "fallback_gate_ids");
    rl_status_t st = RL_OK;
    if (json_is_array(fallbacks) && json_array_size(fallbacks) > 0) {
        char *ids = json_dumps(fallbacks, JSON_COMPACT);
        const char *p[] = {actor->tenant_id, agent_id, gate_id, ids};
        json_t *ok = NULL;
        st = api_query_json(pg,
                            "SELECT to_json(count(*) = jsonb_array_length($4::jsonb)) FROM "
                            "renlayer.gates WHERE tenant_id = $1 AND agent_id = $2 AND id <> $3 "
                            "AND id IN (SELECT jsonb_array_elements_text($4::jsonb)::uuid)",
                            4, p, &ok);
        if (st == RL_OK && !json_is_true(ok)) {
            api_field_error(errors, "fallback_gate_ids", "must name other gates of this agent");
            st = rl_error(RL_ERR_INVALID, "fallback gates");
        }
        json_decref(ok);
        free(ids);
    }
    if (st == RL_OK && json_is_true(json_object_get(input, "is_default"))) {
        const char *p[] = {actor->tenant_id, agent_id, gate_id};
        PGresult *r = NULL;
        st = rl_pg_query(pg,
                         "UPDATE renlayer.gates SET is_default = false WHERE tenant_id = $1 "
                         "AND agent_id = $2 AND id <> $3 AND is_default",
                         3, p, &r);
        PQclear(r);
    }
    return st;
}

static const char *const gate_by_id = "SELECT " API_GATE_JSON " FROM renlayer.gates g "
                                      "WHERE g.tenant_id = $1 AND g.agent_id = $2 AND g.id = $3";

rl_status_t api_gate_create(api_t *api, rl_pg_t *pg, const api_actor_t *actor,
                            const char *agent_id, const json_t *input, json_t *field_errors,
                            json_t **out)
{
    if (!valid_gate(input, true, field_errors))
        return rl_error(RL_ERR_INVALID, "invalid gate");
    char id[40];
    api_new_id(id);
    json_t *fallbacks = json_object_get(input, "fallback_gate_ids");
    json_t *defaults = json_object_get(input, "request_defaults");
    json_t *session = json_object_get(input, "session_settings");
    char *defaults_s = json_is_object(defaults) ? json_dumps(defaults, JSON_COMPACT) : strdup("{}");
    char *session_s = json_is_object(session) ? json_dumps(session, JSON_COMPACT) : strdup("{}");
    char *fb_s = json_is_array(fallbacks) ? json_dumps(fallbacks, JSON_COMPACT) : strdup("[]");
    const char *strategy = rl_json_str_or(input, "strategy", "single");
    json_t *gate = NULL;
    rl_status_t st = (defaults_s && session_s && fb_s) ? rl_pg_begin(pg)
                                                      : rl_error(RL_ERR_NOMEM, "gate");
    if (st == RL_OK) {
        const char *p[] = {actor->tenant_id, agent_id};
        st = api_query_json(pg,
                            "SELECT to_json(a.id) FROM renlayer.agents a WHERE a.tenant_id = $1 "
                            "AND a.id = $2 AND a.deleted_at IS NULL FOR UPDATE",
                            2, p, &gate);
        json_decref(gate);
        gate = NULL;
    }
    if (st == RL_OK)
        st = check_links(pg, actor, agent_id, id, input, field_errors);
    if (st == RL_OK) {
        const char *p[] = {id,
                           actor->tenant_id,
                           agent_id,
                           rl_json_str_or(input, "name", NULL),
                           rl_json_str_or(input, "kind", NULL),
                           rl_json_str_or(input, "upstream_url", NULL),
                           json_is_true(json_object_get(input, "is_default")) ? "true" : "false",
                           rl_json_str_or(input, "pinned_model", NULL),
                           strategy,
                           fb_s,
                           defaults_s,
                           session_s};
        PGresult *r = NULL;
        st = rl_pg_query(
            pg,
            "INSERT INTO renlayer.gates (id, tenant_id, agent_id, name, kind, upstream_url, "
            "is_default, pinned_model, strategy, fallback_gate_ids, request_defaults, "
            "session_settings) VALUES ($1, $2, $3, $4, $5, $6, $7::boolean, $8, $9, "
            "ARRAY(SELECT jsonb_array_elements_text($10::jsonb)::uuid), $11::jsonb, $12::jsonb)",
            12, p, &r);
        PQclear(r);
        if (st == RL_ERR_CONFLICT)
            st = rl_error(RL_ERR_CONFLICT, "this agent has a gate with that name already");
    }
    json_t *headers = json_object_get(input, "headers");
    if (st == RL_OK && json_is_object(headers))
        st = apply_headers(api, pg, actor, id, headers);
    if (st == RL_OK) {
        const char *p[] = {actor->tenant_id, agent_id, id};
        st = api_query_json(pg, gate_by_id, 3, p, &gate);
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

/* ---- routes ------------------------------------------------------------------------------ */

#include "api_call.h"
#include "api_routes.h"

/* The agent of the path must be the caller tenant's: 404 otherwise. */
static bool agent_exists(api_call_t *call, const char *agent_id)
{
    const char *p[] = {call->actor.tenant_id, agent_id};
    json_t *v = NULL;
    rl_status_t st = api_query_json(call->pg,
                                    "SELECT to_json(id) FROM renlayer.agents WHERE tenant_id = $1 "
                                    "AND id = $2 AND deleted_at IS NULL",
                                    2, p, &v);
    json_decref(v);
    if (st != RL_OK)
        api_respond_status(call->req, st, NULL);
    return st == RL_OK;
}

void api_gates_list(rl_http_request_t *req, void *ctx)
{
    const char *agent = api_path_uuid(req, "id");
    api_page_t page;
    api_call_t call;
    if (agent == NULL || !api_page_parse(req, &page) ||
        !api_call_begin(ctx, req, API_ROLE_VIEWER, &call))
        return;
    if (agent_exists(&call, agent)) {
        const char *p[] = {call.actor.tenant_id, agent, page.after[0] ? page.after : NULL,
                           page.limit_plus_one};
        api_respond_page(req, call.pg, &page,
                         "SELECT g.id::text, " API_GATE_JSON " FROM renlayer.gates g "
                         "WHERE g.tenant_id = $1 AND g.agent_id = $2 "
                         "AND ($3::uuid IS NULL OR g.id < $3::uuid) ORDER BY g.id DESC LIMIT $4",
                         4, p);
    }
    api_call_end(&call);
}

void api_gates_create(rl_http_request_t *req, void *ctx)
{
    const char *agent = api_path_uuid(req, "id");
    json_t *body = agent ? rl_http_json_body(req) : NULL;
    api_call_t call;
    if (body == NULL || !api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
        return;
    json_t *errors = json_object(), *out = NULL;
    rl_status_t st = api_gate_create(call.api, call.pg, &call.actor, agent, body, errors, &out);
    if (st == RL_OK)
        rl_http_respond_json(req, 201, out);
    else
        api_respond_status(req, st, errors);
    json_decref(errors);
    api_call_end(&call);
}

void api_gates_get(rl_http_request_t *req, void *ctx)
{
    const char *agent = api_path_uuid(req, "id");
    const char *gate = agent ? api_path_uuid(req, "gate_id") : NULL;
    api_call_t call;
    if (gate == NULL || !api_call_begin(ctx, req, API_ROLE_VIEWER, &call))
        return;
    const char *p[] = {call.actor.tenant_id, agent, gate};
    api_respond_one(req, call.pg, 200, gate_by_id, 3, p);
    api_call_end(&call);
}

void api_gates_patch(rl_http_request_t *req, void *ctx)
{
    const char *agent = api_path_uuid(req, "id");
    const char *gate = agent ? api_path_uuid(req, "gate_id") : NULL;
    json_t *body = gate ? rl_http_json_body(req) : NULL;
    api_call_t call;
    if (body == NULL || !api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
        return;
    json_t *errors = json_object(), *before = NULL, *after = NULL;
    char *patch = json_dumps(body, JSON_COMPACT);
    const char *p[] = {call.actor.tenant_id, agent, gate, patch};
    rl_status_t st = valid_gate(body, false, errors) ? rl_pg_begin(call.pg)
                                                     : rl_error(RL_ERR_INVALID, "gate");
    if (st == RL_OK)
        st = api_query_json(call.pg,
                            "SELECT " API_GATE_JSON " FROM renlayer.gates g WHERE g.tenant_id = $1 "
                            "AND g.agent_id = $2 AND g.id = $3 FOR UPDATE",
                            3, p, &before);
    if (st == RL_OK)
        st = check_links(call.pg, &call.actor, agent, gate, body, errors);
    if (st == RL_OK) {
        PGresult *r = NULL;
        st = rl_pg_query(
            call.pg,
            "UPDATE renlayer.gates g SET "
            "name = COALESCE($4::jsonb->>'name', g.name), "
            "kind = COALESCE($4::jsonb->>'kind', g.kind), "
            "upstream_url = CASE WHEN $4::jsonb ? 'upstream_url' THEN $4::jsonb->>'upstream_url' "
            "  ELSE g.upstream_url END, "
            "is_default = COALESCE(($4::jsonb->>'is_default')::boolean, g.is_default), "
            "pinned_model = CASE WHEN $4::jsonb ? 'pinned_model' THEN $4::jsonb->>'pinned_model' "
            "  ELSE g.pinned_model END, "
            "strategy = COALESCE($4::jsonb->>'strategy', g.strategy), "
            "fallback_gate_ids = CASE WHEN $4::jsonb ? 'fallback_gate_ids' THEN ARRAY(SELECT "
            "  jsonb_array_elements_text(COALESCE($4::jsonb->'fallback_gate_ids', '[]'))::uuid) "
            "  ELSE g.fallback_gate_ids END, "
            "request_defaults = CASE WHEN $4::jsonb ? 'request_defaults' THEN "
            "  COALESCE($4::jsonb->'request_defaults', '{}') ELSE g.request_defaults END, "
            "session_settings = CASE WHEN $4::jsonb ? 'session_settings' THEN "
            "  COALESCE($4::jsonb->'session_settings', '{}') ELSE g.session_settings END "
            "WHERE g.tenant_id = $1 AND g.agent_id = $2 AND g.id = $3",
            4, p, &r);
        PQclear(r);
        if (st == RL_ERR_CONFLICT)
            st = rl_error(RL_ERR_CONFLICT, "this agent has a gate with that name already");
    }
    json_t *headers = json_object_get(body, "headers");
    if (st == RL_OK && json_is_object(headers))
        st = apply_headers(call.api, call.pg, &call.actor, gate, headers);
    if (st == RL_OK)
        st = api_query_json(call.pg, gate_by_id, 3, p, &after);
    if (st == RL_OK)
        st = api_audit(call.pg, &call.actor, "gate.update", "gate", gate, before, after);
    api_call_finish(&call, st, 200, after, errors);
    free(patch);
    json_decref(before);
    json_decref(after);
    json_decref(errors);
    api_call_end(&call);
}

void api_gates_delete(rl_http_request_t *req, void *ctx)
{
    const char *agent = api_path_uuid(req, "id");
    const char *gate = agent ? api_path_uuid(req, "gate_id") : NULL;
    api_call_t call;
    if (gate == NULL || !api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
        return;
    json_t *before = NULL;
    const char *p[] = {call.actor.tenant_id, agent, gate};
    PGresult *r = NULL;
    rl_status_t st = rl_pg_begin(call.pg);
    if (st == RL_OK)
        st = api_query_json(call.pg,
                            "SELECT " API_GATE_JSON " FROM renlayer.gates g WHERE g.tenant_id = $1 "
                            "AND g.agent_id = $2 AND g.id = $3 FOR UPDATE",
                            3, p, &before);
    /* other gates' fallback chains forget it */
    if (st == RL_OK)
        st = rl_pg_query(call.pg,
                         "UPDATE renlayer.gates SET fallback_gate_ids = "
                         "array_remove(fallback_gate_ids, $3::uuid) WHERE tenant_id = $1 "
                         "AND agent_id = $2 AND $3::uuid = ANY (fallback_gate_ids)",
                         3, p, &r);
    PQclear(r);
    r = NULL;
    if (st == RL_OK)
        st = rl_pg_query(call.pg,
                         "DELETE FROM renlayer.gates WHERE tenant_id = $1 AND agent_id = $2 "
                         "AND id = $3",
                         3, p, &r);
    PQclear(r);
    if (st == RL_OK)
        st = api_audit(call.pg, &call.actor, "gate.delete", "gate", gate, before, NULL);
    api_call_finish(&call, st, 204, NULL, NULL);
    json_decref(before);
    api_call_end(&call);
}
