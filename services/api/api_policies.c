/* Policy sets and their policies, checked with the proxy's engine when saved,
 * reordered, and evaluated against a sample request (POST /v1/policies/evaluate)
 * with exactly the engine calls the proxy makes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api_call.h"
#include "api_routes.h"
#include "api_validate.h"
#include "api_views.h"
#include "rl_dlp.h"
#include "rl_json.h"
#include "rl_policy.h"
#include "rl_query.h"

#define MAX_REORDER 10000
#define MAX_EVAL_LIST 256
#define SAMPLE_TEXT_MAX (64u << 20) /* a sample body as scanned: far above the API's body limit */

static const char *const actions[] = {"ALLOW", "FLAG", "DENY", NULL};

/* Records an error for every key of in that is not in known. */
static bool only_known(const json_t *in, const char *const *known, const char *what, json_t *errors)
{
    bool ok = true;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)in, k, v)
    {
        bool found = false;
        for (size_t i = 0; known[i] && !found; i++)
            found = strcmp(k, known[i]) == 0;
        if (!found) {
            char msg[64];
            snprintf(msg, sizeof msg, "is not a field of a %s", what);
            api_field_error(errors, k, msg);
            ok = false;
        }
    }
    return ok;
}

/* A free text of at most max characters; "" and null are fine. */
static bool text_field(const json_t *in, const char *key, size_t max, json_t *errors)
{
    json_t *v = json_object_get(in, key);
    if (v == NULL || json_is_null(v))
        return true;
    size_t n = 0;
    const char *s = json_string_value(v);
    for (; s && *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    if (!json_is_string(v) || n > max) {
        char msg[64];
        snprintf(msg, sizeof msg, "must be a string of at most %zu characters", max);
        api_field_error(errors, key, msg);
        return false;
    }
    return true;
}

/* Removes the keys whose value is null: null means "the default". */
static void drop_nulls(json_t *obj)
{
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(obj, tmp, k, v)
    {
        if (json_is_null(v))
            json_object_del(obj, k);
    }
}

/* ---- policy sets --------------------------------------------------------------------------- */

static const char *const set_by_id = "SELECT " API_POLICY_SET_JSON " FROM renlayer.policy_sets ps "
                                     "WHERE ps.tenant_id = $1 AND ps.id = $2";

static bool valid_set(const json_t *in, bool create, json_t *errors)
{
    const char *s;
    bool b, has;
    bool ok = true;
    if (create || json_object_get(in, "name"))
        ok = api_field_str(in, "name", true, 200, errors, &s) && ok;
    ok = text_field(in, "description", 4000, errors) && ok;
    ok = api_field_bool(in, "is_tenant_default", errors, &b, &has) && ok;
    static const char *const known[] = {"name", "description", "is_tenant_default", NULL};
    return only_known(in, known, "policy set", errors) && ok;
}

/* Makes set_id the tenant's only default when the body asks for it. */
static rl_status_t take_default(rl_pg_t *pg, const char *tenant_id, const char *set_id,
                                const json_t *in)
{
    if (!json_is_true(json_object_get(in, "is_tenant_default")))
        return RL_OK;
    const char *p[] = {tenant_id, set_id};
    PGresult *r = NULL;
    rl_status_t st = rl_pg_query(pg,
                                 "UPDATE renlayer.policy_sets SET is_tenant_default = false "
                                 "WHERE tenant_id = $1 AND id <> $2 AND is_tenant_default",
                                 2, p, &r);
    PQclear(r);
    return st;
}

void api_policy_sets_list(rl_http_request_t *req, void *ctx)
{
    api_list_for_tenant(req, ctx,
                        "SELECT ps.id::text, " API_POLICY_SET_JSON " FROM renlayer.policy_sets ps "
                        "WHERE ps.tenant_id = $1 AND ($2::uuid IS NULL OR ps.id < $2::uuid) "
                        "ORDER BY ps.id DESC LIMIT $3");
}

void api_policy_sets_create(rl_http_request_t *req, void *ctx)
{
    json_t *body = rl_http_json_body(req);
    api_call_t call;
    if (body == NULL || !api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
        return;
    json_t *errors = json_object(), *out = NULL;
    char id[40];
    api_new_id(id);
    rl_status_t st = valid_set(body, true, errors) ? rl_pg_begin(call.pg)
                                                   : rl_error(RL_ERR_INVALID, "policy set");
    if (st == RL_OK)
        st = take_default(call.pg, call.actor.tenant_id, id, body);
    if (st == RL_OK) {
        const char *p[] = {id, call.actor.tenant_id, rl_json_str_or(body, "name", NULL),
                           rl_json_str_or(body, "description", ""),
                           json_is_true(json_object_get(body, "is_tenant_default")) ? "true"
                                                                                    : "false"};
        PGresult *r = NULL;
        st = rl_pg_query(call.pg,
                         "INSERT INTO renlayer.policy_sets (id, tenant_id, name, description, "
                         "is_tenant_default) VALUES ($1, $2, $3, $4, $5::boolean)",
                         5, p, &r);
        PQclear(r);
        if (st == RL_ERR_CONFLICT)
            st = rl_error(RL_ERR_CONFLICT, "a policy set with that name exists already");
    }
    if (st == RL_OK) {
        const char *p[] = {call.actor.tenant_id, id};
        st = api_query_json(call.pg, set_by_id, 2, p, &out);
    }
    if (st == RL_OK)
        st = api_audit(call.pg, &call.actor, "policy_set.create", "policy_set", id, NULL, out);
    api_call_finish(&call, st, 201, out, errors);
    json_decref(out);
    json_decref(errors);
    api_call_end(&call);
}

void api_policy_sets_get(rl_http_request_t *req, void *ctx)
{
    api_get_for_tenant(req, ctx, set_by_id);
}

/* Locks the set for the rest of the transaction; RL_ERR_NOT_FOUND when it is
 * not the tenant's. *before (may be NULL) receives its view. */
static rl_status_t lock_set(rl_pg_t *pg, const char *tenant_id, const char *id, json_t **before)
{
    const char *p[] = {tenant_id, id};
    json_t *v = NULL;
    rl_status_t st = api_query_json(pg,
                                    "SELECT " API_POLICY_SET_JSON " FROM renlayer.policy_sets ps "
                                    "WHERE ps.tenant_id = $1 AND ps.id = $2 FOR UPDATE",
                                    2, p, &v);
    if (st == RL_OK && before)
        *before = v;
    else
        json_decref(v);
    return st;
}

void api_policy_sets_patch(rl_http_request_t *req, void *ctx)
{
    const char *id = api_path_uuid(req, "id");
    json_t *body = id ? rl_http_json_body(req) : NULL;
    api_call_t call;
    if (body == NULL || !api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
        return;
    json_t *errors = json_object(), *before = NULL, *after = NULL;
    char *patch = json_dumps(body, JSON_COMPACT);
    const char *p[] = {call.actor.tenant_id, id, patch};
    rl_status_t st = valid_set(body, false, errors) ? rl_pg_begin(call.pg)
                                                    : rl_error(RL_ERR_INVALID, "policy set");
    if (st == RL_OK)
        st = lock_set(call.pg, call.actor.tenant_id, id, &before);
    if (st == RL_OK)
        st = take_default(call.pg, call.actor.tenant_id, id, body);
    if (st == RL_OK) {
        PGresult *r = NULL;
        st = rl_pg_query(call.pg,
                         "UPDATE renlayer.policy_sets ps SET "
                         "name = COALESCE($3::jsonb->>'name', ps.name), "
                         "description = CASE WHEN $3::jsonb ? 'description' THEN "
                         "  COALESCE($3::jsonb->>'description', '') ELSE ps.description END, "
                         "is_tenant_default = COALESCE(($3::jsonb->>'is_tenant_default')::boolean, "
                         "  ps.is_tenant_default) "
                         "WHERE ps.tenant_id = $1 AND ps.id = $2",
                         3, p, &r);
        PQclear(r);
        if (st == RL_ERR_CONFLICT)
            st = rl_error(RL_ERR_CONFLICT, "a policy set with that name exists already");
    }
    if (st == RL_OK)
        st = api_query_json(call.pg, set_by_id, 2, p, &after);
    if (st == RL_OK)
        st = api_audit(call.pg, &call.actor, "policy_set.update", "policy_set", id, before, after);
    api_call_finish(&call, st, 200, after, errors);
    free(patch);
    json_decref(before);
    json_decref(after);
    json_decref(errors);
    api_call_end(&call);
}

void api_policy_sets_delete(rl_http_request_t *req, void *ctx)
{
    /* its policies go with it (ON DELETE CASCADE); agents using it fall back
     * to the tenant default (ON DELETE SET NULL) */
    api_delete_for_tenant(req, ctx,
                          "SELECT " API_POLICY_SET_JSON " FROM renlayer.policy_sets ps "
                          "WHERE ps.tenant_id = $1 AND ps.id = $2 FOR UPDATE",
                          "DELETE FROM renlayer.policy_sets WHERE tenant_id = $1 AND id = $2",
                          "policy_set.delete", "policy_set");
}

/* ---- policies ------------------------------------------------------------------------------ */

static const char *const policy_by_id = "SELECT " API_POLICY_JSON " FROM renlayer.policies p "
                                        "WHERE p.tenant_id = $1 AND p.id = $2";

/* Checks the shape of a policy body; create requires policy_set_id, name and
 * action, a patch nothing. The engine's checks come after (check_policy). */
static bool valid_policy(const json_t *in, bool create, json_t *errors)
{
    const char *s;
    json_t *obj;
    long l;
    bool b, has;
    bool ok = true;
    if (create || json_object_get(in, "policy_set_id"))
        ok = api_field_uuid(in, "policy_set_id", true, errors, &s) && ok;
    if (create || json_object_get(in, "name"))
        ok = api_field_str(in, "name", true, 200, errors, &s) && ok;
    if (create || json_object_get(in, "action"))
        ok = api_field_enum(in, "action", true, actions, errors, &s) && ok;
    ok = text_field(in, "description", 4000, errors) && ok;
    ok = text_field(in, "message", 2000, errors) && ok;
    ok = api_field_int(in, "priority", INT32_MIN, INT32_MAX, errors, &l, &has) && ok;
    ok = api_field_object(in, "scope", errors, &obj) && ok;
    ok = api_field_bool(in, "enabled", errors, &b, &has) && ok;
    json_t *cond = json_object_get(in, "conditions");
    if (cond && !json_is_null(cond) && !json_is_object(cond) && !json_is_array(cond)) {
        api_field_error(errors, "conditions", "must be a condition object or an array of them");
        ok = false;
    }
    static const char *const known[] = {"policy_set_id", "name",       "description", "priority",
                                        "scope",         "conditions", "action",      "message",
                                        "enabled",       NULL};
    return only_known(in, known, "policy", errors) && ok;
}

/* The engine's save-time check of the policy as it will be stored; the 400
 * names the field with the engine's message. */
static rl_status_t check_policy(const json_t *policy, json_t *errors)
{
    rl_policy_error_t err;
    rl_status_t st = rl_policy_validate_one(policy, &err);
    if (st == RL_OK)
        return RL_OK;
    api_field_error(errors, err.field[0] ? err.field : "conditions", err.message);
    return rl_error(RL_ERR_INVALID, "%s", err.message);
}

/* The set named by a body must be the caller tenant's. */
static rl_status_t check_set(rl_pg_t *pg, const char *tenant_id, const char *set_id, json_t *errors)
{
    const char *p[] = {tenant_id, set_id};
    json_t *v = NULL;
    rl_status_t st = api_query_json(pg,
                                    "SELECT to_json(id) FROM renlayer.policy_sets "
                                    "WHERE tenant_id = $1 AND id = $2",
                                    2, p, &v);
    json_decref(v);
    if (st == RL_ERR_NOT_FOUND) {
        api_field_error(errors, "policy_set_id", "no such policy set");
        st = rl_error(RL_ERR_INVALID, "policy set");
    }
    return st;
}

/* The columns of a policy from a merged JSON object $3 (nulls dropped). */
#define POLICY_COLUMNS_FROM_3                                                                      \
    "($3::jsonb->>'policy_set_id')::uuid, $3::jsonb->>'name', "                                    \
    "COALESCE($3::jsonb->>'description', ''), "                                                    \
    "COALESCE(($3::jsonb->>'priority')::int, (SELECT COALESCE(max(q.priority), 0) + 10 "           \
    "  FROM renlayer.policies q WHERE q.tenant_id = $1 "                                           \
    "  AND q.policy_set_id = ($3::jsonb->>'policy_set_id')::uuid AND q.id <> $2)), "               \
    "COALESCE($3::jsonb->'scope', '{\"agents\":[],\"gates\":[]}'), "                               \
    "COALESCE($3::jsonb->'conditions', '{}'), $3::jsonb->>'action', "                              \
    "COALESCE($3::jsonb->>'message', ''), COALESCE(($3::jsonb->>'enabled')::boolean, true)"

void api_policies_list(rl_http_request_t *req, void *ctx)
{
    const char *set = rl_http_query(req, "policy_set");
    if (set && *set == '\0')
        set = NULL;
    if (set && !api_valid_uuid(set)) {
        json_t *errors = json_object();
        api_field_error(errors, "policy_set", "must be a policy set id");
        rl_http_respond_error(req, 400, "validation_failed", "some fields are invalid", errors);
        return;
    }
    api_page_t page;
    api_call_t call;
    if (!api_page_parse(req, &page) || !api_call_begin(ctx, req, API_ROLE_VIEWER, &call))
        return;
    const char *p[] = {call.actor.tenant_id, set, page.after[0] ? page.after : NULL,
                       page.limit_plus_one};
    api_respond_page(req, call.pg, &page,
                     "SELECT p.id::text, " API_POLICY_JSON " FROM renlayer.policies p "
                     "WHERE p.tenant_id = $1 AND ($2::uuid IS NULL OR p.policy_set_id = $2::uuid) "
                     "AND ($3::uuid IS NULL OR p.id < $3::uuid) ORDER BY p.id DESC LIMIT $4",
                     4, p);
    api_call_end(&call);
}

void api_policies_create(rl_http_request_t *req, void *ctx)
{
    json_t *body = rl_http_json_body(req);
    api_call_t call;
    if (body == NULL || !api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
        return;
    json_t *errors = json_object(), *out = NULL;
    char id[40];
    api_new_id(id);
    json_t *policy = json_deep_copy(body);
    drop_nulls(policy);
    json_object_set_new(policy, "id", json_string(id));
    char *text = json_dumps(policy, JSON_COMPACT);
    rl_status_t st = valid_policy(body, true, errors) ? check_policy(policy, errors)
                                                      : rl_error(RL_ERR_INVALID, "policy");
    if (st == RL_OK)
        st = rl_pg_begin(call.pg);
    if (st == RL_OK)
        st = check_set(call.pg, call.actor.tenant_id, rl_json_str_or(body, "policy_set_id", ""),
                       errors);
    if (st == RL_OK) {
        const char *p[] = {call.actor.tenant_id, id, text};
        PGresult *r = NULL;
        st = rl_pg_query(call.pg,
                         "INSERT INTO renlayer.policies (tenant_id, id, policy_set_id, name, "
                         "description, priority, scope, conditions, action, message, enabled) "
                         "SELECT $1, $2, " POLICY_COLUMNS_FROM_3,
                         3, p, &r);
        PQclear(r);
        if (st == RL_ERR_CONFLICT)
            st = rl_error(RL_ERR_CONFLICT, "this policy set has a policy with that name already");
    }
    if (st == RL_OK) {
        const char *p[] = {call.actor.tenant_id, id};
        st = api_query_json(call.pg, policy_by_id, 2, p, &out);
    }
    if (st == RL_OK)
        st = api_audit(call.pg, &call.actor, "policy.create", "policy", id, NULL, out);
    api_call_finish(&call, st, 201, out, errors);
    free(text);
    json_decref(policy);
    json_decref(out);
    json_decref(errors);
    api_call_end(&call);
}

void api_policies_get(rl_http_request_t *req, void *ctx)
{
    api_get_for_tenant(req, ctx, policy_by_id);
}

void api_policies_patch(rl_http_request_t *req, void *ctx)
{
    const char *id = api_path_uuid(req, "id");
    json_t *body = id ? rl_http_json_body(req) : NULL;
    api_call_t call;
    if (body == NULL || !api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
        return;
    json_t *errors = json_object(), *before = NULL, *after = NULL, *merged = NULL;
    char *text = NULL;
    const char *p[] = {call.actor.tenant_id, id, NULL};
    rl_status_t st = valid_policy(body, false, errors) ? rl_pg_begin(call.pg)
                                                       : rl_error(RL_ERR_INVALID, "policy");
    if (st == RL_OK)
        st = api_query_json(call.pg,
                            "SELECT " API_POLICY_JSON " FROM renlayer.policies p "
                            "WHERE p.tenant_id = $1 AND p.id = $2 FOR UPDATE",
                            2, p, &before);
    if (st == RL_OK) {
        /* the policy as it will be stored: a null resets a field to its default */
        merged = json_deep_copy(before);
        json_object_update(merged, body);
        drop_nulls(merged);
        if (!json_object_get(merged, "priority"))
            json_object_set(merged, "priority", json_object_get(before, "priority"));
        st = check_policy(merged, errors);
    }
    if (st == RL_OK && json_object_get(body, "policy_set_id"))
        st = check_set(call.pg, call.actor.tenant_id, rl_json_str_or(merged, "policy_set_id", ""),
                       errors);
    if (st == RL_OK) {
        text = json_dumps(merged, JSON_COMPACT);
        p[2] = text;
        PGresult *r = NULL;
        st = rl_pg_query(call.pg,
                         "UPDATE renlayer.policies SET (policy_set_id, name, description, "
                         "priority, scope, conditions, action, message, enabled) = "
                         "(SELECT " POLICY_COLUMNS_FROM_3 ") WHERE tenant_id = $1 AND id = $2",
                         3, p, &r);
        PQclear(r);
        if (st == RL_ERR_CONFLICT)
            st = rl_error(RL_ERR_CONFLICT, "this policy set has a policy with that name already");
    }
    if (st == RL_OK)
        st = api_query_json(call.pg, policy_by_id, 2, p, &after);
    if (st == RL_OK)
        st = api_audit(call.pg, &call.actor, "policy.update", "policy", id, before, after);
    api_call_finish(&call, st, 200, after, errors);
    free(text);
    json_decref(merged);
    json_decref(before);
    json_decref(after);
    json_decref(errors);
    api_call_end(&call);
}

void api_policies_delete(rl_http_request_t *req, void *ctx)
{
    api_delete_for_tenant(req, ctx,
                          "SELECT " API_POLICY_JSON " FROM renlayer.policies p "
                          "WHERE p.tenant_id = $1 AND p.id = $2 FOR UPDATE",
                          "DELETE FROM renlayer.policies WHERE tenant_id = $1 AND id = $2",
                          "policy.delete", "policy");
}

/* The set's policies in evaluation order, as an owned JSON array. */
static rl_status_t set_order(rl_pg_t *pg, const char *tenant_id, const char *set_id, json_t **out)
{
    const char *p[] = {tenant_id, set_id};
    return api_query_json(
        pg,
        "SELECT COALESCE(json_agg(json_build_object('id', p.id, 'priority', "
        "p.priority) ORDER BY p.priority, p.id), '[]'::json) "
        "FROM renlayer.policies p WHERE p.tenant_id = $1 AND p.policy_set_id = $2",
        2, p, out);
}

void api_policy_sets_reorder(rl_http_request_t *req, void *ctx)
{
    const char *id = api_path_uuid(req, "id");
    json_t *body = id ? rl_http_json_body(req) : NULL;
    api_call_t call;
    if (body == NULL || !api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
        return;
    json_t *errors = json_object(), *before = NULL, *after = NULL, *out = NULL;
    char *ids = NULL;
    rl_status_t st = rl_pg_begin(call.pg);
    /* the set first, so another tenant's id is a 404 whatever the body */
    if (st == RL_OK)
        st = lock_set(call.pg, call.actor.tenant_id, id, NULL);
    if (st == RL_OK) {
        json_t *list = json_object_get(body, "policy_ids");
        bool good = json_is_array(list) && json_array_size(list) > 0 &&
                    json_array_size(list) <= MAX_REORDER;
        size_t i;
        json_t *v;
        json_array_foreach(list, i, v) good = good && api_valid_uuid(json_string_value(v));
        if (!good)
            api_field_error(errors, "policy_ids", "must be a non-empty list of policy ids");
        static const char *const known[] = {"policy_ids", NULL};
        good = only_known(body, known, "reorder request", errors) && good;
        if (good)
            ids = json_dumps(list, JSON_COMPACT);
        st = good ? RL_OK : rl_error(RL_ERR_INVALID, "reorder");
    }
    if (st == RL_OK) {
        const char *p[] = {call.actor.tenant_id, id, ids};
        json_t *ok = NULL;
        st = api_query_json(
            call.pg,
            "SELECT to_json(count(DISTINCT x) = jsonb_array_length($3::jsonb) AND "
            "bool_and(p.id IS NOT NULL)) FROM jsonb_array_elements_text($3::jsonb) x "
            "LEFT JOIN renlayer.policies p ON p.tenant_id = $1 "
            "AND p.policy_set_id = $2 AND p.id = x::uuid",
            3, p, &ok);
        if (st == RL_OK && !json_is_true(ok)) {
            api_field_error(errors, "policy_ids", "must list policies of this set, each once");
            st = rl_error(RL_ERR_INVALID, "reorder");
        }
        json_decref(ok);
    }
    if (st == RL_OK)
        st = set_order(call.pg, call.actor.tenant_id, id, &before);
    if (st == RL_OK) {
        /* the listed policies get 10, 20, 30... in that order; the others
         * follow in their current order */
        const char *p[] = {call.actor.tenant_id, id, ids};
        PGresult *r = NULL;
        st = rl_pg_query(
            call.pg,
            "WITH listed AS (SELECT x::uuid AS id, n FROM jsonb_array_elements_text($3::jsonb) "
            "  WITH ORDINALITY AS t(x, n)), "
            "ranked AS (SELECT p.id, row_number() OVER (ORDER BY l.n NULLS LAST, p.priority, "
            "  p.id) AS rank FROM renlayer.policies p LEFT JOIN listed l ON l.id = p.id "
            "  WHERE p.tenant_id = $1 AND p.policy_set_id = $2) "
            "UPDATE renlayer.policies p SET priority = (ranked.rank * 10)::int FROM ranked "
            "WHERE p.tenant_id = $1 AND p.id = ranked.id AND p.priority <> ranked.rank * 10",
            3, p, &r);
        PQclear(r);
    }
    if (st == RL_OK)
        st = set_order(call.pg, call.actor.tenant_id, id, &after);
    if (st == RL_OK)
        st = api_audit(call.pg, &call.actor, "policy_set.reorder", "policy_set", id, before, after);
    if (st == RL_OK) {
        const char *p[] = {call.actor.tenant_id, id};
        st = api_query_json(call.pg,
                            "SELECT json_build_object('data', COALESCE(json_agg(" API_POLICY_JSON
                            " ORDER BY p.priority, p.id), '[]'::json)) FROM renlayer.policies p "
                            "WHERE p.tenant_id = $1 AND p.policy_set_id = $2",
                            2, p, &out);
    }
    api_call_finish(&call, st, 200, out, errors);
    free(ids);
    json_decref(before);
    json_decref(after);
    json_decref(out);
    json_decref(errors);
    api_call_end(&call);
}

/* ---- evaluate ------------------------------------------------------------------------------ */

/* Which set decides: the body's policy_set_id, else the agent's default set,
 * else the tenant default. *set is an owned {id, name} or NULL (no set). */
static rl_status_t pick_set(rl_pg_t *pg, const char *tenant_id, const json_t *body, json_t *errors,
                            json_t **set)
{
    const char *agent = rl_json_str_or(body, "agent_id", NULL);
    const char *explicit_set = rl_json_str_or(body, "policy_set_id", NULL);
    rl_status_t st = RL_OK;
    if (agent) {
        const char *p[] = {tenant_id, agent};
        json_t *v = NULL;
        st = api_query_json(pg,
                            "SELECT to_json(id) FROM renlayer.agents WHERE tenant_id = $1 "
                            "AND id = $2 AND deleted_at IS NULL",
                            2, p, &v);
        json_decref(v);
        if (st == RL_ERR_NOT_FOUND) {
            api_field_error(errors, "agent_id", "no such agent");
            return rl_error(RL_ERR_INVALID, "agent");
        }
    }
    if (st != RL_OK)
        return st;
    if (explicit_set) {
        const char *p[] = {tenant_id, explicit_set};
        st = api_query_json(pg,
                            "SELECT json_build_object('id', id, 'name', name) FROM "
                            "renlayer.policy_sets WHERE tenant_id = $1 AND id = $2",
                            2, p, set);
        if (st == RL_ERR_NOT_FOUND) {
            api_field_error(errors, "policy_set_id", "no such policy set");
            st = rl_error(RL_ERR_INVALID, "policy set");
        }
        return st;
    }
    const char *p[] = {tenant_id, agent};
    st = api_query_json(pg,
                        "SELECT json_build_object('id', ps.id, 'name', ps.name) FROM "
                        "renlayer.policy_sets ps WHERE ps.tenant_id = $1 AND ps.id = COALESCE("
                        "(SELECT a.default_policy_set_id FROM renlayer.agents a WHERE "
                        "a.tenant_id = $1 AND a.id = $2::uuid), (SELECT d.id FROM "
                        "renlayer.policy_sets d WHERE d.tenant_id = $1 AND d.is_tenant_default))",
                        2, p, set);
    if (st == RL_ERR_NOT_FOUND) {
        *set = NULL;
        st = RL_OK;
    }
    return st;
}

/* Appends to ids the detectors that find something in text[0..n) (each
 * once). A scan past a custom rule's match limit gives what it found. */
static rl_status_t add_detectors(const rl_dlp_engine_t *e, const char *text, size_t n, json_t *ids)
{
    rl_dlp_findings_t f;
    rl_dlp_findings_init(&f, 1000);
    rl_status_t st = rl_dlp_scan(e, RL_DLP_SCOPE_REQUEST, text, n, NULL, &f);
    if (st == RL_OK || st == RL_ERR_TIMEOUT) {
        rl_error_clear();
        st = RL_OK;
        for (size_t i = 0; i < f.len; i++) {
            bool seen = false;
            size_t j;
            json_t *v;
            json_array_foreach(ids, j, v) seen =
                seen || strcmp(json_string_value(v), f.items[i].detector) == 0;
            if (!seen)
                json_array_append_new(ids, json_string(f.items[i].detector));
        }
    }
    rl_dlp_findings_free(&f);
    return st;
}

/* add_detectors over form-encoded s (a query, a form body), decoded. */
static rl_status_t add_form_detectors(const rl_dlp_engine_t *e, const char *s, json_t *ids)
{
    rl_buf_t text;
    rl_buf_init(&text, strlen(s) + 1);
    rl_status_t st = rl_query_decode(s, strlen(s), &text, NULL, NULL);
    if (st == RL_OK)
        st = add_detectors(e, text.data ? text.data : "", text.len, ids);
    rl_buf_free(&text);
    return st;
}

/* Whether the sample is a form body the proxy would read as one: an HTTP
 * call whose headers say application/x-www-form-urlencoded. */
static bool sample_is_form(const json_t *in, const json_t *sample)
{
    const char *action = json_string_value(json_object_get(in, "action"));
    if (!json_is_string(sample) || !action || strcmp(action, "http") != 0)
        return false;
    const char *name;
    json_t *v;
    json_object_foreach(json_object_get(in, "headers"), name, v)
    {
        if (strcasecmp(name, "content-type") == 0 && rl_query_is_form_type(json_string_value(v)))
            return true;
    }
    return false;
}

/* The ids of the detectors that find something in the sample's body (a
 * form decoded) and in its query string (decoded), with the tenant's rules,
 * as the proxy scans them. */
static rl_status_t sample_detectors(rl_pg_t *pg, const char *tenant_id, const json_t *sample,
                                    bool form, const char *query, json_t **out)
{
    rl_dlp_engine_t *e = NULL;
    rl_status_t st = api_dlp_engine_for_tenant(pg, tenant_id, &e);
    json_t *ids = json_array();
    if (st == RL_OK && ids == NULL)
        st = rl_error(RL_ERR_NOMEM, "evaluate");
    if (st == RL_OK && form) {
        st = add_form_detectors(e, json_string_value(sample), ids);
    } else if (st == RL_OK && sample) {
        /* a JSON value is dumped plain; a body given as text is read as the
         * proxy reads it (JSON escapes of plain ASCII decoded) */
        rl_buf_t text;
        rl_buf_init(&text, SAMPLE_TEXT_MAX);
        if (json_is_string(sample)) {
            const char *raw = json_string_value(sample);
            size_t n = json_string_length(sample);
            st = rl_json_plain_ascii(raw, n, &text) ? RL_OK : rl_buf_append(&text, raw, n);
        } else {
            st = rl_json_dump(sample, &text);
        }
        if (st == RL_OK)
            st = add_detectors(e, text.data ? text.data : "", text.len, ids);
        rl_buf_free(&text);
    }
    if (st == RL_OK && query)
        st = add_form_detectors(e, query, ids);
    rl_dlp_engine_release(e);
    if (st != RL_OK) {
        json_decref(ids);
        return st;
    }
    *out = ids;
    return RL_OK;
}

/* Turns the evaluate body into rl_policy_input_from_json's object: drops
 * policy_set_id and body; a JSON body gives the model when none is named; a
 * path's query string is cut off (policies test the path alone, as in the
 * proxy); and when dlp_detectors is absent, the ids of the DLP detectors that
 * find something in the body (a form on an http call decoded) or the query
 * fill it. */
static rl_status_t engine_input(rl_pg_t *pg, const char *tenant_id, const json_t *body,
                                json_t **out)
{
    json_t *in = json_deep_copy(body);
    if (in == NULL)
        return rl_error(RL_ERR_NOMEM, "evaluate");
    json_t *sample = json_incref(json_object_get(in, "body"));
    json_object_del(in, "body");
    json_object_del(in, "policy_set_id");
    if (json_is_null(sample)) {
        json_decref(sample);
        sample = NULL;
    }
    rl_status_t st = RL_OK;
    char *query = NULL;
    const char *path = json_string_value(json_object_get(in, "path"));
    const char *qmark = path ? strchr(path, '?') : NULL;
    if (qmark) {
        query = strdup(qmark + 1);
        if (query == NULL ||
            json_object_set_new(in, "path", json_stringn(path, (size_t)(qmark - path))) != 0)
            st = rl_error(RL_ERR_NOMEM, "evaluate");
    }
    json_t *model = json_object_get(sample, "model");
    if (json_is_string(model) && !json_object_get(in, "model"))
        json_object_set(in, "model", model);
    if (st == RL_OK && (sample || (query && query[0])) && !json_object_get(in, "dlp_detectors")) {
        json_t *ids = NULL;
        st = sample_detectors(pg, tenant_id, sample, sample_is_form(in, sample),
                              query && query[0] ? query : NULL, &ids);
        if (st == RL_OK)
            json_object_set_new(in, "dlp_detectors", ids);
    }
    free(query);
    json_decref(sample);
    if (st != RL_OK) {
        json_decref(in);
        return st;
    }
    *out = in;
    return RL_OK;
}

void api_policies_evaluate(rl_http_request_t *req, void *ctx)
{
    json_t *body = rl_http_json_body(req);
    api_call_t call;
    /* a dry run, but it runs every policy and DLP rule of the tenant on the
     * caller's text: the same role as changing them */
    if (body == NULL || !api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
        return;
    json_t *errors = json_object(), *set = NULL, *rows = NULL, *in_obj = NULL;
    const char *s;
    bool ok = api_field_uuid(body, "agent_id", false, errors, &s);
    ok = api_field_uuid(body, "gate_id", false, errors, &s) && ok;
    ok = api_field_uuid(body, "policy_set_id", false, errors, &s) && ok;
    rl_status_t st = ok ? pick_set(call.pg, call.actor.tenant_id, body, errors, &set)
                        : rl_error(RL_ERR_INVALID, "evaluate");
    if (st == RL_OK)
        st = engine_input(call.pg, call.actor.tenant_id, body, &in_obj);
    rl_policy_input_t in;
    const char *scratch[2 * MAX_EVAL_LIST];
    rl_policy_error_t err;
    if (st == RL_OK &&
        rl_policy_input_from_json(in_obj, &in, scratch, sizeof scratch / sizeof scratch[0], &err) !=
            RL_OK) {
        api_field_error(errors, err.field[0] ? err.field : "input", err.message);
        st = rl_error(RL_ERR_INVALID, "%s", err.message);
    }
    if (st == RL_OK && set) {
        const char *p[] = {call.actor.tenant_id, rl_json_str_or(set, "id", "")};
        st = api_query_json(call.pg,
                            "SELECT COALESCE(json_agg(" API_POLICY_JSON " ORDER BY p.priority, "
                            "p.id), '[]'::json) FROM renlayer.policies p WHERE p.tenant_id = $1 "
                            "AND p.policy_set_id = $2",
                            2, p, &rows);
    }
    if (st != RL_OK) {
        api_respond_status(req, st, errors);
    } else {
        /* what the proxy does: compile the set as stored; a set that does not
         * compile denies everything */
        rl_policy_set_t *compiled = NULL;
        rl_policy_result_t r;
        memset(&r, 0, sizeof r);
        if (rows) {
            if (rl_policy_compile(rows, &compiled, &err) != RL_OK)
                rl_policy_set_create_failed(&err, &compiled);
            rl_policy_evaluate(compiled, &in, &r);
        } else {
            r.action = RL_POLICY_ALLOW;
        }
        char reason[600];
        if (r.error)
            snprintf(reason, sizeof reason, "%s", r.reason);
        else if (r.matched)
            snprintf(reason, sizeof reason, "policy \"%s\" matched: %s", r.policy_name,
                     rl_policy_action_str(r.action));
        else
            snprintf(reason, sizeof reason, "%s",
                     set ? "no policy matched" : "no policy set applies to this request");
        json_t *policy = (r.policy_id && r.policy_id[0])
                             ? json_pack("{s:s,s:s}", "id", r.policy_id, "name",
                                         r.policy_name ? r.policy_name : "")
                             : json_null();
        json_t *answer = json_pack(
            "{s:s,s:s,s:b,s:b,s:o,s:O,s:s,s:o}", "decision", rl_policy_status_str(r.action),
            "action", rl_policy_action_str(r.action), "matched", r.matched, "error", r.error,
            "policy", policy, "policy_set", set ? set : json_null(), "reason", reason, "message",
            (r.message && r.message[0]) ? json_string(r.message) : json_null());
        rl_http_respond_json(req, 200, answer);
        rl_policy_set_destroy(compiled);
    }
    json_decref(rows);
    json_decref(in_obj);
    json_decref(set);
    json_decref(errors);
    api_call_end(&call);
}
