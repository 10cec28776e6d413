/* Statistics over traces: GET /v1/stats/overview, per time bucket, in total
 * and for the top agents by cost, computed by PostgreSQL from the tenant's
 * traces in [from, to) (the partition key bounds the scan). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_call.h"
#include "api_routes.h"
#include "api_validate.h"
#include "api_views.h"

/* At most this many buckets in one answer: 1000 minutes is about 16 h, 1000
 * hours about 6 weeks, 1000 days about 2.7 years. */
#define MAX_BUCKETS 1000
#define MAX_BUCKETS_TEXT "1000"

/* The aggregates API_TRACE_STATS_FIELDS shows, over rows x of traces (x.b
 * is never NULL, so count(x.b) is 0 for a bucket without traces). An error
 * is a trace whose client got a 4xx/5xx or that recorded an error. */
#define AGGREGATES                                                                            \
    "count(x.b) AS n_requests, "                                                              \
    "count(*) FILTER (WHERE x.status = 'ALLOWED') AS n_allowed, "                             \
    "count(*) FILTER (WHERE x.status = 'FLAGGED') AS n_flagged, "                             \
    "count(*) FILTER (WHERE x.status = 'DENIED') AS n_denied, "                               \
    "count(*) FILTER (WHERE x.status = 'DLP_BLOCKED') AS n_dlp_blocked, "                     \
    "count(*) FILTER (WHERE x.status = 'DLP_WARNED') AS n_dlp_warned, "                       \
    "count(*) FILTER (WHERE x.failed) AS n_errors, "                                          \
    "COALESCE(sum(x.input_tokens), 0) AS sum_input, "                                         \
    "COALESCE(sum(x.output_tokens), 0) AS sum_output, "                                       \
    "COALESCE(sum(x.total_tokens), 0) AS sum_total, "                                         \
    "COALESCE(sum(x.cost_usd), 0) AS sum_cost, "                                              \
    "percentile_cont(0.5) WITHIN GROUP (ORDER BY x.latency_ms) AS p50, "                      \
    "percentile_cont(0.95) WITHIN GROUP (ORDER BY x.latency_ms) AS p95"

static const char *const buckets[] = {"minute", "hour", "day", NULL};

/* $1 from, $2 to (either may be NULL), $3 bucket: the window with its
 * defaults (to = now, from = to - 24 h) in UTC text, whether it is not empty,
 * and how many buckets it spans. from is raised to 1970 (no trace is older:
 * UUIDv7 time starts there), which also keeps BC years, that the text form
 * would lose, out of the window. */
static const char *const resolve_sql =
    "SELECT " API_UTC("w.f") ", " API_UTC("w.t") ", w.t > w.f, "
    "CASE WHEN w.t > w.f THEN floor(extract(epoch FROM "
    "date_trunc($3, (w.t AT TIME ZONE 'UTC') - interval '1 microsecond') "
    "- date_trunc($3, w.f AT TIME ZONE 'UTC')) "
    "/ extract(epoch FROM ('1 ' || $3)::interval))::bigint + 1 ELSE 0 END "
    "FROM (SELECT GREATEST(COALESCE($1::timestamptz, COALESCE($2::timestamptz, now()) "
    "- interval '24 hours'), '1970-01-01T00:00:00Z') AS f, "
    "COALESCE($2::timestamptz, now()) AS t) w";

/* $1 tenant, $2 from, $3 to (resolved), $4 bucket. Buckets are UTC-aligned
 * and dense: every bucket that meets [from, to) is listed, empty ones too. */
