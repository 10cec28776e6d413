/* Traces, read side: GET /v1/traces (filtered, keyset-paginated summaries)
 * and GET /v1/traces/{id} (one trace with its children). The trace-writer
 * writes them (docs/schema.md); every query names the partition key
 * started_at, so only the days asked for are scanned. */
#include <stdio.h>
#include <string.h>

#include "api_call.h"
#include "api_routes.h"
#include "api_validate.h"
#include "api_views.h"

/* Free-text filters match columns the proxy cuts at 4 KiB (docs/bus.md). */
#define FILTER_MAX 4096

static const char *const statuses[] = {"ALLOWED", "FLAGGED", "DENIED", "DLP_BLOCKED",
                                       "DLP_WARNED", NULL};
static const char *const actions[] = {"chat", "embedding", "mcp", "tool_call", "http", NULL};

static bool one_of(const char *s, const char *const *choices)
{
    for (; *choices; choices++)
        if (strcmp(s, *choices) == 0)
            return true;
    return false;
}

/* The query parameter name, NULL when absent or empty. */
static const char *query_opt(rl_http_request_t *req, const char *name)
{
    const char *v = rl_http_query(req, name);
    return v && *v ? v : NULL;
}

static int num(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

static int days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

/* True when s, which api_valid_timestamp accepts, has fields in range;
 * *has_offset tells whether it names its offset (Z or ±hh[:mm]). */
static bool time_in_range(const char *s, bool *has_offset)
{
    int y = num(s, 4), mo = num(s + 5, 2), d = num(s + 8, 2);
    *has_offset = false;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo))
        return false;
    const char *p = s + 10;
    if (*p == '\0')
        return true;
    if (num(p + 1, 2) > 23 || num(p + 4, 2) > 59)
        return false;
    p += 6;
    if (*p == ':') {
        if (num(p + 1, 2) > 59)
            return false;
        p += 3;
        if (*p == '.')
            for (p++; *p >= '0' && *p <= '9'; p++)
                ;
    }
    if (*p == '\0')
        return true;
    *has_offset = true;
    if (*p == 'Z' || *p == 'z')
        return true;
    /* ±hh, ±hhmm or ±hh:mm */
    const char *mm = p[3] == ':' ? p + 4 : p + 3;
    return num(p + 1, 2) <= 15 && (*mm == '\0' || num(mm, 2) <= 59);
}

static void window_field(rl_http_request_t *req, const char *name, json_t *errors, char out[64])
{
    const char *v = query_opt(req, name);
    bool has_offset = false;
    out[0] = '\0';
    if (v == NULL)
        return;
    if (strlen(v) > 60 || !api_valid_timestamp(v) || !time_in_range(v, &has_offset)) {
        api_field_error(errors, name, "must be an ISO 8601 timestamp such as 2030-01-01T00:00:00Z");
        return;
    }
    snprintf(out, 64, "%s%s", v, has_offset ? "" : "Z");
}

bool api_trace_window_parse(rl_http_request_t *req, json_t *errors, char from[64], char to[64])
{
    size_t before = json_object_size(errors);
    window_field(req, "from", errors, from);
    window_field(req, "to", errors, to);
    return json_object_size(errors) == before;
}

