/* Tests services/proxy/px_trace.c: the v1 trace and decision encodings (read
 * back with jansson and validated against docs/schemas/{trace,decision}.v1.json) and the
 * publisher against a real nats-server that each publisher test starts, stops
 * and restarts in a store folder of its own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "px_trace.h"
#include "rl_buf.h"
#include "rl_uuid.h"
#include "rl_test_servers.h"

#define TRACE_ID "0192a7c3-5b6c-7d8e-9f01-23456789abcd"
#define TENANT "0191c9a4-7b1e-7c3a-9f1e-2b6c8d4e5f60"
#define AGENT "0191c9a4-7b1e-7c3a-9f1e-2b6c8d4e5f61"
#define GATE "0191c9a4-7b1e-7c3a-9f1e-2b6c8d4e5f62"
#define KEY "0191c9a4-7b1e-7c3a-9f1e-2b6c8d4e5f63"
#define POLICY1 "0191c9a4-7b1e-7c3a-9f1e-2b6c8d4e5f64"
#define POLICY2 "0191c9a4-7b1e-7c3a-9f1e-2b6c8d4e5f65"
#define FALLBACK_GATE "0191c9a4-7b1e-7c3a-9f1e-2b6c8d4e5f66"
#define SHA_A "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
#define SHA_B "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
#define WAIT_MS 20000 /* bound of every wait for the server, the bus or the spool */

/* ==== a JSON Schema 2020-12 subset: the keywords docs/schemas use =========== */

static json_t *load_schema(const char *name)
{
    char rel[128], path[1024];
    snprintf(rel, sizeof rel, "docs/schemas/%s", name);
    if (!rl_test_source_path(rel, path, sizeof path))
        fail_msg("%s not found (set RL_SOURCE_DIR)", rel);
    json_error_t err;
    json_t *s = json_load_file(path, 0, &err);
    if (!s)
        fail_msg("%s: %s (line %d)", path, err.text, err.line);
    return s;
}

static bool type_is(const json_t *v, const char *t)
{
    if (!strcmp(t, "null"))
        return json_is_null(v);
    if (!strcmp(t, "boolean"))
        return json_is_boolean(v);
    if (!strcmp(t, "object"))
        return json_is_object(v);
    if (!strcmp(t, "array"))
        return json_is_array(v);
    if (!strcmp(t, "string"))
        return json_is_string(v);
    if (!strcmp(t, "number"))
        return json_is_number(v);
    if (!strcmp(t, "integer"))
        return json_is_integer(v) ||
               (json_is_real(v) && json_real_value(v) == (double)(long long)json_real_value(v));
    fail_msg("schema: unknown type %s", t);
    return false;
}

static bool pattern_matches(const char *pattern, const char *s)
{
    int errc;
    PCRE2_SIZE erroff;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &errc, &erroff, NULL);
    if (!re)
        fail_msg("schema: bad pattern %s", pattern);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    int rc = pcre2_match(re, (PCRE2_SPTR)s, strlen(s), 0, 0, md, NULL);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return rc >= 0;
}

static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* Validates inst against schema; on failure writes where and why to err. */
static bool validate(const json_t *root, const json_t *schema, const json_t *inst, const char *at,
                     char *err, size_t cap)
{
#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, cap, __VA_ARGS__);                                                           \
        return false;                                                                              \
    } while (0)
    const char *k;
    json_t *kv;
    json_object_foreach((json_t *)schema, k, kv)
    {
        if (!strcmp(k, "$schema") || !strcmp(k, "$id") || !strcmp(k, "title") ||
            !strcmp(k, "description") || !strcmp(k, "$defs") || !strcmp(k, "format"))
            continue;
        if (!strcmp(k, "$ref")) {
            const char *ref = json_string_value(kv);
            assert_non_null(ref);
            assert_true(strncmp(ref, "#/$defs/", 8) == 0);
            json_t *def = json_object_get(json_object_get(root, "$defs"), ref + 8);
            if (!def)
                fail_msg("schema: unresolved %s", ref);
            if (!validate(root, def, inst, at, err, cap))
                return false;
        } else if (!strcmp(k, "type")) {
            bool ok = false;
            if (json_is_string(kv)) {
                ok = type_is(inst, json_string_value(kv));
            } else {
                size_t i;
                json_t *t;
                json_array_foreach(kv, i, t) ok = ok || type_is(inst, json_string_value(t));
            }
            if (!ok)
                FAIL("%s: wrong type", at);
        } else if (!strcmp(k, "const")) {
            if (!json_equal(kv, (json_t *)inst))
                FAIL("%s: not the const", at);
        } else if (!strcmp(k, "enum")) {
            bool ok = false;
            size_t i;
            json_t *e;
            json_array_foreach(kv, i, e) ok = ok || json_equal(e, (json_t *)inst);
            if (!ok)
                FAIL("%s: not in enum", at);
        } else if (!strcmp(k, "pattern")) {
            if (json_is_string(inst) &&
                !pattern_matches(json_string_value(kv), json_string_value(inst)))
                FAIL("%s: \"%s\" does not match %s", at, json_string_value(inst),
                     json_string_value(kv));
        } else if (!strcmp(k, "maxLength")) {
            if (json_is_string(inst) &&
                utf8_chars(json_string_value(inst)) > (size_t)json_integer_value(kv))
                FAIL("%s: too long", at);
        } else if (!strcmp(k, "minimum")) {
            if (json_is_number(inst) && json_number_value(inst) < json_number_value(kv))
                FAIL("%s: below minimum", at);
        } else if (!strcmp(k, "maximum")) {
            if (json_is_number(inst) && json_number_value(inst) > json_number_value(kv))
                FAIL("%s: above maximum", at);
        } else if (!strcmp(k, "required")) {
            size_t i;
            json_t *r;
            if (json_is_object(inst))
                json_array_foreach(kv, i, r) if (!json_object_get(inst, json_string_value(r)))
                    FAIL("%s: missing %s", at, json_string_value(r));
        } else if (!strcmp(k, "properties")) {
            const char *pk;
            json_t *pv;
            if (json_is_object(inst))
                json_object_foreach(kv, pk, pv)
                {
                    json_t *iv = json_object_get(inst, pk);
                    char sub[256];
                    snprintf(sub, sizeof sub, "%s.%s", at, pk);
                    if (iv && !validate(root, pv, iv, sub, err, cap))
                        return false;
                }
        } else if (!strcmp(k, "additionalProperties")) {
            assert_true(json_is_false(kv)); /* the only form used */
            const char *ik;
            json_t *iv;
            json_t *props = json_object_get(schema, "properties");
            if (json_is_object(inst))
                json_object_foreach((json_t *)inst, ik, iv) if (!json_object_get(props, ik))
                    FAIL("%s: unexpected field %s", at, ik);
        } else if (!strcmp(k, "items")) {
            size_t i;
            json_t *item;
            if (json_is_array(inst))
                json_array_foreach(inst, i, item)
                {
                    char sub[256];
                    snprintf(sub, sizeof sub, "%s[%zu]", at, i);
                    if (!validate(root, kv, item, sub, err, cap))
                        return false;
                }
        } else {
            fail_msg("schema keyword %s is not supported by this test's validator", k);
        }
    }
    return true;
