#include "api_call.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_validate.h"
#include "rl_crypto.h"
#include "rl_json.h"
#include "rl_log.h"

#define POOL_WAIT_MS 2000

bool api_call_begin(void *ctx, rl_http_request_t *req, api_role_t min_role, api_call_t *call)
{
    memset(call, 0, sizeof *call);
    call->api = ctx;
    call->req = req;
    if (rl_pg_pool_acquire(call->api->db, POOL_WAIT_MS, &call->pg) != RL_OK) {
        rl_http_set_header(req, "Retry-After", "1");
        rl_http_respond_error(req, 503, "unavailable", "the database is busy, try again", NULL);
        return false;
    }
    if (!api_authenticate(call->api, call->pg, req, &call->actor)) {
        api_call_end(call);
        return false;
    }
    call->role = api_role_parse(call->actor.role);
    if (call->role < min_role) {
        rl_http_respond_error(req, 403, "forbidden",
                              min_role == API_ROLE_OWNER ? "this needs the owner role"
                                                         : "this needs the admin or owner role",
                              NULL);
        api_call_end(call);
        return false;
    }
    return true;
}

void api_call_end(api_call_t *call)
{
    if (call->pg)
        rl_pg_pool_release(call->api->db, call->pg);
    call->pg = NULL;
}

void api_respond_status(rl_http_request_t *req, rl_status_t st, json_t *field_errors)
{
    const char *msg = rl_error_message();
    switch (st) {
    case RL_OK:
        rl_http_respond_error(req, 500, "internal", "internal error", NULL);
        return;
    case RL_ERR_INVALID:
        if (field_errors && json_object_size(field_errors) > 0)
            rl_http_respond_error(req, 400, "validation_failed", "some fields are invalid",
                                  json_incref(field_errors));
        else
            rl_http_respond_error(req, 400, "validation_failed", msg, NULL);
        return;
    case RL_ERR_NOT_FOUND:
        rl_http_respond_error(req, 404, "not_found", "not found", NULL);
        return;
    case RL_ERR_CONFLICT:
        rl_http_respond_error(req, 409, "conflict", msg, NULL);
        return;
    case RL_ERR_TOO_LARGE:
        rl_http_respond_error(req, 413, "body_too_large", msg, NULL);
        return;
    case RL_ERR_UNAVAILABLE:
    case RL_ERR_TIMEOUT:
        rl_http_set_header(req, "Retry-After", "1");
        rl_http_respond_error(req, 503, "unavailable", "the database is unavailable, try again",
                              NULL);
        return;
    default:
        rl_log(RL_LOG_ERROR, "request failed", "{s:s,s:s,s:s,s:s}", "request_id",
               rl_http_request_id(req), "path", rl_http_path(req), "status", rl_status_str(st),
               "detail", rl_error_last());
        rl_http_respond_error(req, 500, "internal", "internal error", NULL);
    }
}

void api_call_finish(api_call_t *call, rl_status_t st, unsigned status, json_t *body,
                     json_t *field_errors)
{
    if (st == RL_OK)
        st = rl_pg_commit(call->pg);
    if (st != RL_OK) {
        rl_pg_rollback(call->pg);
        api_respond_status(call->req, st, field_errors);
    } else if (body) {
        rl_http_respond_json(call->req, status, json_incref(body));
    } else {
        rl_http_respond(call->req, status, NULL, "", 0);
    }
}

bool api_page_parse(rl_http_request_t *req, api_page_t *page)
{
    memset(page, 0, sizeof *page);
    page->limit = 50;
    const char *limit = rl_http_query(req, "limit");
    const char *cursor = rl_http_query(req, "cursor");
    json_t *errors = json_object();
    if (limit) {
        char *end;
        long v = strtol(limit, &end, 10);
        if (*limit == '\0' || *end != '\0' || v < 1 || v > 200)
            api_field_error(errors, "limit", "must be an integer between 1 and 200");
        else
            page->limit = (int)v;
    }
    if (cursor && *cursor) {
        char id[40];
        size_t n = 0;
        if (rl_base64url_decode(cursor, strlen(cursor), id, sizeof id - 1, &n) != RL_OK ||
            (id[n] = '\0', !api_valid_uuid(id)))
            api_field_error(errors, "cursor", "is not a cursor this API returned");
        else
            snprintf(page->after, sizeof page->after, "%s", id);
    }
    if (json_object_size(errors) > 0) {
        rl_http_respond_error(req, 400, "validation_failed", "invalid pagination", errors);
        return false;
    }
    json_decref(errors);
    snprintf(page->limit_plus_one, sizeof page->limit_plus_one, "%d", page->limit + 1);
    return true;
}

