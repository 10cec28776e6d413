/* Operator API tokens: long-lived bearer secrets for automation. */
#include <stdio.h>
#include <string.h>

#include "api_resources.h"
#include "api_views.h"
#include "api_validate.h"
#include "rl_apikey.h"

rl_status_t api_operator_token_create(api_t *api, rl_pg_t *pg, const api_actor_t *actor,
                                      const char *operator_id, const char *name,
                                      const char *expires_at, json_t *field_errors, json_t **out)
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
        const char *p[] = {id, actor->tenant_id, operator_id, name, hash_hex, prefix, expires_at};
        st = api_query_json(pg,
                            "INSERT INTO renlayer.operator_tokens AS k "
                            "(id, tenant_id, operator_id, name, token_hash, prefix, expires_at) "
                            "SELECT $1, $2, o.id, $4, $5::bytea, $6, $7::timestamptz "
                            "FROM renlayer.operators o "
                            "WHERE o.tenant_id = $2 AND o.id = $3 AND o.disabled_at IS NULL "
                            "RETURNING " API_TOKEN_JSON,
                            7, p, &token);
        if (st == RL_ERR_INVALID && expires_at)
            api_field_error(field_errors, "expires_at", "must be an ISO 8601 timestamp");
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

/* ---- routes ------------------------------------------------------------------------------ */

#include "api_call.h"
#include "api_routes.h"

void api_tokens_list(rl_http_request_t *req, void *ctx)
{
    api_page_t page;
    api_call_t call;
    if (!api_page_parse(req, &page) || !api_call_begin(ctx, req, API_ROLE_VIEWER, &call))
        return;
    /* viewers see their own tokens; owners and admins every token of the tenant */
    const char *p[] = {call.actor.tenant_id, page.after[0] ? page.after : NULL,
                       page.limit_plus_one,
                       call.role >= API_ROLE_ADMIN ? NULL : call.actor.operator_id};
    api_respond_page(req, call.pg, &page,
                     "SELECT k.id::text, " API_TOKEN_JSON " FROM renlayer.operator_tokens k "
                     "WHERE k.tenant_id = $1 AND ($4::uuid IS NULL OR k.operator_id = $4::uuid) "
                     "AND ($2::uuid IS NULL OR k.id < $2::uuid) ORDER BY k.id DESC LIMIT $3",
                     4, p);
    api_call_end(&call);
}

void api_tokens_create(rl_http_request_t *req, void *ctx)
{
    json_t *body = rl_http_json_body(req);
    api_call_t call;
    if (body == NULL || !api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
        return;
    json_t *errors = json_object(), *out = NULL;
    const char *name = NULL, *expires = NULL;
    bool ok = api_field_str(body, "name", true, 200, errors, &name);
    ok = api_field_timestamp(body, "expires_at", false, errors, &expires) && ok;
    rl_status_t st = ok ? api_operator_token_create(call.api, call.pg, &call.actor,
                                                    call.actor.operator_id, name, expires, errors,
                                                    &out)
                        : rl_error(RL_ERR_INVALID, "token");
    if (st == RL_OK)
        rl_http_respond_json(req, 201, out);
    else
        api_respond_status(req, st, errors);
    json_decref(errors);
    api_call_end(&call);
}

void api_tokens_delete(rl_http_request_t *req, void *ctx)
{
    const char *id = api_path_uuid(req, "id");
    api_call_t call;
    if (id == NULL || !api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
        return;
    json_t *before = NULL, *after = NULL;
    const char *p[] = {call.actor.tenant_id, id};
    rl_status_t st = rl_pg_begin(call.pg);
    if (st == RL_OK)
        st = api_query_json(call.pg,
                            "SELECT " API_TOKEN_JSON " FROM renlayer.operator_tokens k "
                            "WHERE k.tenant_id = $1 AND k.id = $2 FOR UPDATE",
                            2, p, &before);
    if (st == RL_OK)
        st = api_query_json(call.pg,
                            "UPDATE renlayer.operator_tokens k SET revoked_at = "
                            "COALESCE(k.revoked_at, now()) WHERE k.tenant_id = $1 AND k.id = $2 "
                            "RETURNING " API_TOKEN_JSON,
                            2, p, &after);
    if (st == RL_OK)
        st = api_audit(call.pg, &call.actor, "operator_token.revoke", "operator_token", id,
                       before, after);
    api_call_finish(&call, st, 204, NULL, NULL);
    json_decref(before);
    json_decref(after);
    api_call_end(&call);
}
