/* Tenants and their first owner. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "api_resources.h"
#include "api_views.h"
#include "api_validate.h"

rl_status_t api_tenant_create(api_t *api, rl_pg_t *pg, const char *name, const char *owner_email,
                              json_t *field_errors, json_t **out)
{
    (void)api;
    json_t *in = json_pack("{s:s?,s:s?}", "name", name, "owner_email", owner_email);
    const char *n = NULL, *email = NULL;
    bool ok = api_field_str(in, "name", true, 200, field_errors, &n);
    ok = api_field_str(in, "owner_email", true, 320, field_errors, &email) && ok;
    if (email && !api_valid_email(email)) {
        api_field_error(field_errors, "owner_email", "must be an e-mail address");
        ok = false;
    }
    json_decref(in); /* n and email pointed into it: use the arguments from here on */
    if (!ok)
        return rl_error(RL_ERR_INVALID, "invalid tenant");

    api_actor_t actor = {.role = "owner"};
    char owner_id[40];
    api_new_id(actor.tenant_id);
    api_new_id(owner_id);
    json_t *tenant = NULL, *owner = NULL;
    rl_status_t st = rl_pg_begin(pg);
    if (st == RL_OK) {
        const char *p[] = {actor.tenant_id, name};
        st = api_query_json(pg,
                            "INSERT INTO renlayer.tenants AS t (id, name) VALUES ($1, $2) "
                            "RETURNING " API_TENANT_JSON,
                            2, p, &tenant);
    }
    if (st == RL_OK) {
        const char *p[] = {owner_id, actor.tenant_id, owner_email};
        st = api_query_json(pg,
                            "INSERT INTO renlayer.operators AS o (id, tenant_id, email, role) "
                            "VALUES ($1, $2, lower($3), 'owner') RETURNING " API_OPERATOR_JSON,
                            3, p, &owner);
    }
    if (st == RL_OK)
        st = api_audit(pg, &actor, "tenant.create", "tenant", actor.tenant_id, NULL, tenant);
    if (st == RL_OK)
        st = api_audit(pg, &actor, "operator.create", "operator", owner_id, NULL, owner);
    if (st == RL_OK)
        st = rl_pg_commit(pg);
    if (st != RL_OK) {
        rl_pg_rollback(pg);
        json_decref(tenant);
        json_decref(owner);
        return st;
    }
    *out = json_pack("{s:o,s:o}", "tenant", tenant, "owner", owner);
    return RL_OK;
}

/* ---- routes ------------------------------------------------------------------------------ */

#include "api_call.h"
#include "api_routes.h"

/* Open signup: only when RENLAYER_SIGNUP=open. No authentication. */
void api_tenants_signup(rl_http_request_t *req, void *ctx)
{
    api_t *api = ctx;
    if (!api->signup_open) {
        rl_http_respond_error(req, 403, "signup_closed",
                              "this server does not allow open signup (RENLAYER_SIGNUP)", NULL);
        return;
    }
    json_t *body = rl_http_json_body(req);
    if (body == NULL)
        return;
    rl_pg_t *pg = NULL;
    if (rl_pg_pool_acquire(api->db, 2000, &pg) != RL_OK) {
        api_respond_status(req, RL_ERR_UNAVAILABLE, NULL);
        return;
    }
    json_t *errors = json_object(), *out = NULL;
    const char *name = json_string_value(json_object_get(body, "name"));
    const char *email = json_string_value(json_object_get(body, "owner_email"));
    if (json_object_get(body, "name") && !name)
        api_field_error(errors, "name", "must be a string");
    if (json_object_get(body, "owner_email") && !email)
        api_field_error(errors, "owner_email", "must be a string");
    rl_status_t st = json_object_size(errors) == 0
                         ? api_tenant_create(api, pg, name, email, errors, &out)
                         : rl_error(RL_ERR_INVALID, "tenant");
    rl_pg_pool_release(api->db, pg);
    if (st == RL_OK)
        rl_http_respond_json(req, 201, out);
    else
        api_respond_status(req, st, errors);
    json_decref(errors);
}
