/* Operator API tokens: long-lived bearer secrets for automation. */
#include <stdio.h>
#include <string.h>

#include "api_resources.h"
#include "api_validate.h"
#include "rl_apikey.h"

#define TOKEN_JSON                                                                            \
    "json_build_object('id', k.id, 'operator_id', k.operator_id, 'name', k.name, "           \
    "'prefix', k.prefix, 'created_at', k.created_at, 'last_used_at', k.last_used_at, "       \
    "'expires_at', k.expires_at, 'revoked_at', k.revoked_at)"

rl_status_t api_operator_token_create(api_t *api, rl_pg_t *pg, const api_actor_t *actor,
                                      const char *operator_id, const char *name,
                                      json_t *field_errors, json_t **out)
{
    json_t *in = json_pack("{s:s?}", "name", name);
    const char *n = NULL;
    bool ok = api_field_str(in, "name", true, 200, field_errors, &n);
    json_decref(in); /* n pointed into it: use name from here on */
    if (!ok)
        return rl_error(RL_ERR_INVALID, "invalid token");

    char secret[RL_TOKEN_MAX_SIZE], prefix[32], id[40], hash_hex[2 * RL_APIKEY_HASH_LEN + 3];
    uint8_t hash[RL_APIKEY_HASH_LEN];
    rl_status_t st = rl_apikey_generate(RL_APIKEY_OPERATOR, secret, sizeof secret);
    if (st != RL_OK)
        return st;
    rl_apikey_hash(api->hash_key, secret, hash);
    hash_hex[0] = '\\', hash_hex[1] = 'x';
    rl_hex_encode(hash, sizeof hash, hash_hex + 2, sizeof hash_hex - 2);
    rl_apikey_display(secret, prefix, sizeof prefix);
    api_new_id(id);

    json_t *token = NULL;
    st = rl_pg_begin(pg);
    if (st == RL_OK) {
        const char *p[] = {id, actor->tenant_id, operator_id, name, hash_hex, prefix};
        st = api_query_json(pg,
                            "INSERT INTO renlayer.operator_tokens AS k "
                            "(id, tenant_id, operator_id, name, token_hash, prefix) "
                            "SELECT $1, $2, o.id, $4, $5::bytea, $6 FROM renlayer.operators o "
                            "WHERE o.tenant_id = $2 AND o.id = $3 AND o.disabled_at IS NULL "
                            "RETURNING " TOKEN_JSON,
                            6, p, &token);
    }
    if (st == RL_OK)
        st = api_audit(pg, actor, "operator_token.create", "operator_token", id, NULL, token);
    if (st == RL_OK)
        st = rl_pg_commit(pg);
    if (st != RL_OK) {
        rl_pg_rollback(pg);
        json_decref(token);
        return st;
    }
    *out = json_pack("{s:o,s:s}", "token", token, "secret", secret);
    return RL_OK;
}
