/* Agents and their API keys. */
#include <stdio.h>
#include <string.h>

#include "api_resources.h"
#include "api_views.h"
#include "api_validate.h"
#include "rl_apikey.h"

rl_status_t api_key_create(api_t *api, rl_pg_t *pg, const api_actor_t *actor,
                           const char *agent_id, const json_t *input, bool in_tx,
                           json_t *field_errors, json_t **out)
{
    const char *name = NULL, *expires_at = NULL;
    bool ok = api_field_str(input, "name", false, 200, field_errors, &name);
    ok = api_field_timestamp(input, "expires_at", false, field_errors, &expires_at) && ok;
    if (!ok)
        return rl_error(RL_ERR_INVALID, "invalid key");

    char secret[RL_TOKEN_MAX_SIZE], prefix[32], id[40], hash_hex[2 * RL_APIKEY_HASH_LEN + 3];
    uint8_t hash[RL_APIKEY_HASH_LEN];
    rl_status_t st = rl_apikey_generate(RL_APIKEY_AGENT, secret, sizeof secret);
    if (st != RL_OK)
        return st;
    rl_apikey_hash(api->hash_key, secret, hash);
    hash_hex[0] = '\\', hash_hex[1] = 'x';
    rl_hex_encode(hash, sizeof hash, hash_hex + 2, sizeof hash_hex - 2);
    rl_apikey_display(secret, prefix, sizeof prefix);
    api_new_id(id);

    json_t *key = NULL;
    if (!in_tx)
        st = rl_pg_begin(pg);
    if (st == RL_OK) {
        const char *p[] = {id, actor->tenant_id, agent_id, name ? name : "", hash_hex, prefix,
                           expires_at};
        st = api_query_json(pg,
                            "INSERT INTO renlayer.api_keys AS k "
                            "(id, tenant_id, agent_id, name, key_hash, prefix, expires_at) "
                            "SELECT $1, $2, a.id, $4, $5::bytea, $6, $7::timestamptz "
                            "FROM renlayer.agents a "
                            "WHERE a.tenant_id = $2 AND a.id = $3 AND a.deleted_at IS NULL "
                            "RETURNING " API_KEY_JSON,
                            7, p, &key);
        if (st == RL_ERR_INVALID && expires_at) {
            api_field_error(field_errors, "expires_at", "must be an ISO 8601 timestamp");
        }
    }
    if (st == RL_OK)
        st = api_audit(pg, actor, "api_key.create", "api_key", id, NULL, key);
    if (st == RL_OK && !in_tx)
        st = rl_pg_commit(pg);
    if (st != RL_OK) {
        if (!in_tx)
            rl_pg_rollback(pg);
        json_decref(key);
        return st;
    }
    json_object_set_new(key, "secret", json_string(secret));
    *out = key;
    return RL_OK;
}

rl_status_t api_agent_create(api_t *api, rl_pg_t *pg, const api_actor_t *actor,
                             const json_t *input, json_t *field_errors, json_t **out)
{
    const char *name, *description, *policy_set;
    json_t *session = NULL;
    double soft = 0, hard = 0;
    long idle = 1800;
    bool has_soft = false, has_hard = false, has_idle = false;
    bool ok = api_field_str(input, "name", true, 200, field_errors, &name);
    ok = api_field_str(input, "description", false, 4000, field_errors, &description) && ok;
    ok = api_field_uuid(input, "default_policy_set_id", false, field_errors, &policy_set) && ok;
    ok = api_field_object(input, "session", field_errors, &session) && ok;
    if (session) {
        json_t *errs = json_object();
        ok = api_field_positive(session, "soft_limit_usd", errs, &soft, &has_soft) && ok;
        ok = api_field_positive(session, "hard_limit_usd", errs, &hard, &has_hard) && ok;
        ok = api_field_int(session, "idle_timeout_s", 1, 604800, errs, &idle, &has_idle) && ok;
        const char *k;
        json_t *v;
        json_object_foreach(errs, k, v)
        {
            char key[96];
            snprintf(key, sizeof key, "session.%s", k);
            api_field_error(field_errors, key, json_string_value(v));
        }
        json_decref(errs);
        if (has_soft && has_hard && hard < soft) {
            api_field_error(field_errors, "session.hard_limit_usd",
                            "must be at least the soft limit");
            ok = false;
        }
    }
    if (!ok)
        return rl_error(RL_ERR_INVALID, "invalid agent");

    char id[40], soft_s[32], hard_s[32], idle_s[32];
    api_new_id(id);
    snprintf(soft_s, sizeof soft_s, "%.8f", soft);
    snprintf(hard_s, sizeof hard_s, "%.8f", hard);
    snprintf(idle_s, sizeof idle_s, "%ld", idle);
    json_t *agent = NULL, *key = NULL;
    rl_status_t st = rl_pg_begin(pg);
    if (st == RL_OK) {
        const char *p[] = {id,
                           actor->tenant_id,
                           name,
                           description ? description : "",
                           policy_set,
                           has_soft ? soft_s : NULL,
                           has_hard ? hard_s : NULL,
                           idle_s};
        st = api_query_json(pg,
                            "INSERT INTO renlayer.agents AS a (id, tenant_id, name, description, "
                            "default_policy_set_id, soft_limit_usd, hard_limit_usd, "
                            "idle_timeout_s) VALUES ($1, $2, $3, $4, $5, $6::numeric, "
                            "$7::numeric, $8::integer) RETURNING " API_AGENT_JSON,
                            8, p, &agent);
        if (st == RL_ERR_CONFLICT)
            st = rl_error(RL_ERR_CONFLICT, "an agent named '%s' exists already", name);
    }
    if (st == RL_OK)
        st = api_audit(pg, actor, "agent.create", "agent", id, NULL, agent);
    if (st == RL_OK) {
        json_t *key_in = json_pack("{s:s}", "name", "default");
        st = api_key_create(api, pg, actor, id, key_in, true, field_errors, &key);
        json_decref(key_in);
    }
    if (st == RL_OK)
        st = rl_pg_commit(pg);
    if (st != RL_OK) {
        rl_pg_rollback(pg);
        json_decref(agent);
        json_decref(key);
        return st;
    }
    *out = json_pack("{s:o,s:o}", "agent", agent, "key", key);
    return RL_OK;
}

