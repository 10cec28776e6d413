/* DLP: a tenant's custom rules, its overrides of the built-in detectors, and
 * POST /v1/dlp/scan, which runs the engine the proxy builds for the tenant.
 * Scanned text is never logged or stored. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_call.h"
#include "api_routes.h"
#include "api_validate.h"
#include "api_views.h"
#include "rl_dlp.h"
#include "rl_json.h"

#define MAX_SCAN_FINDINGS 1000

static const char *const severities[] = {"low", "medium", "high", "critical", NULL};
static const char *const dlp_actions[] = {"block", "warn", "redact", NULL};
static const char *const scopes[] = {"request", "response", "both", NULL};

/* ---- the tenant's engine ------------------------------------------------------------------- */

/* Applies the tenant's built-in overrides to cfg; unknown detectors and bad
 * values are skipped (the table's checks keep them out anyway). */
static rl_status_t load_overrides(rl_pg_t *pg, const char *tenant_id, rl_dlp_config_t *cfg)
{
    const char *p[] = {tenant_id};
    PGresult *r = NULL;
    rl_status_t st = rl_pg_query(pg,
                                 "SELECT detector, disabled, severity, action FROM "
                                 "renlayer.dlp_builtin_overrides WHERE tenant_id = $1",
                                 1, p, &r);
    for (int i = 0; st == RL_OK && i < PQntuples(r); i++) {
        rl_dlp_builtin_t d;
        rl_dlp_severity_t sev = 0;
        rl_dlp_action_t act = 0;
        if (rl_dlp_builtin_parse(PQgetvalue(r, i, 0), &d) != RL_OK)
            continue;
        if (!PQgetisnull(r, i, 2))
            rl_dlp_severity_parse(PQgetvalue(r, i, 2), &sev);
        if (!PQgetisnull(r, i, 3))
            rl_dlp_action_parse(PQgetvalue(r, i, 3), &act);
        rl_dlp_config_set_builtin(cfg, d, strcmp(PQgetvalue(r, i, 1), "t") != 0, sev, act);
    }
    PQclear(r);
    return st;
}

/* Adds the tenant's enabled custom rules to cfg; a row the engine refuses
 * (saved by an older version, past the bound) is skipped, as the proxy does. */
static rl_status_t load_rules(rl_pg_t *pg, const char *tenant_id, rl_dlp_config_t *cfg)
{
    const char *p[] = {tenant_id};
    PGresult *r = NULL;
    rl_status_t st = rl_pg_query(pg,
                                 "SELECT id::text, name, pattern, severity, action, scope FROM "
                                 "renlayer.dlp_rules WHERE tenant_id = $1 AND enabled ORDER BY id",
                                 1, p, &r);
    for (int i = 0; st == RL_OK && i < PQntuples(r); i++) {
        rl_dlp_rule_t rule = {.id = PQgetvalue(r, i, 0),
                              .name = PQgetvalue(r, i, 1),
                              .pattern = PQgetvalue(r, i, 2),
                              .enabled = true};
        if (rl_dlp_severity_parse(PQgetvalue(r, i, 3), &rule.severity) != RL_OK ||
            rl_dlp_action_parse(PQgetvalue(r, i, 4), &rule.action) != RL_OK ||
            rl_dlp_scope_parse(PQgetvalue(r, i, 5), &rule.scope) != RL_OK)
            continue;
        rl_status_t add = rl_dlp_config_add_rule(cfg, &rule);
        if (add == RL_ERR_NOMEM)
            st = add;
    }
    PQclear(r);
    return st;
}

rl_status_t api_dlp_engine_for_tenant(rl_pg_t *pg, const char *tenant_id, rl_dlp_engine_t **out)
{
    rl_dlp_config_t *cfg = NULL;
    rl_status_t st = rl_dlp_config_create(&cfg);
    if (st == RL_OK)
        st = load_overrides(pg, tenant_id, cfg);
    if (st == RL_OK)
        st = load_rules(pg, tenant_id, cfg);
    if (st == RL_OK)
        st = rl_dlp_engine_create(cfg, out);
    rl_dlp_config_destroy(cfg);
    return st;
}