#undef FAIL
}

static void assert_valid(const char *schema_file, const json_t *msg)
{
    json_t *schema = load_schema(schema_file);
    char err[512] = "";
    bool ok = validate(schema, schema, msg, "$", err, sizeof err);
    json_decref(schema);
    if (!ok)
        fail_msg("%s: %s", schema_file, err);
}

/* ==== encoding ============================================================== */

static const px_tool_call_t TOOLS[2] = {
    {.name = "get_weather", .id = "call_1", .phase = PX_TOOL_REQUESTED, .args_sha256 = SHA_A},
    {.name = "", .id = "toolu_2", .phase = PX_TOOL_RESULT, .args_sha256 = SHA_B},
};

static void full_trace(px_trace_t *t)
{
    memset(t, 0, sizeof *t);
    snprintf(t->trace_id, sizeof t->trace_id, "%s", TRACE_ID);
    snprintf(t->tenant_id, sizeof t->tenant_id, "%s", TENANT);
    snprintf(t->agent_id, sizeof t->agent_id, "%s", AGENT);
    snprintf(t->gate_id, sizeof t->gate_id, "%s", GATE);
    snprintf(t->api_key_id, sizeof t->api_key_id, "%s", KEY);
    t->user = "alice@example.com";
    t->session_id = "run-42";
    t->action = PX_ACTION_TOOL_CALL;
    t->method = "POST";
    t->path = "/v1/chat/completions";
    snprintf(t->model, sizeof t->model, "%s", "gpt-4o-mini");
    t->upstream = "https://api.openai.com";
    t->status = PX_STATUS_DLP_WARNED;
    t->http_status = 200;
    t->policy_ids[0] = POLICY1;
    t->policy_ids[1] = POLICY2;
    t->npolicy_ids = 2;
    t->findings[0] = (px_finding_t){"EMAIL", "medium", "request", "redact"};
    t->findings[1] = (px_finding_t){"CREDIT_CARD", "high", "response", "warn"};
    t->nfindings = 2;
    t->tool_calls = TOOLS;
    t->ntool_calls = 2;
    t->usage = (px_usage_t){.input_tokens = 1200,
                            .output_tokens = 85,
                            .cached_input_tokens = 1024,
                            .cache_write_tokens = 0,
                            .reasoning_tokens = 12,
                            .total_tokens = 1285,
                            .present = true};
    t->cost_usd = 0.0003;
    t->latency_ms = 812.4567;
    t->upstream_ms = 790.25;
    t->overhead_us = 310;
    t->started_at_us = 1729425296123456LL;
    t->ended_at_us = 1729425296987654LL;
    t->stream = true;
    t->error = NULL;
    snprintf(t->attempts[0].gate_id, sizeof t->attempts[0].gate_id, "%s", GATE);
    snprintf(t->attempts[0].upstream, sizeof t->attempts[0].upstream, "%s",
             "https://api.example.net");
    t->attempts[0].http_status = 0;
    snprintf(t->attempts[0].error, sizeof t->attempts[0].error, "%s", "connect timeout");
    t->attempts[0].ms = 250;
    snprintf(t->attempts[1].gate_id, sizeof t->attempts[1].gate_id, "%s", FALLBACK_GATE);
    snprintf(t->attempts[1].upstream, sizeof t->attempts[1].upstream, "%s",
             "https://api.openai.com");
    t->attempts[1].http_status = 200;
    t->attempts[1].ms = 540.5;
    t->nattempts = 2;
    t->request_body =
        "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi [EMAIL]\"}]}";
    t->request_body_len = strlen(t->request_body);
    t->response_body = "data: {\"choices\":[]}\n\n";
    t->response_body_len = strlen(t->response_body);
    t->reason = "policy 'no-pii' flagged EMAIL";
}

/* Encodes t, checks the text parses, validates it, returns the object. */
static json_t *encode(const px_trace_t *t, bool decision, size_t body_max, rl_buf_t *b)
{
    rl_buf_reset(b);
    rl_status_t st = px_trace_encode(t, decision, body_max, b);
    if (st != RL_OK)
        fail_msg("px_trace_encode: %s: %s", rl_status_str(st), rl_error_last());
    json_error_t err;
    json_t *j = json_loadb(b->data, b->len, JSON_REJECT_DUPLICATES, &err);
    if (!j)
        fail_msg("not JSON: %s in %s", err.text, b->data);
    assert_valid(decision ? "decision.v1.json" : "trace.v1.json", j);
    return j;
}

static const char *str(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_string(v))
        fail_msg("%s is not a string", k);
    return json_string_value(v);
}

static void expect_json_null(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_null(v))
        fail_msg("%s is not null", k);
}