/* ---- routes ------------------------------------------------------------------------------ */

#include "api_call.h"
#include "api_routes.h"

static const char *const agent_by_id =
    "SELECT " API_AGENT_JSON " FROM renlayer.agents a "
    "WHERE a.tenant_id = $1 AND a.id = $2 AND a.deleted_at IS NULL";

void api_agents_list(rl_http_request_t *req, void *ctx)
{
    api_list_for_tenant(req, ctx,
                        "SELECT a.id::text, " API_AGENT_JSON " FROM renlayer.agents a "
                        "WHERE a.tenant_id = $1 AND a.deleted_at IS NULL "
                        "AND ($2::uuid IS NULL OR a.id < $2::uuid) ORDER BY a.id DESC LIMIT $3");
}

void api_agents_create(rl_http_request_t *req, void *ctx)
{
    json_t *body = rl_http_json_body(req);
    api_call_t call;
    if (body == NULL || !api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
        return;
    json_t *errors = json_object(), *out = NULL;
    rl_status_t st = api_agent_create(call.api, call.pg, &call.actor, body, errors, &out);
    if (st == RL_OK)
        rl_http_respond_json(req, 201, out);
    else
        api_respond_status(req, st, errors);
    json_decref(errors);
    api_call_end(&call);
}

void api_agents_get(rl_http_request_t *req, void *ctx)
{
    api_get_for_tenant(req, ctx, agent_by_id);
}

/* Validates a PATCH body; the same rules as create with every field optional. */
static bool valid_agent_patch(const json_t *in, json_t *errors)
{
    const char *s;
    json_t *session = NULL;
    double d;
    long l;
    bool has, ok = true;
    if (json_object_get(in, "name"))
        ok = api_field_str(in, "name", true, 200, errors, &s) && ok;
    ok = api_field_str(in, "description", false, 4000, errors, &s) && ok;
    ok = api_field_uuid(in, "default_policy_set_id", false, errors, &s) && ok;
    ok = api_field_object(in, "session", errors, &session) && ok;
    if (session) {
        json_t *e = json_object();
        ok = api_field_positive(session, "soft_limit_usd", e, &d, &has) && ok;
        ok = api_field_positive(session, "hard_limit_usd", e, &d, &has) && ok;
        ok = api_field_int(session, "idle_timeout_s", 1, 604800, e, &l, &has) && ok;
        const char *k;
        json_t *v;
        json_object_foreach(e, k, v)
        {
            char key[96];
            snprintf(key, sizeof key, "session.%s", k);
            api_field_error(errors, key, json_string_value(v));
        }
        json_decref(e);
    }
    const char *known[] = {"name", "description", "default_policy_set_id", "session", NULL};
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)in, k, v)
    {
        bool found = false;
        for (size_t i = 0; known[i]; i++)
            found = found || strcmp(k, known[i]) == 0;
        if (!found) {
            api_field_error(errors, k, "is not a field of an agent");
            ok = false;
        }
    }
    return ok;
}

