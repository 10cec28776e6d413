/* Fuzzes the trace encoder (px_trace_encode), which writes JSON by hand:
 * every free-text field, both bodies, the numbers and the times come from
 * the input.
 *
 * Input: [flags][body_max][3 doubles][2 int64 times][fields, each a length
 * byte then its bytes][request body (2-byte length)][response body].
 * Properties: a trace and a decision are always one JSON object jansson
 * accepts (so valid UTF-8, no NUL); a field that is valid UTF-8 without NUL
 * comes back exactly; a body longer than body_max comes back as a prefix of
 * at most body_max bytes with "truncated": true; numbers are finite or
 * null; times equal gmtime_r's reading of the same instant. */
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "fuzz_support.h"
#include "px_trace.h"

#define NFIELDS 8

static double take_double(fuzz_input_t *in)
{
    uint64_t bits = 0;
    for (int i = 0; i < 8; i++)
        bits = bits << 8 | fuzz_byte(in);
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

static int64_t take_i64(fuzz_input_t *in)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | fuzz_byte(in);
    return (int64_t)v;
}

static void check_field(const json_t *o, const char *key, const char *sent)
{
    json_t *v = json_object_get(o, key);
    if (sent == NULL) {
        FUZZ_CHECK(json_is_null(v), "%s: null expected", key);
        return;
    }
    FUZZ_CHECK(json_is_string(v), "%s is not a string", key);
    size_t n = strlen(sent);
    if (fuzz_plain_utf8(sent, n))
        FUZZ_CHECK(fuzz_same_bytes(json_string_value(v), json_string_length(v), sent, n),
                   "%s did not come back as sent", key);
}

static void check_body(const json_t *o, const char *key, const char *sent, size_t n,
                       size_t body_max)
{
    json_t *v = json_object_get(o, key);
    FUZZ_CHECK(json_is_string(v), "%s is not a string", key);
    const char *got = json_string_value(v);
    size_t got_len = json_string_length(v);
    if (!fuzz_plain_utf8(sent, n))
        return;
    if (n <= body_max) {
        FUZZ_CHECK(fuzz_same_bytes(got, got_len, sent, n), "%s changed", key);
    } else {
        FUZZ_CHECK(
            got_len <= body_max && got_len + 3 >= body_max && memcmp(got, sent, got_len) == 0,
            "%s: %zu bytes kept of %zu (max %zu), or not a prefix", key, got_len, n, body_max);
        FUZZ_CHECK(json_is_true(json_object_get(o, "truncated")), "%s cut, truncated not set", key);
    }
}

static void check_time(const json_t *o, const char *key, int64_t us)
{
    json_t *v = json_object_get(o, key);
    if (us <= 0 || us >= 253402300800000000LL) {
        FUZZ_CHECK(json_is_null(v), "%s: null expected for %lld", key, (long long)us);
        return;
    }
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    FUZZ_CHECK(gmtime_r(&secs, &tm) != NULL, "gmtime_r");
    char want[40];
    snprintf(want, sizeof want, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (long long)(us % 1000000));
    FUZZ_CHECK(json_is_string(v) && strcmp(json_string_value(v), want) == 0, "%s: %s, want %s", key,
               json_string_value(v), want);
}

static void check_number(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    FUZZ_CHECK(json_is_null(v) || (json_is_number(v) && isfinite(json_number_value(v)) &&
                                   json_number_value(v) >= 0),
               "%s: not a finite non-negative number or null", key);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input_t in = {data, size};
    uint8_t flags = fuzz_byte(&in);
    size_t body_max = 1 + fuzz_byte(&in) * 4u;

    static px_trace_t t; /* 20 KB: not on the stack */
    memset(&t, 0, sizeof t);
    snprintf(t.trace_id, sizeof t.trace_id, "01a209fb-cbc0-71ae-8c0a-7fbcc2c9574f");
    snprintf(t.tenant_id, sizeof t.tenant_id, "01a209fa-74d4-7694-afc4-f4506c679402");
    snprintf(t.agent_id, sizeof t.agent_id, "01a209fa-74ea-7061-a427-2ef444f05c25");
    t.cost_usd = take_double(&in);
    t.latency_ms = take_double(&in);
    t.upstream_ms = take_double(&in);
    t.started_at_us = take_i64(&in);
    t.ended_at_us = take_i64(&in);
    t.http_status = (int)(take_i64(&in) % 1000);
    t.action = (px_action_t)(flags % 5);
    t.stream = flags & 8;
    t.usage.present = flags & 16;
    t.usage.input_tokens = flags & 32 ? -5 : 12;

    char *f[NFIELDS];
    for (int i = 0; i < NFIELDS; i++)
        f[i] = fuzz_take_str(&in, 255);
    bool nulls = flags & 64;
    t.user = nulls ? NULL : f[0];
    t.session_id = f[1];
    t.method = f[2];
    t.path = f[3];
    t.upstream = nulls ? NULL : f[4];
    t.status = f[5];
    t.error = nulls ? NULL : f[6];
    t.reason = f[7];
    snprintf(t.model, sizeof t.model, "%s", f[4]);
    t.policy_ids[0] = f[7];
    t.npolicy_ids = 1;
    snprintf(t.findings[0].detector, sizeof t.findings[0].detector, "%s", f[5]);
    t.nfindings = 1;
    px_tool_call_t call = {.phase = PX_TOOL_RESULT};
    snprintf(call.name, sizeof call.name, "%s", f[6]);
    snprintf(call.id, sizeof call.id, "%s", f[1]);
    t.tool_calls = &call;
    t.ntool_calls = 1;
    snprintf(t.attempts[0].error, sizeof t.attempts[0].error, "%s", f[3]);
    t.attempts[0].ms = t.upstream_ms;
    t.nattempts = 1;
    size_t rq = (size_t)fuzz_byte(&in) << 8 | fuzz_byte(&in);
    rq = rq < in.n ? rq : in.n;
    t.request_body = (const char *)in.p;
    t.request_body_len = rq;
    t.response_body = (const char *)in.p + rq;
    t.response_body_len = in.n - rq;

    for (int decision = 0; decision < 2; decision++) {
        rl_buf_t out;
        rl_buf_init(&out, 64u << 20);
        FUZZ_CHECK(px_trace_encode(&t, decision, body_max, &out) == RL_OK, "encode");
        json_error_t err;
        json_t *o = json_loadb(out.data, out.len, JSON_REJECT_DUPLICATES, &err);
        FUZZ_CHECK(json_is_object(o), "%s is not JSON: %s at %d: %.*s",
                   decision ? "decision" : "trace", err.text, err.position,
                   (int)(out.len < 400 ? out.len : 400), out.data);
        check_field(o, "user", t.user);
        check_field(o, "session_id", t.session_id);
        check_field(o, "method", t.method);
        check_field(o, "path", t.path);
        check_field(o, "status", t.status);
        if (!decision) {
            check_field(o, "upstream", t.upstream);
            check_field(o, "error", t.error);
            check_body(o, "request_body", t.request_body, t.request_body_len, body_max);
            check_body(o, "response_body", t.response_body, t.response_body_len, body_max);
            check_number(o, "cost_usd");
            check_number(o, "latency_ms");
            check_number(o, "upstream_ms");
            check_time(o, "started_at", t.started_at_us);
            check_time(o, "ended_at", t.ended_at_us);
        }
        json_decref(o);
        rl_buf_free(&out);
    }
    for (int i = 0; i < NFIELDS; i++)
        free(f[i]);
    return 0;
}