static void test_encode_trace_every_field(void **state)
{
    (void)state;
    px_trace_t t;
    full_trace(&t);
    rl_buf_t b;
    rl_buf_init(&b, 1 << 20);
    json_t *j = encode(&t, false, 0, &b);

    assert_int_equal(json_integer_value(json_object_get(j, "v")), 1);
    assert_string_equal(str(j, "kind"), "trace");
    assert_string_equal(str(j, "trace_id"), TRACE_ID);
    assert_string_equal(str(j, "tenant_id"), TENANT);
    assert_string_equal(str(j, "agent_id"), AGENT);
    assert_string_equal(str(j, "gate_id"), GATE);
    assert_string_equal(str(j, "api_key_id"), KEY);
    assert_string_equal(str(j, "user"), "alice@example.com");
    assert_string_equal(str(j, "session_id"), "run-42");
    assert_string_equal(str(j, "action"), "tool_call");
    assert_string_equal(str(j, "method"), "POST");
    assert_string_equal(str(j, "path"), "/v1/chat/completions");
    assert_string_equal(str(j, "model"), "gpt-4o-mini");
    assert_string_equal(str(j, "upstream"), "https://api.openai.com");
    assert_string_equal(str(j, "status"), "DLP_WARNED");
    assert_int_equal(json_integer_value(json_object_get(j, "http_status")), 200);

    json_t *p = json_object_get(j, "policy_ids");
    assert_int_equal(json_array_size(p), 2);
    assert_string_equal(json_string_value(json_array_get(p, 0)), POLICY1);
    assert_string_equal(json_string_value(json_array_get(p, 1)), POLICY2);

    json_t *f = json_object_get(j, "dlp_findings");
    assert_int_equal(json_array_size(f), 2);
    assert_string_equal(str(json_array_get(f, 0), "detector"), "EMAIL");
    assert_string_equal(str(json_array_get(f, 0), "severity"), "medium");
    assert_string_equal(str(json_array_get(f, 0), "where"), "request");
    assert_string_equal(str(json_array_get(f, 0), "action"), "redact");
    assert_string_equal(str(json_array_get(f, 1), "detector"), "CREDIT_CARD");
    assert_string_equal(str(json_array_get(f, 1), "where"), "response");

    json_t *tc = json_object_get(j, "tool_calls");
    assert_int_equal(json_array_size(tc), 2);
    assert_string_equal(str(json_array_get(tc, 0), "name"), "get_weather");
    assert_string_equal(str(json_array_get(tc, 0), "id"), "call_1");
    assert_string_equal(str(json_array_get(tc, 0), "phase"), "requested");
    assert_string_equal(str(json_array_get(tc, 0), "args_sha256"), SHA_A);
    expect_json_null(json_array_get(tc, 1), "name");
    assert_string_equal(str(json_array_get(tc, 1), "phase"), "result");
    assert_string_equal(str(json_array_get(tc, 1), "args_sha256"), SHA_B);

    json_t *u = json_object_get(j, "usage");
    assert_int_equal(json_integer_value(json_object_get(u, "input_tokens")), 1200);
    assert_int_equal(json_integer_value(json_object_get(u, "output_tokens")), 85);
    assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")), 1285);
    assert_int_equal(json_integer_value(json_object_get(u, "cached_input_tokens")), 1024);
    assert_int_equal(json_integer_value(json_object_get(u, "cache_write_tokens")), 0);
    assert_int_equal(json_integer_value(json_object_get(u, "reasoning_tokens")), 12);

    assert_non_null(strstr(b.data, "\"cost_usd\":0.0003,"));
    assert_non_null(strstr(b.data, "\"latency_ms\":812.457,"));
    assert_true(json_real_value(json_object_get(j, "upstream_ms")) == 790.25);
    assert_int_equal(json_integer_value(json_object_get(j, "overhead_us")), 310);
    assert_string_equal(str(j, "started_at"), "2024-10-20T11:54:56.123456Z");
    assert_string_equal(str(j, "ended_at"), "2024-10-20T11:54:56.987654Z");
    assert_true(json_is_true(json_object_get(j, "stream")));
    expect_json_null(j, "error");

    json_t *a = json_object_get(j, "attempts");
    assert_int_equal(json_array_size(a), 2);
    assert_string_equal(str(json_array_get(a, 0), "gate_id"), GATE);
    assert_string_equal(str(json_array_get(a, 0), "upstream"), "https://api.example.net");
    expect_json_null(json_array_get(a, 0), "http_status");
    assert_string_equal(str(json_array_get(a, 0), "error"), "connect timeout");
    assert_true(json_number_value(json_object_get(json_array_get(a, 0), "ms")) == 250);
    assert_string_equal(str(json_array_get(a, 1), "gate_id"), FALLBACK_GATE);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(a, 1), "http_status")), 200);
    expect_json_null(json_array_get(a, 1), "error");

    assert_string_equal(str(j, "request_body"), t.request_body);
    assert_string_equal(str(j, "response_body"), t.response_body);
    assert_true(json_is_false(json_object_get(j, "truncated")));
    assert_int_equal(json_object_size(j), 32); /* exactly the documented fields */
    json_decref(j);
    rl_buf_free(&b);
}

static void test_encode_decision(void **state)
{
    (void)state;
    px_trace_t t;
    full_trace(&t);
    t.status = PX_STATUS_DENIED;
    t.http_status = 403;
    rl_buf_t b;
    rl_buf_init(&b, 1 << 20);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    json_t *j = encode(&t, true, 0, &b);
    assert_string_equal(str(j, "kind"), "decision");
    assert_string_equal(str(j, "trace_id"), TRACE_ID);
    assert_string_equal(str(j, "status"), "DENIED");
    assert_int_equal(json_integer_value(json_object_get(j, "http_status")), 403);
    assert_string_equal(str(j, "reason"), "policy 'no-pii' flagged EMAIL");
    assert_string_equal(str(j, "started_at"), "2024-10-20T11:54:56.123456Z");
    assert_int_equal(json_array_size(json_object_get(j, "policy_ids")), 2);
    assert_int_equal(json_array_size(json_object_get(j, "dlp_findings")), 2);
    /* decided_at is ended_at_us when the engine set it */
    assert_string_equal(str(j, "decided_at"), "2024-10-20T11:54:56.987654Z");
    json_decref(j);
    /* else the clock when encoded */
    t.ended_at_us = 0;
    j = encode(&t, true, 0, &b);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char year[8];
    strftime(year, sizeof year, "%Y-", &tm);
    assert_true(strncmp(str(j, "decided_at"), year, 5) == 0);
    /* nothing of the response side */
    assert_null(json_object_get(j, "upstream"));
    assert_null(json_object_get(j, "usage"));
    assert_int_equal(json_object_size(j), 20);
    json_decref(j);

    t.reason = NULL;
    t.http_status = 0;
    j = encode(&t, true, 0, &b);
    expect_json_null(j, "reason");
    expect_json_null(j, "http_status");
    json_decref(j);
    rl_buf_free(&b);
}

static void test_encode_nulls(void **state)
{
    (void)state;
    px_trace_t t;
    memset(&t, 0, sizeof t);
    snprintf(t.trace_id, sizeof t.trace_id, "%s", TRACE_ID);
    snprintf(t.tenant_id, sizeof t.tenant_id, "%s", TENANT);
    snprintf(t.agent_id, sizeof t.agent_id, "%s", AGENT);
    t.action = PX_ACTION_HTTP;
    t.method = "GET";
    t.path = "/anything";
    t.status = PX_STATUS_ALLOWED;
    t.cost_usd = -1; /* no price known */
    t.started_at_us = 1729425296123456LL;
    t.overhead_us = -5;       /* never negative on the wire */
    t.latency_ms = 0.0 / 0.0; /* NaN */
    rl_buf_t b;
    rl_buf_init(&b, 1 << 20);
    json_t *j = encode(&t, false, 0, &b);
    const char *nulls[] = {"gate_id",  "api_key_id",  "user",         "session_id",   "model",
                           "upstream", "http_status", "usage",        "cost_usd",     "latency_ms",
                           "ended_at", "error",       "request_body", "response_body"};
    for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++)
        expect_json_null(j, nulls[i]);
    assert_true(json_real_value(json_object_get(j, "upstream_ms")) == 0.0);
    assert_int_equal(json_integer_value(json_object_get(j, "overhead_us")), 0);
    assert_int_equal(json_array_size(json_object_get(j, "policy_ids")), 0);
    assert_int_equal(json_array_size(json_object_get(j, "tool_calls")), 0);
    assert_int_equal(json_array_size(json_object_get(j, "attempts")), 0);
    assert_true(json_is_false(json_object_get(j, "stream")));
    assert_string_equal(str(j, "action"), "http");
    json_decref(j);

    /* every action name */
    const char *names[] = {"chat", "embedding", "mcp", "tool_call", "http"};
    for (int a = PX_ACTION_CHAT; a <= PX_ACTION_HTTP; a++) {
        t.action = (px_action_t)a;
        j = encode(&t, false, 0, &b);
        assert_string_equal(str(j, "action"), names[a]);
        json_decref(j);
    }
    rl_buf_free(&b);
}

