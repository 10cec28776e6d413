/* Agents and their API keys. */
#include <stdio.h>
#include <string.h>

#include "api_resources.h"
#include "api_validate.h"
#include "rl_apikey.h"

#define AGENT_JSON                                                                            \
    "json_build_object('id', a.id, 'name', a.name, 'description', a.description, "           \
    "'default_policy_set_id', a.default_policy_set_id, 'session', json_build_object("        \
    "'soft_limit_usd', a.soft_limit_usd, 'hard_limit_usd', a.hard_limit_usd, "               \
    "'idle_timeout_s', a.idle_timeout_s), 'created_at', a.created_at, "                      \
    "'updated_at', a.updated_at)"
#define KEY_JSON                                                                              \
    "json_build_object('id', k.id, 'agent_id', k.agent_id, 'name', k.name, "                 \
    "'prefix', k.prefix, 'created_at', k.created_at, 'last_used_at', k.last_used_at, "       \
    "'expires_at', k.expires_at, 'revoked_at', k.revoked_at)"

rl_status_t api_key_create(api_t *api, rl_pg_t *pg, const api_actor_t *actor,
                           const char *agent_id, const json_t *input, bool in_tx,
                           json_t *field_errors, json_t **out)
{
    const char *name = NULL, *expires_at = NULL;
    bool ok = api_field_str(input, "name", false, 200, field_errors, &name);
    ok = api_field_str(input, "expires_at", false, 64, field_errors, &expires_at) && ok;
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
                            "RETURNING " KEY_JSON,
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
                            "$7::numeric, $8::integer) RETURNING " AGENT_JSON,
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
