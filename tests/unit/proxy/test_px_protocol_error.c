/* Tests of px_protocol_error: the exact bodies, per protocol and status. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "px_protocol.h"

static void expect_error(px_proto_t proto, int status, const char *code, const char *message,
                         const char *rl_status, const char *trace_id, const char *mcp_id,
                         const char *want)
{
    rl_buf_t out;
    rl_buf_init(&out, 1 << 16);
    assert_int_equal(rl_buf_append_str(&out, "stale"), RL_OK); /* replaced, not appended to */
    const char *ct = NULL;
    px_protocol_error(proto, status, code, message, rl_status, trace_id, mcp_id, &out, &ct);
    assert_string_equal(ct, "application/json");
    assert_string_equal(out.data, want);
    json_t *v = json_loads(out.data, 0, NULL);
    assert_non_null(v); /* always valid JSON */
    json_decref(v);
    rl_buf_free(&out);
}

static void openai_shape(void **state)
{
    (void)state;
    expect_error(PX_PROTO_OPENAI, 403, "policy_denied", "Denied by policy \"no-delete\"", "DENIED",
                 "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", NULL,
                 "{\"error\":{\"message\":\"Denied by policy \\\"no-delete\\\"\",\"type\":"
                 "\"permission_error\",\"code\":\"policy_denied\",\"param\":null},\"renlayer\":{"
                 "\"status\":\"DENIED\",\"trace_id\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\"}}");
    expect_error(PX_PROTO_OPENAI, 401, "invalid_api_key", "Invalid API key", "ERROR", "t1", NULL,
                 "{\"error\":{\"message\":\"Invalid API key\",\"type\":\"authentication_error\","
                 "\"code\":\"invalid_api_key\",\"param\":null},\"renlayer\":{\"status\":\"ERROR\","
                 "\"trace_id\":\"t1\"}}");
    expect_error(PX_PROTO_OPENAI, 402, "session_budget_exceeded", "Budget exceeded", "DENIED", "t",
                 NULL,
                 "{\"error\":{\"message\":\"Budget exceeded\",\"type\":\"insufficient_quota\","
                 "\"code\":\"session_budget_exceeded\",\"param\":null},\"renlayer\":{\"status\":"
                 "\"DENIED\",\"trace_id\":\"t\"}}");
    /* NULL code, status and trace id become null; an empty message a default. */
    expect_error(PX_PROTO_OPENAI, 429, NULL, "", NULL, NULL, NULL,
                 "{\"error\":{\"message\":\"Rate limit exceeded.\",\"type\":\"rate_limit_error\","
                 "\"code\":null,\"param\":null},\"renlayer\":{\"status\":null,\"trace_id\":null}}");
    /* Plain HTTP paths use the OpenAI shape. */
    expect_error(PX_PROTO_HTTP, 413, "body_too_large", "Too large\n\ttab\x01", "ERROR", "t", NULL,
                 "{\"error\":{\"message\":\"Too large\\n\\ttab\\u0001\",\"type\":"
                 "\"request_too_large\",\"code\":\"body_too_large\",\"param\":null},\"renlayer\":{"
                 "\"status\":\"ERROR\",\"trace_id\":\"t\"}}");
}

static void anthropic_shape(void **state)
{
    (void)state;
    expect_error(PX_PROTO_ANTHROPIC, 401, "invalid_api_key", "Invalid API key", "ERROR", "t1", NULL,
                 "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":"
                 "\"Invalid API key\"},\"renlayer\":{\"status\":\"ERROR\",\"trace_id\":\"t1\"}}");
    expect_error(PX_PROTO_ANTHROPIC, 403, "dlp_blocked", "Blocked: credit card \\ \xe2\x82\xac",
                 "DLP_BLOCKED", "t2", NULL,
                 "{\"type\":\"error\",\"error\":{\"type\":\"permission_error\",\"message\":"
                 "\"Blocked: credit card \\\\ \xe2\x82\xac\"},\"renlayer\":{\"status\":"
                 "\"DLP_BLOCKED\",\"trace_id\":\"t2\"}}");
    expect_error(
        PX_PROTO_ANTHROPIC, 402, NULL, "Budget", "DENIED", "t", NULL,
        "{\"type\":\"error\",\"error\":{\"type\":\"billing_error\",\"message\":\"Budget\"},"
        "\"renlayer\":{\"status\":\"DENIED\",\"trace_id\":\"t\"}}");
}