/* ---- built-ins ----------------------------------------------------------------------------- */

/* The effective settings of built-in d given its override row (NULL: none):
 * {detector, enabled, severity, action, default_severity, default_action,
 * overridden}. Returns owned JSON. */
static json_t *builtin_view(rl_dlp_builtin_t d, const json_t *row)
{
    const char *sev = rl_dlp_severity_str(rl_dlp_builtin_severity(d));
    const char *act = rl_dlp_action_str(rl_dlp_builtin_action(d));
    json_t *v = json_pack("{s:s,s:b,s:s,s:s,s:s,s:s,s:b}", "detector", rl_dlp_builtin_id(d),
                          "enabled", !json_is_true(json_object_get(row, "disabled")), "severity",
                          rl_json_str_or(row, "severity", sev), "action",
                          rl_json_str_or(row, "action", act), "default_severity", sev,
                          "default_action", act, "overridden", row != NULL);
    return v;
}

/* The tenant's override rows by lower-case detector id, owned. */
static rl_status_t overrides_by_id(rl_pg_t *pg, const char *tenant_id, json_t **out)
{
    const char *p[] = {tenant_id};
    return api_query_json(
        pg,
        "SELECT COALESCE(json_object_agg(o.detector, json_build_object("
        "'disabled', o.disabled, 'severity', o.severity, 'action', o.action)), "
        "'{}'::json) FROM renlayer.dlp_builtin_overrides o WHERE o.tenant_id = $1",
        1, p, out);
}

/* The lower-case id of built-in d as the overrides table spells it. */
static void lower_id(rl_dlp_builtin_t d, char out[72])
{
    snprintf(out, 72, "%s", rl_dlp_builtin_id(d));
    for (char *c = out; *c; c++)
        *c = (char)tolower((unsigned char)*c);
}

/* One built-in's view for the tenant, owned in *out. */
static rl_status_t builtin_for(rl_pg_t *pg, const char *tenant_id, rl_dlp_builtin_t d, json_t **out)
{
    json_t *rows = NULL;
    rl_status_t st = overrides_by_id(pg, tenant_id, &rows);
    if (st != RL_OK)
        return st;
    char id[72];
    lower_id(d, id);
    *out = builtin_view(d, json_object_get(rows, id));
    json_decref(rows);
    return *out ? RL_OK : rl_error(RL_ERR_NOMEM, "builtin");
}

/* The {detector} of the path as a built-in; answers 404 otherwise. */
static bool path_builtin(rl_http_request_t *req, rl_dlp_builtin_t *d)
{
    const char *name = rl_http_param(req, "detector");
    if (name == NULL || strlen(name) > 64 || rl_dlp_builtin_parse(name, d) != RL_OK) {
        rl_http_respond_error(req, 404, "not_found", "no such built-in detector", NULL);
        return false;
    }
    return true;
}