static const char *const overview_sql =
    "WITH x AS MATERIALIZED ("
    " SELECT date_trunc($4, t.started_at AT TIME ZONE 'UTC') AS b, t.agent_id, t.status,"
    " t.input_tokens, t.output_tokens, t.total_tokens, t.cost_usd, t.latency_ms,"
    " (t.error IS NOT NULL OR t.http_status >= 400) AS failed"
    " FROM renlayer.traces t"
    " WHERE t.tenant_id = $1 AND t.started_at >= $2::timestamptz"
    " AND t.started_at < $3::timestamptz), "
    "per_bucket AS ("
    " SELECT s.b, " AGGREGATES
    " FROM generate_series(date_trunc($4, $2::timestamptz AT TIME ZONE 'UTC'),"
    " ($3::timestamptz AT TIME ZONE 'UTC') - interval '1 microsecond',"
    " ('1 ' || $4)::interval) AS s(b)"
    " LEFT JOIN x ON x.b = s.b GROUP BY s.b), "
    "per_agent AS ("
    " SELECT x.agent_id, " AGGREGATES " FROM x GROUP BY x.agent_id"
    " ORDER BY sum_cost DESC, n_requests DESC, x.agent_id LIMIT 10) "
    "SELECT json_build_object("
    "'from', " API_UTC("$2::timestamptz") ", 'to', " API_UTC("$3::timestamptz") ", "
    "'bucket', $4::text, "
    "'buckets', COALESCE((SELECT json_agg(json_build_object('start', " API_UTC_TEXT("g.b") ", "
    API_TRACE_STATS_FIELDS ") ORDER BY g.b) FROM per_bucket g), '[]'::json), "
    "'totals', (SELECT json_build_object(" API_TRACE_STATS_FIELDS ")"
    " FROM (SELECT " AGGREGATES " FROM x) g), "
    "'top_agents', COALESCE((SELECT json_agg(json_build_object('agent_id', g.agent_id, "
    "'name', (SELECT a.name FROM renlayer.agents a WHERE a.tenant_id = $1 AND a.id = g.agent_id), "
    API_TRACE_STATS_FIELDS ") ORDER BY g.sum_cost DESC, g.n_requests DESC, g.agent_id) "
    "FROM per_agent g), '[]'::json))";

void api_stats_overview(rl_http_request_t *req, void *ctx)
{
    json_t *errors = json_object();
    char from[64], to[64];
    api_trace_window_parse(req, errors, from, to);
    const char *bucket = rl_http_query(req, "bucket");
    if (bucket == NULL || *bucket == '\0')
        bucket = "hour";
    bool known = false;
    for (const char *const *b = buckets; *b; b++)
        known = known || strcmp(bucket, *b) == 0;
    if (!known)
        api_field_error(errors, "bucket", "must be one of minute, hour, day");
    if (json_object_size(errors) > 0) {
        rl_http_respond_error(req, 400, "validation_failed", "invalid query", errors);
        return;
    }

    api_call_t call;
    if (!api_call_begin(ctx, req, API_ROLE_VIEWER, &call)) {
        json_decref(errors);
        return;
    }
    const char *rp[] = {from[0] ? from : NULL, to[0] ? to : NULL, bucket};
    PGresult *r = NULL;
    rl_status_t st = rl_pg_query(call.pg, resolve_sql, 3, rp, &r);
    if (st != RL_OK) {
        json_decref(errors);
        api_respond_status(req, st, NULL);
        api_call_end(&call);
        return;
    }
    char f[64], t[64];
    snprintf(f, sizeof f, "%s", PQgetvalue(r, 0, 0));
    snprintf(t, sizeof t, "%s", PQgetvalue(r, 0, 1));
    bool nonempty = strcmp(PQgetvalue(r, 0, 2), "t") == 0;
    long long n = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
    PQclear(r);
    if (!nonempty)
        api_field_error(errors, to[0] ? "to" : "from",
                        to[0] ? "must be after from" : "must be in the past");
    else if (n > MAX_BUCKETS)
        api_field_error(errors, "bucket",
                        "too many buckets for this range (at most " MAX_BUCKETS_TEXT
                        "): choose a larger bucket or a shorter range");
    if (json_object_size(errors) > 0) {
        rl_http_respond_error(req, 400, "validation_failed", "invalid query", errors);
        api_call_end(&call);
        return;
    }
    json_decref(errors);
    const char *p[] = {call.actor.tenant_id, f, t, bucket};
    api_respond_one(req, call.pg, 200, overview_sql, 4, p);
    api_call_end(&call);
}