static void type_per_status(void **state)
{
    (void)state;
    const struct {
        int status;
        const char *openai, *anthropic;
    } cases[] = {
        {400, "invalid_request_error", "invalid_request_error"},
        {401, "authentication_error", "authentication_error"},
        {402, "insufficient_quota", "billing_error"},
        {403, "permission_error", "permission_error"},
        {404, "not_found_error", "not_found_error"},
        {409, "conflict_error", "conflict_error"},
        {413, "request_too_large", "request_too_large"},
        {422, "invalid_request_error", "invalid_request_error"},
        {429, "rate_limit_error", "rate_limit_error"},
        {500, "api_error", "api_error"},
        {502, "api_error", "api_error"},
        {503, "api_error", "api_error"},
        {504, "api_error", "timeout_error"},
        {529, "api_error", "overloaded_error"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int a = 0; a < 2; a++) {
            rl_buf_t out;
            rl_buf_init(&out, 4096);
            const char *ct;
            px_protocol_error(a ? PX_PROTO_ANTHROPIC : PX_PROTO_OPENAI, cases[i].status, "c", "m",
                              "ERROR", "t", NULL, &out, &ct);
            json_t *v = json_loads(out.data, 0, NULL);
            assert_non_null(v);
            const char *type =
                json_string_value(json_object_get(json_object_get(v, "error"), "type"));
            assert_non_null(type);
            assert_string_equal(type, a ? cases[i].anthropic : cases[i].openai);
            json_decref(v);
            rl_buf_free(&out);
        }
    }
}

static void mcp_shape(void **state)
{
    (void)state;
    expect_error(PX_PROTO_MCP, 403, "policy_denied", "Tool delete_file is denied", "DENIED", "t3",
                 "7",
                 "{\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"code\":-32000,\"message\":\"Tool "
                 "delete_file is denied\",\"data\":{\"http_status\":403,\"type\":"
                 "\"permission_error\",\"code\":\"policy_denied\",\"renlayer\":{\"status\":"
                 "\"DENIED\",\"trace_id\":\"t3\"}}}}");
    expect_error(
        PX_PROTO_MCP, 400, "invalid_json", "Parse error", "ERROR", "t", "\"req-1\"",
        "{\"jsonrpc\":\"2.0\",\"id\":\"req-1\",\"error\":{\"code\":-32600,\"message\":"
        "\"Parse error\",\"data\":{\"http_status\":400,\"type\":\"invalid_request_error\","
        "\"code\":\"invalid_json\",\"renlayer\":{\"status\":\"ERROR\",\"trace_id\":\"t\"}}}}");
    /* No id, or one that is not a JSON-RPC id (never pasted raw): null. */
    const char *bad_ids[] = {NULL, "", "{\"x\":1}", "1,\"injected\":true", "[1]", "1.5"};
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++)
        expect_error(PX_PROTO_MCP, 500, NULL, "boom", "ERROR", "t", bad_ids[i],
                     "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,\"message\":"
                     "\"boom\",\"data\":{\"http_status\":500,\"type\":\"api_error\",\"code\":null,"
                     "\"renlayer\":{\"status\":\"ERROR\",\"trace_id\":\"t\"}}}}");
}

static void invalid_utf8_still_valid_json(void **state)
{
    (void)state;
    expect_error(PX_PROTO_OPENAI, 403, "x", "bad \xff byte", "DENIED", "t", NULL,
                 "{\"error\":{\"message\":\"The request was denied.\",\"type\":"
                 "\"permission_error\",\"code\":null,\"param\":null}}");
    expect_error(PX_PROTO_ANTHROPIC, 429, "x", "bad \xc3", "DENIED", "t", NULL,
                 "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":"
                 "\"Rate limit exceeded.\"}}");
    expect_error(PX_PROTO_MCP, 403, "x", "\xfe", "DENIED", "t", "1",
                 "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32000,\"message\":"
                 "\"The request was denied.\"}}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(openai_shape),
        cmocka_unit_test(anthropic_shape),
        cmocka_unit_test(type_per_status),
        cmocka_unit_test(mcp_shape),
        cmocka_unit_test(invalid_utf8_still_valid_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