void api_dlp_builtins_put(rl_http_request_t *req, void *ctx)
{
    json_t *body = rl_http_json_body(req);
    api_call_t call;
    rl_dlp_builtin_t d;
    /* the role before the name, so a viewer always learns it may not */
    if (body == NULL || !api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
        return;
    if (!path_builtin(req, &d)) {
        api_call_end(&call);
        return;
    }
    json_t *errors = json_object(), *before = NULL, *after = NULL;
    const char *sev = NULL, *act = NULL;
    bool enabled = true, has = false;
    bool ok = api_field_enum(body, "severity", false, severities, errors, &sev);
    ok = api_field_enum(body, "action", false, dlp_actions, errors, &act) && ok;
    ok = api_field_bool(body, "enabled", errors, &enabled, &has) && ok;
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v)
    {
        if (strcmp(k, "severity") && strcmp(k, "action") && strcmp(k, "enabled")) {
            api_field_error(errors, k, "is not a field of a built-in override");
            ok = false;
        }
    }
    char id[72], row_id[40];
    lower_id(d, id);
    api_new_id(row_id);
    rl_status_t st = ok ? rl_pg_begin(call.pg) : rl_error(RL_ERR_INVALID, "override");
    if (st == RL_OK)
        st = builtin_for(call.pg, call.actor.tenant_id, d, &before);
    if (st == RL_OK) {
        const char *p[] = {
            row_id, call.actor.tenant_id, id, (has && !enabled) ? "true" : "false", sev, act};
        PGresult *r = NULL;
        st =
            rl_pg_query(call.pg,
                        "INSERT INTO renlayer.dlp_builtin_overrides (id, tenant_id, detector, "
                        "disabled, severity, action) VALUES ($1, $2, $3, $4::boolean, $5, $6) "
                        "ON CONFLICT (tenant_id, detector) DO UPDATE SET disabled = "
                        "EXCLUDED.disabled, severity = EXCLUDED.severity, action = EXCLUDED.action",
                        6, p, &r);
        PQclear(r);
    }
    if (st == RL_OK)
        st = builtin_for(call.pg, call.actor.tenant_id, d, &after);
    if (st == RL_OK)
        st = api_audit(call.pg, &call.actor, "dlp_builtin.set", "dlp_builtin", id, before, after);
    api_call_finish(&call, st, 200, after, errors);
    json_decref(before);
    json_decref(after);
    json_decref(errors);
    api_call_end(&call);
}

void api_dlp_builtins_delete(rl_http_request_t *req, void *ctx)
{
    api_call_t call;
    rl_dlp_builtin_t d;
    if (!api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
        return;
    if (!path_builtin(req, &d)) {
        api_call_end(&call);
        return;
    }
    json_t *before = NULL, *after = NULL;
    char id[72];
    lower_id(d, id);
    rl_status_t st = rl_pg_begin(call.pg);
    if (st == RL_OK)
        st = builtin_for(call.pg, call.actor.tenant_id, d, &before);
    PGresult *r = NULL;
    if (st == RL_OK) {
        const char *p[] = {call.actor.tenant_id, id};
        st = rl_pg_query(call.pg,
                         "DELETE FROM renlayer.dlp_builtin_overrides WHERE tenant_id = $1 "
                         "AND detector = $2",
                         2, p, &r);
    }
    bool existed = st == RL_OK && rl_pg_rows_affected(r) > 0;
    PQclear(r);
    if (st == RL_OK)
        st = builtin_for(call.pg, call.actor.tenant_id, d, &after);
    if (st == RL_OK && existed)
        st = api_audit(call.pg, &call.actor, "dlp_builtin.reset", "dlp_builtin", id, before, after);
    api_call_finish(&call, st, 204, NULL, NULL);
    json_decref(before);
    json_decref(after);
    api_call_end(&call);
}

/* ---- custom rules -------------------------------------------------------------------------- */

static const char *const rule_by_id = "SELECT " API_DLP_RULE_JSON " FROM renlayer.dlp_rules r "
                                      "WHERE r.tenant_id = $1 AND r.id = $2";

/* Checks a rule body; create requires name, pattern, severity and action. The
 * pattern is checked as the engine will compile it. */
static bool valid_rule(const json_t *in, bool create, json_t *errors)
{
    const char *s;
    bool b, has;
    bool ok = true;
    if (create || json_object_get(in, "name"))
        ok = api_field_str(in, "name", true, RL_DLP_RULE_NAME_MAX, errors, &s) && ok;
    if (create || json_object_get(in, "severity"))
        ok = api_field_enum(in, "severity", true, severities, errors, &s) && ok;
    if (create || json_object_get(in, "action"))
        ok = api_field_enum(in, "action", true, dlp_actions, errors, &s) && ok;
    ok = api_field_enum(in, "scope", false, scopes, errors, &s) && ok;
    ok = api_field_bool(in, "enabled", errors, &b, &has) && ok;
    json_t *d = json_object_get(in, "description");
    size_t chars = 0;
    for (const char *c = json_string_value(d); c && *c; c++)
        chars += ((unsigned char)*c & 0xC0) != 0x80;
    if (d && !json_is_null(d) && (!json_is_string(d) || chars > 4000)) {
        api_field_error(errors, "description", "must be a string of at most 4000 characters");
        ok = false;
    }
    if (create || json_object_get(in, "pattern")) {
        json_t *pv = json_object_get(in, "pattern");
        if (!json_is_string(pv)) {
            api_field_error(errors, "pattern",
                            json_is_null(pv) || !pv ? "is required" : "must be a string");
            ok = false;
        } else {
            char msg[256];
            if (rl_dlp_validate_pattern(json_string_value(pv), msg, sizeof msg) != RL_OK) {
                api_field_error(errors, "pattern", msg);
                ok = false;
            }
        }
    }
    static const char *const known[] = {"name",   "description", "pattern", "severity",
                                        "action", "scope",       "enabled", NULL};
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)in, k, v)
    {
        bool found = false;
        for (size_t i = 0; known[i] && !found; i++)
            found = strcmp(k, known[i]) == 0;
        if (!found) {
            api_field_error(errors, k, "is not a field of a DLP rule");
            ok = false;
        }
    }
    return ok;
}

