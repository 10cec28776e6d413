/* Operators of a tenant: only owners manage them; the last owner stays. */
#include <stdio.h>
#include <string.h>

#include "api_call.h"
#include "api_routes.h"
#include "api_validate.h"
#include "api_views.h"

static const char *const roles[] = {"owner", "admin", "viewer", NULL};

void api_operators_list(rl_http_request_t *req, void *ctx)
{
    api_list_for_tenant(req, ctx,
                        "SELECT o.id::text, " API_OPERATOR_JSON " FROM renlayer.operators o "
                        "WHERE o.tenant_id = $1 AND ($2::uuid IS NULL OR o.id < $2::uuid) "
                        "ORDER BY o.id DESC LIMIT $3");
}

void api_operators_create(rl_http_request_t *req, void *ctx)
{
    json_t *body = rl_http_json_body(req);
    api_call_t call;
    if (body == NULL || !api_call_begin(ctx, req, API_ROLE_OWNER, &call))
        return;
    json_t *errors = json_object(), *op = NULL;
    const char *email, *name, *role;
    bool ok = api_field_str(body, "email", true, 320, errors, &email);
    ok = api_field_str(body, "name", false, 200, errors, &name) && ok;
    ok = api_field_enum(body, "role", true, roles, errors, &role) && ok;
    if (email && !api_valid_email(email)) {
        api_field_error(errors, "email", "must be an e-mail address");
        ok = false;
    }
    char id[40];
    api_new_id(id);
    rl_status_t st = ok ? rl_pg_begin(call.pg) : rl_error(RL_ERR_INVALID, "operator");
    if (st == RL_OK) {
        const char *p[] = {id, call.actor.tenant_id, email, name ? name : "", role};
        st = api_query_json(call.pg,
                            "INSERT INTO renlayer.operators AS o (id, tenant_id, email, name, role) "
                            "VALUES ($1, $2, lower($3), $4, $5) RETURNING " API_OPERATOR_JSON,
                            5, p, &op);
        if (st == RL_ERR_CONFLICT)
            st = rl_error(RL_ERR_CONFLICT, "an operator with that e-mail exists already");
    }
    if (st == RL_OK)
        st = api_audit(call.pg, &call.actor, "operator.create", "operator", id, NULL, op);
    api_call_finish(&call, st, 201, op, errors);
    json_decref(op);
    json_decref(errors);
    api_call_end(&call);
}

/* RL_ERR_CONFLICT when the change would leave the tenant without an active
 * owner. Runs inside the caller's transaction, rows locked. */
static rl_status_t keep_an_owner(rl_pg_t *pg, const char *tenant, const char *leaving)
{
    const char *p[] = {tenant, leaving};
    json_t *n = NULL;
    rl_status_t st = api_query_json(
        pg,
        "SELECT to_json(count(*)) FROM (SELECT id FROM renlayer.operators "
        "WHERE tenant_id = $1 AND role = 'owner' AND disabled_at IS NULL AND id <> $2 "
        "FOR UPDATE) s",
        2, p, &n);
    if (st == RL_OK && json_integer_value(n) == 0)
        st = rl_error(RL_ERR_CONFLICT, "a tenant keeps at least one active owner");
    json_decref(n);
    return st;
}

void api_operators_patch(rl_http_request_t *req, void *ctx)
{
    const char *id = api_path_uuid(req, "id");
    json_t *body = id ? rl_http_json_body(req) : NULL;
    api_call_t call;
    if (body == NULL || !api_call_begin(ctx, req, API_ROLE_OWNER, &call))
        return;
    json_t *errors = json_object(), *before = NULL, *after = NULL;
    const char *name, *role;
    bool disabled = false, has_disabled;
    bool ok = api_field_str(body, "name", false, 200, errors, &name);
    ok = api_field_enum(body, "role", false, roles, errors, &role) && ok;
    ok = api_field_bool(body, "disabled", errors, &disabled, &has_disabled) && ok;
    const char *p[] = {call.actor.tenant_id, id, name, role,
                       has_disabled ? (disabled ? "true" : "false") : NULL};
    rl_status_t st = ok ? rl_pg_begin(call.pg) : rl_error(RL_ERR_INVALID, "operator");
    if (st == RL_OK)
        st = api_query_json(call.pg,
                            "SELECT " API_OPERATOR_JSON " FROM renlayer.operators o "
                            "WHERE o.tenant_id = $1 AND o.id = $2 FOR UPDATE",
                            2, p, &before);
    bool leaves_owners = (role && strcmp(role, "owner") != 0) || (has_disabled && disabled);
    if (st == RL_OK && leaves_owners &&
        strcmp(json_string_value(json_object_get(before, "role")), "owner") == 0)
        st = keep_an_owner(call.pg, call.actor.tenant_id, id);
    if (st == RL_OK)
        st = api_query_json(
            call.pg,
            "UPDATE renlayer.operators o SET name = COALESCE($3, o.name), "
            "role = COALESCE($4, o.role), disabled_at = CASE WHEN $5::boolean IS NULL "
            "THEN o.disabled_at WHEN $5::boolean THEN COALESCE(o.disabled_at, now()) ELSE NULL END "
            "WHERE o.tenant_id = $1 AND o.id = $2 RETURNING " API_OPERATOR_JSON,
            5, p, &after);
    if (st == RL_OK)
        st = api_audit(call.pg, &call.actor, "operator.update", "operator", id, before, after);
    api_call_finish(&call, st, 200, after, errors);
    json_decref(before);
    json_decref(after);
    json_decref(errors);
    api_call_end(&call);
}

void api_operators_delete(rl_http_request_t *req, void *ctx)
{
    const char *id = api_path_uuid(req, "id");
    api_call_t call;
    if (id == NULL || !api_call_begin(ctx, req, API_ROLE_OWNER, &call))
        return;
    json_t *before = NULL;
    const char *p[] = {call.actor.tenant_id, id};
    PGresult *r = NULL;
    rl_status_t st = rl_pg_begin(call.pg);
    if (st == RL_OK)
        st = api_query_json(call.pg,
                            "SELECT " API_OPERATOR_JSON " FROM renlayer.operators o "
                            "WHERE o.tenant_id = $1 AND o.id = $2 FOR UPDATE",
                            2, p, &before);
    if (st == RL_OK && strcmp(json_string_value(json_object_get(before, "role")), "owner") == 0)
        st = keep_an_owner(call.pg, call.actor.tenant_id, id);
    if (st == RL_OK)
        st = rl_pg_query(call.pg, "DELETE FROM renlayer.operators WHERE tenant_id = $1 AND id = $2",
                         2, p, &r);
    PQclear(r);
    if (st == RL_OK)
        st = api_audit(call.pg, &call.actor, "operator.delete", "operator", id, before, NULL);
    api_call_finish(&call, st, 204, NULL, NULL);
    json_decref(before);
    api_call_end(&call);
}