void api_agents_patch(rl_http_request_t *req, void *ctx)
{
    const char *id = api_path_uuid(req, "id");
    json_t *body = id ? rl_http_json_body(req) : NULL;
    api_call_t call;
    if (body == NULL || !api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
        return;
    json_t *errors = json_object(), *before = NULL, *after = NULL;
    rl_status_t st = valid_agent_patch(body, errors) ? RL_OK : rl_error(RL_ERR_INVALID, "agent");
    char *patch = json_dumps(body, JSON_COMPACT);
    const char *p[] = {call.actor.tenant_id, id, patch};
    if (st == RL_OK)
        st = rl_pg_begin(call.pg);
    if (st == RL_OK)
        st = api_query_json(call.pg, "SELECT " API_AGENT_JSON " FROM renlayer.agents a "
                                     "WHERE a.tenant_id = $1 AND a.id = $2 "
                                     "AND a.deleted_at IS NULL FOR UPDATE",
                            2, p, &before);
    if (st == RL_OK) {
        st = api_query_json(
            call.pg,
            "UPDATE renlayer.agents a SET "
            "name = CASE WHEN $3::jsonb ? 'name' THEN $3::jsonb->>'name' ELSE a.name END, "
            "description = CASE WHEN $3::jsonb ? 'description' "
            "  THEN COALESCE($3::jsonb->>'description', '') ELSE a.description END, "
            "default_policy_set_id = CASE WHEN $3::jsonb ? 'default_policy_set_id' "
            "  THEN ($3::jsonb->>'default_policy_set_id')::uuid ELSE a.default_policy_set_id END, "
            "soft_limit_usd = CASE WHEN $3::jsonb->'session' ? 'soft_limit_usd' "
            "  THEN ($3::jsonb->'session'->>'soft_limit_usd')::numeric ELSE a.soft_limit_usd END, "
            "hard_limit_usd = CASE WHEN $3::jsonb->'session' ? 'hard_limit_usd' "
            "  THEN ($3::jsonb->'session'->>'hard_limit_usd')::numeric ELSE a.hard_limit_usd END, "
            "idle_timeout_s = CASE WHEN $3::jsonb->'session' ? 'idle_timeout_s' "
            "  THEN COALESCE(($3::jsonb->'session'->>'idle_timeout_s')::integer, 1800) "
            "  ELSE a.idle_timeout_s END "
            "WHERE a.tenant_id = $1 AND a.id = $2 RETURNING " API_AGENT_JSON,
            3, p, &after);
        if (st == RL_ERR_CONFLICT)
            st = rl_error(RL_ERR_CONFLICT, "an agent with that name exists already");
        else if (st == RL_ERR_INVALID)
            api_field_error(errors, "default_policy_set_id",
                            "must be a policy set of this tenant, and hard limit >= soft limit");
    }
    if (st == RL_OK)
        st = api_audit(call.pg, &call.actor, "agent.update", "agent", id, before, after);
    api_call_finish(&call, st, 200, after, errors);
    free(patch);
    json_decref(errors);
    json_decref(before);
    json_decref(after);
    api_call_end(&call);
}

void api_agents_delete(rl_http_request_t *req, void *ctx)
{
    const char *id = api_path_uuid(req, "id");
    api_call_t call;
    if (id == NULL || !api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
        return;
    json_t *before = NULL;
    const char *p[] = {call.actor.tenant_id, id};
    PGresult *r = NULL;
    rl_status_t st = rl_pg_begin(call.pg);
    if (st == RL_OK)
        st = api_query_json(call.pg, "SELECT " API_AGENT_JSON " FROM renlayer.agents a "
                                     "WHERE a.tenant_id = $1 AND a.id = $2 "
                                     "AND a.deleted_at IS NULL FOR UPDATE",
                            2, p, &before);
    /* keys stop working at once: revoked rows notify every proxy */
    if (st == RL_OK)
        st = rl_pg_query(call.pg,
                         "UPDATE renlayer.api_keys SET revoked_at = now() WHERE tenant_id = $1 "
                         "AND agent_id = $2 AND revoked_at IS NULL",
                         2, p, &r);
    PQclear(r);
    r = NULL;
    if (st == RL_OK)
        st = rl_pg_query(call.pg,
                         "UPDATE renlayer.agents SET deleted_at = now() WHERE tenant_id = $1 "
                         "AND id = $2",
                         2, p, &r);
    PQclear(r);
    if (st == RL_OK)
        st = api_audit(call.pg, &call.actor, "agent.delete", "agent", id, before, NULL);
    api_call_finish(&call, st, 204, NULL, NULL);
    json_decref(before);
    api_call_end(&call);
}

/* ---- keys ---- */

void api_keys_list(rl_http_request_t *req, void *ctx)
{
    const char *agent = api_path_uuid(req, "id");
    api_page_t page;
    api_call_t call;
    if (agent == NULL || !api_page_parse(req, &page) ||
        !api_call_begin(ctx, req, API_ROLE_VIEWER, &call))
        return;
    const char *p[] = {call.actor.tenant_id, agent, page.after[0] ? page.after : NULL,
                       page.limit_plus_one};
    json_t *exists = NULL;
    rl_status_t st = api_query_json(call.pg, agent_by_id, 2, p, &exists);
    json_decref(exists);
    if (st != RL_OK)
        api_respond_status(req, st, NULL);
    else
        api_respond_page(req, call.pg, &page,
                         "SELECT k.id::text, " API_KEY_JSON " FROM renlayer.api_keys k "
                         "WHERE k.tenant_id = $1 AND k.agent_id = $2 "
                         "AND ($3::uuid IS NULL OR k.id < $3::uuid) ORDER BY k.id DESC LIMIT $4",
                         4, p);
    api_call_end(&call);
}

void api_keys_create(rl_http_request_t *req, void *ctx)
{
    const char *agent = api_path_uuid(req, "id");
    json_t *body = agent ? rl_http_json_body(req) : NULL;
    api_call_t call;
    if (body == NULL || !api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
        return;
    json_t *errors = json_object(), *out = NULL;
    rl_status_t st = api_key_create(call.api, call.pg, &call.actor, agent, body, false, errors, &out);
    if (st == RL_OK)
        rl_http_respond_json(req, 201, out);
    else
        api_respond_status(req, st, errors);
    json_decref(errors);
    api_call_end(&call);
}

/* Revokes (expire_at NULL) or schedules the end of a key, with an audit row. */
static void change_key(rl_http_request_t *req, void *ctx, bool revoke)
{
    const char *agent = api_path_uuid(req, "id");
    const char *key = agent ? api_path_uuid(req, "key_id") : NULL;
    json_t *body = (key && !revoke) ? rl_http_json_body(req) : NULL;
    if (key == NULL || (!revoke && body == NULL))
        return;
    json_t *errors = json_object();
    const char *at = NULL;
    if (!revoke && !api_field_timestamp(body, "at", true, errors, &at)) {
        rl_http_respond_error(req, 400, "validation_failed", "invalid expiry", errors);
        return;
    }
    api_call_t call;
    if (!api_call_begin(ctx, req, API_ROLE_ADMIN, &call)) {
        json_decref(errors);
        return;
    }
    json_t *before = NULL, *after = NULL;
    const char *p[] = {call.actor.tenant_id, agent, key, at};
    rl_status_t st = rl_pg_begin(call.pg);
    if (st == RL_OK)
        st = api_query_json(call.pg,
                            "SELECT " API_KEY_JSON " FROM renlayer.api_keys k "
                            "WHERE k.tenant_id = $1 AND k.agent_id = $2 AND k.id = $3 FOR UPDATE",
                            3, p, &before);
    if (st == RL_OK && !revoke && !json_is_null(json_object_get(before, "revoked_at")))
        st = rl_error(RL_ERR_CONFLICT, "the key is revoked already");
    if (st == RL_OK && revoke)
        st = api_query_json(call.pg,
                            "UPDATE renlayer.api_keys k SET revoked_at = COALESCE(k.revoked_at, now()) "
                            "WHERE k.tenant_id = $1 AND k.agent_id = $2 AND k.id = $3 "
                            "RETURNING " API_KEY_JSON,
                            3, p, &after);
    else if (st == RL_OK) {
        st = api_query_json(call.pg,
                            "UPDATE renlayer.api_keys k SET expires_at = $4::timestamptz "
                            "WHERE k.tenant_id = $1 AND k.agent_id = $2 AND k.id = $3 "
                            "RETURNING " API_KEY_JSON,
                            4, p, &after);
        if (st == RL_ERR_INVALID)
            api_field_error(errors, "at", "must be an ISO 8601 timestamp");
    }
    if (st == RL_OK)
        st = api_audit(call.pg, &call.actor, revoke ? "api_key.revoke" : "api_key.expire",
                       "api_key", key, before, after);
    api_call_finish(&call, st, revoke ? 204 : 200, revoke ? NULL : after, errors);
    json_decref(before);
    json_decref(after);
    json_decref(errors);
    api_call_end(&call);
}

void api_keys_delete(rl_http_request_t *req, void *ctx)
{
    change_key(req, ctx, true);
}

void api_keys_expire(rl_http_request_t *req, void *ctx)
{
    change_key(req, ctx, false);
}