/* The columns of a rule from the JSON object $3 (absent optional fields take
 * their defaults). */
#define RULE_COLUMNS_FROM_3                                                                        \
    "$3::jsonb->>'name', COALESCE($3::jsonb->>'description', ''), $3::jsonb->>'pattern', "         \
    "$3::jsonb->>'severity', $3::jsonb->>'action', COALESCE($3::jsonb->>'scope', 'both'), "        \
    "COALESCE(($3::jsonb->>'enabled')::boolean, true)"

void api_dlp_rules_list(rl_http_request_t *req, void *ctx)
{
    api_call_t call;
    if (!api_call_begin(ctx, req, API_ROLE_VIEWER, &call))
        return;
    json_t *rules = NULL, *rows = NULL;
    const char *p[] = {call.actor.tenant_id};
    rl_status_t st = api_query_json(call.pg,
                                    "SELECT COALESCE(json_agg(" API_DLP_RULE_JSON
                                    " ORDER BY r.name), '[]'::json) FROM renlayer.dlp_rules r "
                                    "WHERE r.tenant_id = $1",
                                    1, p, &rules);
    if (st == RL_OK)
        st = overrides_by_id(call.pg, call.actor.tenant_id, &rows);
    if (st == RL_OK) {
        json_t *builtins = json_array();
        for (int d = 0; d < RL_DLP_BUILTIN_COUNT; d++) {
            char id[72];
            lower_id((rl_dlp_builtin_t)d, id);
            json_array_append_new(builtins,
                                  builtin_view((rl_dlp_builtin_t)d, json_object_get(rows, id)));
        }
        rl_http_respond_json(req, 200, json_pack("{s:O,s:o}", "data", rules, "builtins", builtins));
    } else {
        api_respond_status(req, st, NULL);
    }
    json_decref(rules);
    json_decref(rows);
    api_call_end(&call);
}