static void test_encode_escaping(void **state)
{
    (void)state;
    px_trace_t t;
    full_trace(&t);
    t.user = "say \"hi\" \\ back\n\t\r\b\f\x01\x1f\x7f end";
    /* 0x80 alone; E2 82 cut short; overlong C0 AF; surrogate ED A0 80; F5; an emoji */
    t.session_id = "a\x80"
                   "b\xE2\x82"
                   "c\xC0\xAF"
                   "d\xED\xA0\x80"
                   "e\xF5"
                   "f\xF0\x9F\x98\x80"
                   "g";
    t.error = "tail \xE2\x82";
    snprintf(t.model, sizeof t.model, "%s", "caf\xC3\xA9");
    rl_buf_t b;
    rl_buf_init(&b, 1 << 20);
    json_t *j = encode(&t, false, 0, &b);
    assert_non_null(strstr(
        b.data, "\"user\":\"say \\\"hi\\\" \\\\ back\\n\\t\\r\\b\\f\\u0001\\u001f\x7f end\""));
    assert_string_equal(str(j, "user"), t.user);
    /* one U+FFFD per maximal invalid subpart; the emoji passes untouched */
    assert_string_equal(str(j, "session_id"), "a\xEF\xBF\xBD"
                                              "b\xEF\xBF\xBD"
                                              "c\xEF\xBF\xBD\xEF\xBF\xBD"
                                              "d\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
                                              "e\xEF\xBF\xBD"
                                              "f\xF0\x9F\x98\x80"
                                              "g");
    assert_string_equal(str(j, "error"), "tail \xEF\xBF\xBD");
    assert_string_equal(str(j, "model"), "caf\xC3\xA9");
    json_decref(j);

    /* NUL inside a body is no terminator, and no \u0000 either (consumers'
     * parsers and Postgres text refuse it): U+FFFD */
    static const char body[] = "a\0b";
    t.request_body = body;
    t.request_body_len = 3;
    j = encode(&t, false, 0, &b);
    assert_non_null(strstr(b.data, "\"request_body\":\"a\xEF\xBF\xBD"
                                   "b\""));
    json_decref(j);
    rl_buf_free(&b);
}

/* The 8-byte fast path must never pass a byte that needs escaping: every
 * byte value at every offset of a 16-byte window, read back with jansson. */
static void test_encode_every_byte_at_every_offset(void **state)
{
    (void)state;
    px_trace_t t;
    full_trace(&t);
    t.response_body = NULL;
    rl_buf_t b;
    rl_buf_init(&b, 1 << 20);
    char body[16], want[24];
    for (int c = 0; c < 256; c++) {
        for (int pos = 0; pos < 16; pos++) {
            memset(body, 'a', sizeof body);
            body[pos] = (char)c;
            t.request_body = body;
            t.request_body_len = sizeof body;
            rl_buf_reset(&b);
            assert_int_equal(px_trace_encode(&t, false, 0, &b), RL_OK);
            json_error_t err;
            json_t *j = json_loadb(b.data, b.len, 0, &err);
            if (!j)
                fail_msg("byte 0x%02x at %d: %s", c, pos, err.text);
            /* NUL and any lone byte >= 0x80 become U+FFFD; the rest reads back as is */
            size_t n = 0;
            memset(want, 'a', (size_t)pos);
            n = (size_t)pos;
            if (c == 0 || c >= 0x80) {
                memcpy(want + n, "\xEF\xBF\xBD", 3);
                n += 3;
            } else {
                want[n++] = (char)c;
            }
            memset(want + n, 'a', (size_t)(15 - pos));
            n += (size_t)(15 - pos);
            const char *got = json_string_value(json_object_get(j, "request_body"));
            assert_non_null(got);
            if (strlen(got) != n || memcmp(got, want, n) != 0)
                fail_msg("byte 0x%02x at %d read back wrong", c, pos);
            json_decref(j);
        }
    }
    rl_buf_free(&b);
}

static void test_encode_truncates_bodies_on_utf8_boundaries(void **state)
{
    (void)state;
    px_trace_t t;
    full_trace(&t);
    rl_buf_t b;
    rl_buf_init(&b, 1 << 20);
    /* "abc" + U+1F600 (4 bytes) + "de": a cut at 4, 5 or 6 bytes falls in the emoji */
    const char *emoji = "abc\xF0\x9F\x98\x80"
                        "de";
    t.response_body = NULL;
    t.request_body = emoji;
    t.request_body_len = strlen(emoji);
    for (size_t max = 4; max <= 6; max++) {
        json_t *j = encode(&t, false, max, &b);
        assert_string_equal(str(j, "request_body"), "abc");
        assert_true(json_is_true(json_object_get(j, "truncated")));
        json_decref(j);
    }
    json_t *j = encode(&t, false, 7, &b);
    assert_string_equal(str(j, "request_body"), "abc\xF0\x9F\x98\x80");
    assert_true(json_is_true(json_object_get(j, "truncated")));
    json_decref(j);
    j = encode(&t, false, 9, &b); /* exactly its length: not cut */
    assert_string_equal(str(j, "request_body"), emoji);
    assert_true(json_is_false(json_object_get(j, "truncated")));
    json_decref(j);

    /* a two-byte character, and the response cut alone also sets the flag */
    t.request_body = "ok";
    t.request_body_len = 2;
    t.response_body = "\xC3\xA9\xC3\xA9";
    t.response_body_len = 4;
    j = encode(&t, false, 3, &b);
    assert_string_equal(str(j, "request_body"), "ok");
    assert_string_equal(str(j, "response_body"), "\xC3\xA9");
    assert_true(json_is_true(json_object_get(j, "truncated")));
    json_decref(j);

    /* body_max 0 is the 16 KiB default */
    static char big[20000];
    memset(big, 'x', sizeof big);
    t.response_body = big;
    t.response_body_len = sizeof big;
    j = encode(&t, false, 0, &b);
    assert_int_equal(strlen(str(j, "response_body")), 16384);
    assert_true(json_is_true(json_object_get(j, "truncated")));
    json_decref(j);

    /* other free-text fields are bounded too (4 KiB) */
    static char path[10000];
    memset(path, 'p', sizeof path - 1);
    t.path = path;
    j = encode(&t, false, 0, &b);
    assert_int_equal(strlen(str(j, "path")), 4096);
    json_decref(j);
    rl_buf_free(&b);
}

