/* Tenants and their first owner. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "api_resources.h"
#include "api_validate.h"

#define TENANT_JSON                                                                           \
    "json_build_object('id', t.id, 'name', t.name, 'fail_closed', t.fail_closed, "           \
    "'created_at', t.created_at)"
#define OPERATOR_JSON                                                                         \
    "json_build_object('id', o.id, 'email', o.email, 'name', o.name, 'role', o.role, "       \
    "'created_at', o.created_at)"

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
                            "RETURNING " TENANT_JSON,
                            2, p, &tenant);
    }
    if (st == RL_OK) {
        const char *p[] = {owner_id, actor.tenant_id, owner_email};
        st = api_query_json(pg,
                            "INSERT INTO renlayer.operators AS o (id, tenant_id, email, role) "
                            "VALUES ($1, $2, lower($3), 'owner') RETURNING " OPERATOR_JSON,
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