void api_dlp_rules_create(rl_http_request_t *req, void *ctx)
{
    json_t *body = rl_http_json_body(req);
    api_call_t call;
    if (body == NULL || !api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
        return;
    json_t *errors = json_object(), *out = NULL, *count = NULL;
    char id[40];
    api_new_id(id);
    char *text = json_dumps(body, JSON_COMPACT);
    const char *p[] = {call.actor.tenant_id, id, text};
    rl_status_t st = valid_rule(body, true, errors) ? rl_pg_begin(call.pg)
                                                    : rl_error(RL_ERR_INVALID, "DLP rule");
    /* the engine takes at most RL_DLP_RULES_MAX rules; the lock makes two
     * concurrent creates count one after the other */
    if (st == RL_OK) {
        PGresult *r = NULL;
        st = rl_pg_query(call.pg, "SELECT pg_advisory_xact_lock(hashtext('dlp_rules:' || $1))", 1,
                         p, &r);
        PQclear(r);
    }
    if (st == RL_OK)
        st = api_query_json(call.pg,
                            "SELECT to_json(count(*)) FROM renlayer.dlp_rules WHERE tenant_id = $1",
                            1, p, &count);
    if (st == RL_OK && json_integer_value(count) >= RL_DLP_RULES_MAX)
        st = rl_error(RL_ERR_CONFLICT, "a tenant has at most %d DLP rules", RL_DLP_RULES_MAX);
    if (st == RL_OK) {
        PGresult *r = NULL;
        st = rl_pg_query(
            call.pg,
            "INSERT INTO renlayer.dlp_rules (tenant_id, id, name, description, "
            "pattern, severity, action, scope, enabled) SELECT $1, $2, " RULE_COLUMNS_FROM_3,
            3, p, &r);
        PQclear(r);
        if (st == RL_ERR_CONFLICT)
            st = rl_error(RL_ERR_CONFLICT, "a DLP rule with that name exists already");
    }
    if (st == RL_OK)
        st = api_query_json(call.pg, rule_by_id, 2, p, &out);
    if (st == RL_OK)
        st = api_audit(call.pg, &call.actor, "dlp_rule.create", "dlp_rule", id, NULL, out);
    api_call_finish(&call, st, 201, out, errors);
    free(text);
    json_decref(count);
    json_decref(out);
    json_decref(errors);
    api_call_end(&call);
}

void api_dlp_rules_get(rl_http_request_t *req, void *ctx)
{
    api_get_for_tenant(req, ctx, rule_by_id);
}

void api_dlp_rules_patch(rl_http_request_t *req, void *ctx)
{
    const char *id = api_path_uuid(req, "id");
    json_t *body = id ? rl_http_json_body(req) : NULL;
    api_call_t call;
    if (body == NULL || !api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
        return;
    json_t *errors = json_object(), *before = NULL, *after = NULL, *merged = NULL;
    char *text = NULL;
    const char *p[] = {call.actor.tenant_id, id, NULL};
    rl_status_t st = valid_rule(body, false, errors) ? rl_pg_begin(call.pg)
                                                     : rl_error(RL_ERR_INVALID, "DLP rule");
    if (st == RL_OK)
        st = api_query_json(call.pg,
                            "SELECT " API_DLP_RULE_JSON " FROM renlayer.dlp_rules r "
                            "WHERE r.tenant_id = $1 AND r.id = $2 FOR UPDATE",
                            2, p, &before);
    if (st == RL_OK) {
        /* a null resets description, scope or enabled to its default */
        merged = json_deep_copy(before);
        json_object_update(merged, body);
        text = json_dumps(merged, JSON_COMPACT);
        p[2] = text;
        PGresult *r = NULL;
        st = rl_pg_query(call.pg,
                         "UPDATE renlayer.dlp_rules SET (name, description, pattern, severity, "
                         "action, scope, enabled) = (SELECT " RULE_COLUMNS_FROM_3
                         ") WHERE tenant_id = $1 AND id = $2",
                         3, p, &r);
        PQclear(r);
        if (st == RL_ERR_CONFLICT)
            st = rl_error(RL_ERR_CONFLICT, "a DLP rule with that name exists already");
    }
    if (st == RL_OK)
        st = api_query_json(call.pg, rule_by_id, 2, p, &after);
    if (st == RL_OK)
        st = api_audit(call.pg, &call.actor, "dlp_rule.update", "dlp_rule", id, before, after);
    api_call_finish(&call, st, 200, after, errors);
    free(text);
    json_decref(merged);
    json_decref(before);
    json_decref(after);
    json_decref(errors);
    api_call_end(&call);
}

void api_dlp_rules_delete(rl_http_request_t *req, void *ctx)
{
    api_delete_for_tenant(req, ctx,
                          "SELECT " API_DLP_RULE_JSON " FROM renlayer.dlp_rules r "
                          "WHERE r.tenant_id = $1 AND r.id = $2 FOR UPDATE",
                          "DELETE FROM renlayer.dlp_rules WHERE tenant_id = $1 AND id = $2",
                          "dlp_rule.delete", "dlp_rule");
}

/* ---- scan ---------------------------------------------------------------------------------- */

static const char *verdict_word(rl_dlp_verdict_t v)
{
    return v == RL_DLP_BLOCKED ? "blocked" : v == RL_DLP_WARNED ? "warned" : "clean";
}

void api_dlp_scan(rl_http_request_t *req, void *ctx)
{
    json_t *body = rl_http_json_body(req);
    api_call_t call;
    /* runs the tenant's rules on the caller's text: admins and owners, as the
     * rules themselves */
    if (body == NULL || !api_call_begin(ctx, req, API_ROLE_ADMIN, &call))
        return;
    json_t *errors = json_object();
    const char *where = NULL;
    static const char *const wheres[] = {"request", "response", NULL};
    json_t *tv = json_object_get(body, "text");
    bool ok = api_field_enum(body, "where", false, wheres, errors, &where);
    if (!json_is_string(tv)) {
        api_field_error(errors, "text", tv ? "must be a string" : "is required");
        ok = false;
    }
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v)
    {
        if (strcmp(k, "text") && strcmp(k, "where")) {
            api_field_error(errors, k, "is not a field of a scan request");
            ok = false;
        }
    }
    rl_dlp_engine_t *e = NULL;
    rl_dlp_findings_t f;
    rl_dlp_findings_init(&f, MAX_SCAN_FINDINGS);
    rl_status_t st = ok ? api_dlp_engine_for_tenant(call.pg, call.actor.tenant_id, &e)
                        : rl_error(RL_ERR_INVALID, "scan");
    /* the database is not needed past this point */
    api_call_end(&call);
    const char *text = json_string_value(tv);
    size_t len = json_string_length(tv);
    if (st == RL_OK) {
        rl_dlp_scope_t scope = (where && strcmp(where, "response") == 0) ? RL_DLP_SCOPE_RESPONSE
                                                                         : RL_DLP_SCOPE_REQUEST;
        st = rl_dlp_scan(e, scope, text, len, NULL, &f);
        if (st == RL_ERR_TIMEOUT) {
            rl_http_respond_error(req, 422, "scan_failed",
                                  "a pattern reached its match limit; the text was not fully "
                                  "scanned",
                                  NULL);
            goto done;
        }
    }
    if (st != RL_OK) {
        api_respond_status(req, st, errors);
        goto done;
    }
    rl_buf_t out;
    /* each marker replaces at least one byte with at most prefix + id + "]" */
    rl_buf_init(&out, len + f.len * (sizeof RL_DLP_REDACT_PREFIX + RL_DLP_RULE_ID_MAX + 2) + 1);
    st = rl_dlp_redact(text, len, 0, &f, &out);
    json_t *findings = json_array();
    for (size_t i = 0; i < f.len; i++) {
        const rl_dlp_finding_t *x = &f.items[i];
        json_array_append_new(findings,
                              json_pack("{s:s,s:s,s:I,s:I,s:s,s:b}", "detector", x->detector,
                                        "severity", rl_dlp_severity_str(x->severity), "start",
                                        (json_int_t)x->start, "end", (json_int_t)x->end, "action",
                                        rl_dlp_action_str(x->action), "builtin", x->builtin >= 0));
    }
    json_t *redacted = st == RL_OK ? json_stringn(out.data ? out.data : "", out.len) : json_null();
    rl_http_respond_json(req, 200,
                         json_pack("{s:o,s:o,s:s,s:I}", "findings", findings, "redacted",
                                   redacted ? redacted : json_null(), "verdict",
                                   verdict_word(rl_dlp_verdict(&f)), "dropped",
                                   (json_int_t)f.dropped));
    rl_buf_free(&out);
done:
    rl_dlp_findings_free(&f);
    rl_dlp_engine_release(e);
    json_decref(errors);
}