void api_respond_page(rl_http_request_t *req, rl_pg_t *pg, const api_page_t *page,
                      const char *sql, int n, const char *const *params)
{
    PGresult *r = NULL;
    rl_status_t st = rl_pg_query(pg, sql, n, params, &r);
    if (st != RL_OK) {
        api_respond_status(req, st, NULL);
        return;
    }
    json_t *data = json_array();
    int rows = PQntuples(r);
    int shown = rows > page->limit ? page->limit : rows;
    for (int i = 0; i < shown; i++) {
        json_t *item = NULL;
        const char *text = PQgetvalue(r, i, 1);
        if (rl_json_parse(text, strlen(text), 0, &item) == RL_OK)
            json_array_append_new(data, item);
    }
    json_t *next = json_null();
    if (rows > page->limit) {
        const char *last = PQgetvalue(r, shown - 1, 0);
        char cursor[64];
        if (rl_base64url_encode(last, strlen(last), cursor, sizeof cursor) == RL_OK)
            next = json_string(cursor);
    }
    PQclear(r);
    rl_http_respond_json(req, 200, json_pack("{s:o,s:o}", "data", data, "next_cursor", next));
}

void api_respond_one(rl_http_request_t *req, rl_pg_t *pg, unsigned status, const char *sql, int n,
                     const char *const *params)
{
    json_t *v = NULL;
    rl_status_t st = api_query_json(pg, sql, n, params, &v);
    if (st != RL_OK) {
        api_respond_status(req, st, NULL);
        return;
    }
    rl_http_respond_json(req, status, v);
}

const char *api_path_uuid(rl_http_request_t *req, const char *name)
{
    const char *v = rl_http_param(req, name);
    if (!api_valid_uuid(v)) {
        rl_http_respond_error(req, 404, "not_found", "not found", NULL);
        return NULL;
    }
    return v;
}

void api_list_for_tenant(rl_http_request_t *req, void *ctx, const char *sql)
{
    api_page_t page;
    api_call_t call;
    if (!api_page_parse(req, &page) || !api_call_begin(ctx, req, API_ROLE_VIEWER, &call))
        return;
    const char *p[] = {call.actor.tenant_id, page.after[0] ? page.after : NULL,
                       page.limit_plus_one};
    api_respond_page(req, call.pg, &page, sql, 3, p);
    api_call_end(&call);
}

void api_get_for_tenant(rl_http_request_t *req, void *ctx, const char *sql)
{
    const char *id = api_path_uuid(req, "id");
    api_call_t call;
    if (id == NULL || !api_call_begin(ctx, req, API_ROLE_VIEWER, &call))
        return;
    const char *p[] = {call.actor.tenant_id, id};
    api_respond_one(req, call.pg, 200, sql, 2, p);
    api_call_end(&call);
}

void api_delete_for_tenant(rl_http_request_t *req, void *ctx, const char *lock_sql,
                           const char *delete_sql, const char *action, const char *target_type)
{
    const char *id = api_path_uuid(req, "id");
    api_call_t call;
    if (id == NULL || !api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
        return;
    json_t *before = NULL;
    const char *p[] = {call.actor.tenant_id, id};
    rl_status_t st = rl_pg_begin(call.pg);
    if (st == RL_OK)
        st = api_query_json(call.pg, lock_sql, 2, p, &before);
    if (st == RL_OK) {
        PGresult *r = NULL;
        st = rl_pg_query(call.pg, delete_sql, 2, p, &r);
        PQclear(r);
    }
    if (st == RL_OK)
        st = api_audit(call.pg, &call.actor, action, target_type, id, before, NULL);
    api_call_finish(&call, st, 204, NULL, NULL);
    json_decref(before);
    api_call_end(&call);
}