static void test_encode_times(void **state)
{
    (void)state;
    px_trace_t t;
    full_trace(&t);
    rl_buf_t b;
    rl_buf_init(&b, 1 << 20);
    const struct {
        int64_t us;
        const char *want;
    } cases[] = {
        {1, "1970-01-01T00:00:00.000001Z"},
        {1709251199999999LL, "2024-02-29T23:59:59.999999Z"},
        {253402300799999999LL, "9999-12-31T23:59:59.999999Z"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        t.ended_at_us = cases[i].us;
        json_t *j = encode(&t, false, 0, &b);
        assert_string_equal(str(j, "ended_at"), cases[i].want);
        json_decref(j);
    }
    rl_buf_free(&b);
}

static void test_encode_is_all_or_nothing(void **state)
{
    (void)state;
    px_trace_t t;
    full_trace(&t);
    rl_buf_t b;
    rl_buf_init(&b, 300);
    assert_int_equal(rl_buf_append_str(&b, "keep"), RL_OK);
    assert_int_equal(px_trace_encode(&t, false, 0, &b), RL_ERR_TOO_LARGE);
    assert_int_equal(b.len, 4);
    assert_string_equal(b.data, "keep");
    assert_int_equal(px_trace_encode(NULL, false, 0, &b), RL_ERR_INVALID);
    rl_buf_free(&b);
}

/* Not a gate: prints what encoding a typical trace costs here. */
static void test_encode_cost(void **state)
{
    (void)state;
    px_trace_t t;
    full_trace(&t);
    static char body[2048];
    memset(body, 'm', sizeof body);
    t.request_body = t.response_body = body;
    t.request_body_len = t.response_body_len = sizeof body;
    rl_buf_t b;
    rl_buf_init(&b, 1 << 20);
    enum { N = 20000 };
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < N; i++) {
        rl_buf_reset(&b);
        assert_int_equal(px_trace_encode(&t, false, 0, &b), RL_OK);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double us =
        ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / 1e3 / N;
    print_message("encode: %.2f us per trace of %zu bytes\n", us, b.len);
    assert_true(us < 500);
    rl_buf_free(&b);
}

/* ==== the publisher against a real nats-server ============================== */

typedef struct {
    rl_test_nats_t *nats; /* its folder holds the spool too */
    char spool[1024];
    rl_bus_t *bus;
    rl_metrics_t *metrics;
    _Atomic(px_publisher_t *) pub;
    atomic_int nacks;
} fixture_t;

/* The bus's on_ack_failure, as the engine wires it. */
static void on_ack_failure(rl_bus_t *bus, const rl_bus_nack_t *nack, void *ctx)
{
    fixture_t *f = ctx;
    (void)bus;
    atomic_fetch_add(&f->nacks, 1);
    px_publisher_nack(atomic_load(&f->pub), nack);
}

static void bus_open(fixture_t *f, int max_pending, int64_t ack_timeout_ms)
{
    rl_bus_options_t o = {
        .url = rl_test_nats_url(f->nats),
        .name = "test_px_trace",
        .ensure_topology = true,
        .reconnect_wait_ms = 20,
        .reconnect_wait_max_ms = 200,
        .request_timeout_ms = 2000,
        .max_pending_acks = max_pending,
        .ack_timeout_ms = ack_timeout_ms,
        .drain_timeout_ms = 500,
        .on_ack_failure = on_ack_failure,
        .ctx = f,
    };
    rl_status_t st = rl_bus_create(&o, &f->bus);
    if (st != RL_OK)
        fail_msg("rl_bus_create: %s: %s", rl_status_str(st), rl_error_last());
}

static px_publisher_t *pub_open(fixture_t *f)
{
    px_publisher_options_t o = {
        .bus = f->bus,
        .spool_dir = f->spool,
        .metrics = f->metrics,
    };
    px_publisher_t *p = NULL;
    rl_status_t st = px_publisher_create(&o, &p);
    if (st != RL_OK)
        fail_msg("px_publisher_create: %s: %s", rl_status_str(st), rl_error_last());
    atomic_store(&f->pub, p);
    return p;
}

static void pub_close(fixture_t *f)
{
    px_publisher_t *p = atomic_exchange(&f->pub, NULL);
    px_publisher_destroy(p);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    if (rl_test_nats_create("test_px_trace", &f->nats) != RL_OK ||
        rl_metrics_create(&f->metrics) != RL_OK) {
        fprintf(stderr, "test_px_trace: %s\n", rl_error_last());
        rl_test_nats_destroy(f->nats);
        free(f);
        return -1;
    }
    snprintf(f->spool, sizeof f->spool, "%s/spool", rl_test_nats_dir(f->nats));
    assert_int_equal(rl_test_nats_start(f->nats), RL_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (rl_test_nats_paused(f->nats))
        rl_test_nats_resume(f->nats);
    pub_close(f);
    rl_bus_destroy(f->bus);
    rl_test_nats_destroy(f->nats);
    rl_metrics_destroy(f->metrics);
    free(f);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    nats_CloseAndWait(5000);
    return 0;
}

static bool pred_ready(void *arg)
{
    fixture_t *f = arg;
    return rl_bus_is_ready(f->bus);
}

/* Down as the publisher sees it: the disconnect callback has run (the
 * lock-free hint it reads follows the callback, a moment after the socket). */
static bool pred_not_ready(void *arg)
{
    fixture_t *f = arg;
    return !rl_bus_ready_hint(f->bus);
}

static bool pred_no_pending(void *arg)
{
    fixture_t *f = arg;
    rl_bus_stats_t st;
    rl_bus_stats(f->bus, &st);
    return st.js_pending == 0;
}

static bool pred_spool_empty(void *arg)
{
    fixture_t *f = arg;
    return px_publisher_spool_depth(atomic_load(&f->pub)) == 0;
}

/* A stream's messages, first to last sequence, each passed to fn; false
 * while JetStream does not answer. */
static bool each_stream_msg(fixture_t *f, const char *stream, void (*fn)(natsMsg *, void *),
                            void *arg)
{
    jsStreamInfo *si = NULL;
    if (js_GetStreamInfo(&si, rl_bus_js(f->bus), stream, NULL, NULL) != NATS_OK)
        return false;
    uint64_t first = si->State.FirstSeq, last = si->State.LastSeq, msgs = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    for (uint64_t seq = first; msgs > 0 && seq <= last; seq++) {
        natsMsg *m = NULL;
        if (js_GetMsg(&m, rl_bus_js(f->bus), stream, seq, NULL, NULL) != NATS_OK)
            return false;
        fn(m, arg);
        natsMsg_Destroy(m);
    }
    return true;
}

/* Lines of a bus message: each a trace or decision (docs/bus.md). */
static int64_t msg_lines(natsMsg *m)
{
    const char *d = natsMsg_GetData(m);
    int len = natsMsg_GetDataLength(m);
    int64_t n = len > 0;
    for (int i = 0; i < len; i++)
        n += d[i] == '\n';
    return n;
}

typedef struct {
    int64_t lines, messages;
} count_t;

static void count_msg(natsMsg *m, void *arg)
{
    count_t *c = arg;
    c->lines += msg_lines(m);
    c->messages++;
}

/* Traces (or decisions) in a stream, or -1 while JetStream does not answer. */
static int64_t stream_msgs(fixture_t *f, const char *stream)
{
    count_t c = {0, 0};
    return each_stream_msg(f, stream, count_msg, &c) ? c.lines : -1;
}

static void wait_stream(fixture_t *f, const char *stream, int64_t want)
{
    int64_t end = rl_test_now_ms() + WAIT_MS, n = -1;
    while ((n = stream_msgs(f, stream)) != want) {
        if (rl_test_now_ms() >= end)
            fail_msg("%s holds %lld traces, want %lld", stream, (long long)n, (long long)want);
        rl_test_sleep_ms(20);
    }
}

typedef struct {
    bool decisions;
    char **ids, **subjects;
    int n, cap;
} collect_t;

/* Checks one message (every line valid against its schema, its Nats-Msg-Id
 * the first line's trace id, ":d" for decisions) and collects its lines. */
static void collect_msg(natsMsg *m, void *arg)
{
    collect_t *c = arg;
    const char *d = natsMsg_GetData(m);
    size_t len = (size_t)natsMsg_GetDataLength(m);
    const char *mid = NULL;
    assert_int_equal(natsMsgHeader_Get(m, "Nats-Msg-Id", &mid), NATS_OK);
    bool first = true;
    for (size_t at = 0; at < len;) {
        const char *nl = memchr(d + at, '\n', len - at);
        size_t n = nl ? (size_t)(nl - (d + at)) : len - at;
        json_error_t err;
        json_t *j = json_loadb(d + at, n, 0, &err);
        if (!j)
            fail_msg("line of a bus message is no JSON: %s", err.text);
        assert_valid(c->decisions ? "decision.v1.json" : "trace.v1.json", j);
        const char *id = json_string_value(json_object_get(j, "trace_id"));
        const char *agent = json_string_value(json_object_get(j, "agent_id"));
        assert_non_null(id);
        assert_non_null(agent);
        /* a message holds one subject's lines: renlayer.<kind>.<tenant>.<agent> */
        const char *subject = natsMsg_GetSubject(m);
        size_t sl = strlen(subject), al = strlen(agent);
        assert_true(sl > al && subject[sl - al - 1] == '.' &&
                    strcmp(subject + sl - al, agent) == 0);
        if (first) {
            char want[64];
            snprintf(want, sizeof want, "%s%s", id, c->decisions ? ":d" : "");
            assert_string_equal(mid, want);
            first = false;
        }
        assert_true(c->n < c->cap);
        c->ids[c->n] = strdup(id);
        c->subjects[c->n] = strdup(natsMsg_GetSubject(m));
        c->n++;
        json_decref(j);
        at += n + 1;
    }
}

/* The trace ids in stream order, n of them (owned array of owned strings);
 * *subjects: each one's subject. Every message is checked by collect_msg. */
static char **stream_ids(fixture_t *f, const char *stream, int n, char ***subjects)
{
    collect_t c = {.decisions = strcmp(stream, RL_BUS_STREAM_DECISIONS) == 0,
                   .ids = calloc((size_t)n, sizeof(char *)),
                   .subjects = calloc((size_t)n, sizeof(char *)),
                   .cap = n};
    assert_non_null(c.ids);
    assert_non_null(c.subjects);
    assert_true(each_stream_msg(f, stream, collect_msg, &c));
    assert_int_equal(c.n, n);
    *subjects = c.subjects;
    return c.ids;
}

static void free_ids(char **ids, int n)
{
    for (int i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
}

/* A trace of its own (a fresh UUIDv7) as the engine would fill it. */
static void make_trace(px_trace_t *t, char id_out[RL_UUID_STR_LEN + 1])
{
    full_trace(t);
    rl_uuid_t u;
    assert_int_equal(rl_uuid_v7(&u), RL_OK);
    rl_uuid_format(&u, t->trace_id);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    t->started_at_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    t->ended_at_us = t->started_at_us + 812457;
    if (id_out)
        snprintf(id_out, RL_UUID_STR_LEN + 1, "%.*s", RL_UUID_STR_LEN, t->trace_id);
}

static void publish_traces(fixture_t *f, char (*ids)[RL_UUID_STR_LEN + 1], int from, int to)
{
    for (int i = from; i < to; i++) {
        px_trace_t t;
        make_trace(&t, ids[i]);
        rl_status_t st = px_publisher_trace(atomic_load(&f->pub), &t);
        if (st != RL_OK)
            fail_msg("px_publisher_trace %d: %s: %s", i, rl_status_str(st), rl_error_last());
    }
    /* the sender thread hands them to the bus (or the spool) in batches */
    assert_int_equal(px_publisher_flush(atomic_load(&f->pub), 10000), RL_OK);
}

/* One bus message per trace: each handed to the bus before the next. */
static void publish_each(fixture_t *f, char (*ids)[RL_UUID_STR_LEN + 1], int from, int to)
{
    for (int i = from; i < to; i++)
        publish_traces(f, ids, i, i + 1);
}

static void assert_metric(fixture_t *f, const char *line)
{
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(rl_metrics_render(f->metrics, &text, &len), RL_OK);
    if (!strstr(text, line))
        fail_msg("metric line \"%s\" missing in:\n%s", line, text);
    free(text);
}

static void test_publish_spools_while_down_and_replays_in_order(void **state)
{
    fixture_t *f = *state;
    enum { N = 50, M = 30, D = 5 };
    static char ids[N + M][RL_UUID_STR_LEN + 1];
    bus_open(f, 0, 1000);
    pub_open(f);
    assert_true(rl_test_wait_until(pred_ready, f, WAIT_MS));

    publish_traces(f, ids, 0, N);
    wait_stream(f, RL_BUS_STREAM_TRACES, N);
    assert_true(rl_test_wait_until(pred_no_pending, f, WAIT_MS));
    assert_int_equal(px_publisher_spool_depth(atomic_load(&f->pub)), 0);

    rl_test_nats_stop(f->nats);
    assert_true(rl_test_wait_until(pred_not_ready, f, WAIT_MS));
    publish_traces(f, ids, N, N + M);
    assert_int_equal(px_publisher_spool_depth(atomic_load(&f->pub)), M);
    char decision_ids[D][RL_UUID_STR_LEN + 1];
    for (int i = 0; i < D; i++) {
        px_trace_t t;
        make_trace(&t, decision_ids[i]);
        assert_int_equal(px_publisher_decision(atomic_load(&f->pub), &t), RL_OK);
    }
    assert_int_equal(px_publisher_spool_depth(atomic_load(&f->pub)), M + D);

    assert_int_equal(rl_test_nats_start(f->nats), RL_OK);
    wait_stream(f, RL_BUS_STREAM_TRACES, N + M);
    wait_stream(f, RL_BUS_STREAM_DECISIONS, D);
    assert_true(rl_test_wait_until(pred_spool_empty, f, WAIT_MS));
    assert_true(rl_test_wait_until(pred_no_pending, f, WAIT_MS));
    assert_int_equal(atomic_load(&f->nacks), 0);

    /* every trace once, in the order published (Nats-Msg-Id: checked by
     * stream_ids) */
    char **subjects = NULL;
    char **got = stream_ids(f, RL_BUS_STREAM_TRACES, N + M, &subjects);
    for (int i = 0; i < N + M; i++)
        assert_string_equal(got[i], ids[i]);
    free_ids(got, N + M);
    free_ids(subjects, N + M);
    got = stream_ids(f, RL_BUS_STREAM_DECISIONS, D, &subjects);
    for (int i = 0; i < D; i++)
        assert_string_equal(got[i], decision_ids[i]);
    free_ids(got, D);
    free_ids(subjects, D);

    assert_metric(f, "renlayer_proxy_messages_published_total{kind=\"trace\"} 50\n");
    assert_metric(f, "renlayer_proxy_messages_published_total{kind=\"decision\"} 0\n");
    assert_metric(f, "renlayer_proxy_messages_spooled_total 35\n");
    assert_metric(f, "renlayer_proxy_messages_replayed_total 35\n");
    assert_metric(f, "renlayer_proxy_spool_dropped_total 0\n");
    int64_t end = rl_test_now_ms() + WAIT_MS; /* the gauge follows within a replay tick */
    for (;;) {
        char *text = NULL;
        size_t len = 0;
        assert_int_equal(rl_metrics_render(f->metrics, &text, &len), RL_OK);
        bool zero = strstr(text, "renlayer_proxy_spool_depth 0\n") != NULL;
        free(text);
        if (zero)
            break;
        assert_true(rl_test_now_ms() < end);
        rl_test_sleep_ms(10);
    }

    /* the bus is back: straight to it again */
    publish_traces(f, ids, 0, 1);
    assert_metric(f, "renlayer_proxy_messages_published_total{kind=\"trace\"} 51\n");
}

static void test_restart_replays_what_was_left(void **state)
{
    fixture_t *f = *state;
    enum { K = 40 };
    static char ids[K][RL_UUID_STR_LEN + 1];
    bus_open(f, 0, 1000);
    pub_open(f);
    assert_true(rl_test_wait_until(pred_ready, f, WAIT_MS));
    rl_test_nats_stop(f->nats);
    assert_true(rl_test_wait_until(pred_not_ready, f, WAIT_MS));

    publish_traces(f, ids, 0, K);
    assert_int_equal(px_publisher_spool_depth(atomic_load(&f->pub)), K);
    int64_t t0 = rl_test_now_ms();
    pub_close(f); /* the spool stays on disk */
    assert_true(rl_test_now_ms() - t0 < 5000);

    pub_open(f);
    assert_int_equal(px_publisher_spool_depth(atomic_load(&f->pub)), K);
    assert_int_equal(rl_test_nats_start(f->nats), RL_OK);
    wait_stream(f, RL_BUS_STREAM_TRACES, K);
    assert_true(rl_test_wait_until(pred_spool_empty, f, WAIT_MS));
    assert_true(rl_test_wait_until(pred_no_pending, f, WAIT_MS));
    char **subjects = NULL;
    char **got = stream_ids(f, RL_BUS_STREAM_TRACES, K, &subjects);
    for (int i = 0; i < K; i++)
        assert_string_equal(got[i], ids[i]);
    free_ids(got, K);
    free_ids(subjects, K);

    /* all committed: a third run finds nothing to replay */
    pub_close(f);
    pub_open(f);
    assert_int_equal(px_publisher_spool_depth(atomic_load(&f->pub)), 0);
}

/* A paused server keeps the connection and acks nothing: the bus's window
 * fills (the rest is spooled), the ack timeouts come back as nacks (spooled
 * again), and after the resume every message is stored exactly once. */
static void test_nacks_are_spooled_and_deduplicated(void **state)
{
    fixture_t *f = *state;
    enum { P = 20 };
    static char ids[P][RL_UUID_STR_LEN + 1];
    bus_open(f, 4, 300);
    pub_open(f);
    assert_true(rl_test_wait_until(pred_ready, f, WAIT_MS));
    wait_stream(f, RL_BUS_STREAM_TRACES, 0);

    assert_int_equal(rl_test_nats_pause(f->nats), RL_OK);
    publish_each(f, ids, 0, P);
    assert_int_equal(px_publisher_spool_depth(atomic_load(&f->pub)), P - 4);
    int64_t end = rl_test_now_ms() + WAIT_MS;
    while (atomic_load(&f->nacks) < 4) {
        assert_true(rl_test_now_ms() < end);
        rl_test_sleep_ms(10);
    }
    assert_int_equal(rl_test_nats_resume(f->nats), RL_OK);

    wait_stream(f, RL_BUS_STREAM_TRACES, P);
    assert_true(rl_test_wait_until(pred_spool_empty, f, WAIT_MS));
    assert_true(rl_test_wait_until(pred_no_pending, f, WAIT_MS));
    assert_int_equal(stream_msgs(f, RL_BUS_STREAM_TRACES), P); /* duplicates were dropped */
    char **subjects = NULL;
    char **got = stream_ids(f, RL_BUS_STREAM_TRACES, P, &subjects);
    for (int i = 0; i < P; i++) {
        bool found = false;
        for (int k = 0; k < P && !found; k++)
            found = strcmp(got[k], ids[i]) == 0;
        if (!found)
            fail_msg("trace %s missing", ids[i]);
    }
    free_ids(got, P);
    free_ids(subjects, P);
    rl_bus_stats_t st;
    rl_bus_stats(f->bus, &st);
    assert_true(st.js_ack_failures >= 4);
}

/* A burst becomes few bus messages, each of one subject's traces in order. */
static void test_burst_is_batched_per_subject(void **state)
{
    fixture_t *f = *state;
    enum { B = 1000 };
    static const char *const agents[2] = {AGENT, "01930000-0000-7000-8000-0000000000a2"};
    static char ids[B][RL_UUID_STR_LEN + 1];
    bus_open(f, 0, 1000);
    pub_open(f);
    assert_true(rl_test_wait_until(pred_ready, f, WAIT_MS));
    for (int i = 0; i < B; i++) {
        px_trace_t t;
        make_trace(&t, ids[i]);
        snprintf(t.agent_id, sizeof t.agent_id, "%s", agents[i % 2]);
        assert_int_equal(px_publisher_trace(atomic_load(&f->pub), &t), RL_OK);
    }
    assert_int_equal(px_publisher_flush(atomic_load(&f->pub), 10000), RL_OK);
    wait_stream(f, RL_BUS_STREAM_TRACES, B);
    assert_true(rl_test_wait_until(pred_no_pending, f, WAIT_MS));

    count_t c = {0, 0};
    assert_true(each_stream_msg(f, RL_BUS_STREAM_TRACES, count_msg, &c));
    print_message("%d traces in %lld bus messages\n", B, (long long)c.messages);
    assert_int_equal(c.lines, B);
    assert_true(c.messages < B / 2);

    /* each agent's traces in the order published */
    char **subjects = NULL;
    char **got = stream_ids(f, RL_BUS_STREAM_TRACES, B, &subjects);
    for (int a = 0; a < 2; a++) {
        int want = a;
        for (int i = 0; i < B; i++) {
            size_t sl = strlen(subjects[i]), al = strlen(agents[a]);
            if (strcmp(subjects[i] + sl - al, agents[a]) != 0)
                continue;
            assert_string_equal(got[i], ids[want]);
            want += 2;
        }
        assert_int_equal(want, B + a);
    }
    free_ids(got, B);
    free_ids(subjects, B);
    assert_metric(f, "renlayer_proxy_messages_published_total{kind=\"trace\"} 1000\n");
    assert_int_equal(px_publisher_spool_depth(atomic_load(&f->pub)), 0);
}

static uint64_t metric_value(fixture_t *f, const char *name)
{
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(rl_metrics_render(f->metrics, &text, &len), RL_OK);
    char key[160];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(text, key);
    assert_non_null(p);
    uint64_t v = strtoull(p + strlen(key), NULL, 10);
    free(text);
    return v;
}

/* A server that refuses every message at once (here: its stream is gone)
 * nacks each replay immediately; replay must back off instead of spinning,
 * and deliver everything once the stream is back. */
static void test_refusing_server_is_not_hammered(void **state)
{
    fixture_t *f = *state;
    enum { R = 5 };
    static char ids[R][RL_UUID_STR_LEN + 1];
    bus_open(f, 0, 1000);
    pub_open(f);
    assert_true(rl_test_wait_until(pred_ready, f, WAIT_MS));
    wait_stream(f, RL_BUS_STREAM_TRACES, 0);
    assert_int_equal(js_DeleteStream(rl_bus_js(f->bus), RL_BUS_STREAM_TRACES, NULL, NULL), NATS_OK);

    publish_each(f, ids, 0, R);
    int64_t end = rl_test_now_ms() + WAIT_MS;
    while (atomic_load(&f->nacks) < R) {
        assert_true(rl_test_now_ms() < end);
        rl_test_sleep_ms(10);
    }
    /* a measurement window, not a synchronisation */
    uint64_t before = metric_value(f, "renlayer_proxy_messages_replayed_total");
    rl_test_sleep_ms(1000);
    uint64_t during = metric_value(f, "renlayer_proxy_messages_replayed_total") - before;
    print_message("replays in 1 s against a refusing server: %llu\n", (unsigned long long)during);
    assert_true(during < 20 * R); /* a spinning replay sends thousands */

    assert_int_equal(rl_bus_ensure_topology(f->bus), RL_OK);
    wait_stream(f, RL_BUS_STREAM_TRACES, R);
    assert_true(rl_test_wait_until(pred_spool_empty, f, WAIT_MS));
    assert_true(rl_test_wait_until(pred_no_pending, f, WAIT_MS));
    assert_int_equal(metric_value(f, "renlayer_proxy_spool_dropped_total"), 0);
}

/* An idle publisher sleeps: the sender thread waits for the first queued
 * message instead of waking on a timer (it ticked every millisecond, 500
 * context switches in this window). */
static void test_idle_publisher_sleeps(void **state)
{
    fixture_t *f = *state;
    static char ids[1][RL_UUID_STR_LEN + 1];
    bus_open(f, 0, 1000);
    pub_open(f);
    assert_true(rl_test_wait_until(pred_ready, f, WAIT_MS));
    publish_each(f, ids, 0, 1);
    assert_int_equal(px_publisher_flush(atomic_load(&f->pub), 10000), RL_OK);
    wait_stream(f, RL_BUS_STREAM_TRACES, 1);
    /* a measurement window, not a synchronisation */
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before); /* every thread of the process */
    rl_test_sleep_ms(500);
    getrusage(RUSAGE_SELF, &after);
    long switches = after.ru_nvcsw - before.ru_nvcsw;
    print_message("context switches in 500 ms idle: %ld\n", switches);
    assert_true(switches < 150);
}

static void test_create_rejects_bad_options(void **state)
{
    (void)state;
    px_publisher_t *p = (px_publisher_t *)0x1;
    px_publisher_options_t o = {0};
    assert_int_equal(px_publisher_create(&o, &p), RL_ERR_INVALID);
    assert_ptr_equal(p, (px_publisher_t *)0x1);
    px_publisher_destroy(NULL);
    px_publisher_nack(NULL, NULL);
    assert_int_equal(px_publisher_spool_depth(NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_trace_every_field),
        cmocka_unit_test(test_encode_decision),
        cmocka_unit_test(test_encode_nulls),
        cmocka_unit_test(test_encode_escaping),
        cmocka_unit_test(test_encode_every_byte_at_every_offset),
        cmocka_unit_test(test_encode_truncates_bodies_on_utf8_boundaries),
        cmocka_unit_test(test_encode_times),
        cmocka_unit_test(test_encode_is_all_or_nothing),
        cmocka_unit_test(test_encode_cost),
        cmocka_unit_test(test_create_rejects_bad_options),
        cmocka_unit_test_setup_teardown(test_publish_spools_while_down_and_replays_in_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_restart_replays_what_was_left, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nacks_are_spooled_and_deduplicated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_burst_is_batched_per_subject, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusing_server_is_not_hammered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_publisher_sleeps, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, group_teardown);
}