void api_traces_list(rl_http_request_t *req, void *ctx)
{
    api_page_t page;
    if (!api_page_parse(req, &page))
        return;
    json_t *errors = json_object();
    char from[64], to[64];
    api_trace_window_parse(req, errors, from, to);
    const char *agent = query_opt(req, "agent"), *gate = query_opt(req, "gate"),
               *status = query_opt(req, "status"), *action = query_opt(req, "action"),
               *user = query_opt(req, "user"), *session = query_opt(req, "session"),
               *model = query_opt(req, "model");
    if (agent && !api_valid_uuid(agent))
        api_field_error(errors, "agent", "must be an agent id");
    if (gate && !api_valid_uuid(gate))
        api_field_error(errors, "gate", "must be a gate id");
    if (status && !one_of(status, statuses))
        api_field_error(errors, "status",
                        "must be one of ALLOWED, FLAGGED, DENIED, DLP_BLOCKED, DLP_WARNED");
    if (action && !one_of(action, actions))
        api_field_error(errors, "action", "must be one of chat, embedding, mcp, tool_call, http");
    if (user && strlen(user) > FILTER_MAX)
        api_field_error(errors, "user", "must be at most 4096 bytes");
    if (session && strlen(session) > FILTER_MAX)
        api_field_error(errors, "session", "must be at most 4096 bytes");
    if (model && strlen(model) > FILTER_MAX)
        api_field_error(errors, "model", "must be at most 4096 bytes");
    if (json_object_size(errors) > 0) {
        rl_http_respond_error(req, 400, "validation_failed", "invalid filter", errors);
        return;
    }
    json_decref(errors);

    api_call_t call;
    if (!api_call_begin(ctx, req, API_ROLE_VIEWER, &call))
        return;
    const char *p[] = {call.actor.tenant_id,
                       page.after[0] ? page.after : NULL,
                       page.limit_plus_one,
                       from[0] ? from : NULL,
                       to[0] ? to : NULL,
                       agent,
                       gate,
                       status,
                       action,
                       user,
                       session,
                       model};
    /* Both started_at bounds are always set (to defaults to now, not to no
     * bound, or every partition created ahead would be scanned) and compared
     * with stable expressions, so PostgreSQL prunes the days outside
     * [from, to) when the executor starts; a cursor also bounds the range
     * from above (its id's time + 1 h, the CHECK on trace ids). */
    api_respond_page(req, call.pg, &page,
                     "SELECT t.trace_id::text, " API_TRACE_SUMMARY_JSON " FROM renlayer.traces t "
                     "WHERE t.tenant_id = $1 "
                     "AND t.started_at >= COALESCE($4::timestamptz, "
                     "COALESCE($5::timestamptz, now()) - interval '24 hours') "
                     "AND t.started_at < COALESCE($5::timestamptz, now()) "
                     "AND t.started_at <= COALESCE(renlayer.uuid_v7_time($2::uuid) "
                     "+ interval '1 hour', 'infinity') "
                     "AND ($2::uuid IS NULL OR t.trace_id < $2::uuid) "
                     "AND ($6::uuid IS NULL OR t.agent_id = $6::uuid) "
                     "AND ($7::uuid IS NULL OR t.gate_id = $7::uuid) "
                     "AND ($8::text IS NULL OR t.status = $8) "
                     "AND ($9::text IS NULL OR t.action = $9) "
                     "AND ($10::text IS NULL OR t.end_user = $10) "
                     "AND ($11::text IS NULL OR t.session_key = $11) "
                     "AND ($12::text IS NULL OR t.model = $12) "
                     "ORDER BY t.trace_id DESC LIMIT $3",
                     12, p);
    api_call_end(&call);
}

void api_traces_get(rl_http_request_t *req, void *ctx)
{
    const char *id = api_path_uuid(req, "id");
    if (id == NULL)
        return;
    /* Only a UUIDv7 can be a trace id (the CHECK on traces). */
    if (id[14] != '7') {
        rl_http_respond_error(req, 404, "not_found", "not found", NULL);
        return;
    }
    api_call_t call;
    if (!api_call_begin(ctx, req, API_ROLE_VIEWER, &call))
        return;
    const char *p[] = {call.actor.tenant_id, id};
    /* By id alone: the id's time ± 1 h prunes to at most two days. */
    api_respond_one(req, call.pg, 200,
                    "SELECT " API_TRACE_JSON " FROM renlayer.traces t "
                    "WHERE t.tenant_id = $1 AND t.trace_id = $2::uuid "
                    "AND t.started_at BETWEEN renlayer.uuid_v7_time($2::uuid) - interval '1 hour' "
                    "AND renlayer.uuid_v7_time($2::uuid) + interval '1 hour'",
                    2, p);
    api_call_end(&call);
}
