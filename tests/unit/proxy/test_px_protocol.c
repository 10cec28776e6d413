/* Tests of px_protocol's request side: classification, tool results sent
 * back, rewrites (model pin, request defaults, include_usage), MCP. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "px_protocol.h"
#include "rl_crypto.h"

#define RW_MAX (1 << 20)

static void sha_hex(const char *s, char out[65])
{
    uint8_t d[RL_SHA256_LEN];
    assert_int_equal(rl_sha256(s, strlen(s), d), RL_OK);
    assert_int_equal(rl_hex_encode(d, sizeof d, out, 65), RL_OK);
}

/* A gate with an optional pin and defaults (JSON text or NULL). */
static px_gate_t *make_gate(const char *pin, const char *defaults)
{
    px_gate_t *g = calloc(1, sizeof *g);
    assert_non_null(g);
    g->pinned_model = pin ? strdup(pin) : NULL;
    g->request_defaults = defaults ? json_loads(defaults, 0, NULL) : NULL;
    if (defaults)
        assert_non_null(g->request_defaults);
    return g;
}

static void free_gate(px_gate_t *g)
{
    free(g->pinned_model);
    json_decref(g->request_defaults);
    free(g);
}

/* Prepares body and returns the status; rw holds the rewritten body ("" when none). */
static rl_status_t prep(const char *method, const char *path, const char *body,
                        const px_gate_t *gate, px_kind_t kind, px_request_info_t *info,
                        rl_buf_t *rw)
{
    rl_buf_init(rw, RW_MAX);
    return px_protocol_prepare(method, path, body, body ? strlen(body) : 0, gate, kind, info, rw);
}

/* Prepares body, expects success and a rewrite equal to want (NULL: none). */
static void expect_rewrite(const char *path, const char *body, const px_gate_t *gate,
                           px_kind_t kind, const char *want, px_request_info_t *info)
{
    rl_buf_t rw;
    assert_int_equal(prep("POST", path, body, gate, kind, info, &rw), RL_OK);
    if (want == NULL) {
        assert_int_equal(rw.len, 0);
    } else {
        assert_non_null(rw.data);
        assert_string_equal(rw.data, want);
    }
    rl_buf_free(&rw);
}

/* ---- classification ---------------------------------------------------------------------- */

typedef struct {
    px_kind_t kind;
    const char *method;
    const char *path;
    const char *body;
    px_proto_t proto;
    px_action_t action;
} class_case_t;

static const char CHAT[] =
    "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
static const char MSGS[] = "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":10,\"messages\":[{"
                           "\"role\":\"user\",\"content\":\"hi\"}]}";
static const char RESP[] = "{\"model\":\"gpt-4o-mini\",\"input\":\"hi\"}";
static const char COMPL[] = "{\"model\":\"gpt-3.5-turbo-instruct\",\"prompt\":\"hi\"}";
static const char EMB[] = "{\"model\":\"text-embedding-3-small\",\"input\":\"hi\"}";
static const char RPC[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}";

static void classifies_every_path(void **state)
{
    (void)state;
    const class_case_t cases[] = {
        {PX_KIND_OPENAI, "POST", "/v1/chat/completions", CHAT, PX_PROTO_OPENAI, PX_ACTION_CHAT},
        {PX_KIND_HTTP, "POST", "/v1/chat/completions", CHAT, PX_PROTO_OPENAI, PX_ACTION_CHAT},
        {PX_KIND_ANTHROPIC, "POST", "/v1/chat/completions", CHAT, PX_PROTO_OPENAI, PX_ACTION_CHAT},
        {PX_KIND_HTTP, "POST", "/team/a/v1/chat/completions?api-version=1", CHAT, PX_PROTO_OPENAI,
         PX_ACTION_CHAT},
        {PX_KIND_HTTP, "POST", "/v1/chat/completions/", CHAT, PX_PROTO_OPENAI, PX_ACTION_CHAT},
        {PX_KIND_OPENAI, "post", "/chat/completions", CHAT, PX_PROTO_OPENAI, PX_ACTION_CHAT},
        {PX_KIND_HTTP, "POST", "/chat/completions", CHAT, PX_PROTO_HTTP, PX_ACTION_HTTP},
        {PX_KIND_OPENAI, "GET", "/v1/chat/completions", NULL, PX_PROTO_OPENAI, PX_ACTION_HTTP},
        {PX_KIND_OPENAI, "POST", "/v1/responses", RESP, PX_PROTO_OPENAI, PX_ACTION_CHAT},
        {PX_KIND_OPENAI, "GET", "/v1/responses/resp_1", NULL, PX_PROTO_OPENAI, PX_ACTION_HTTP},
        {PX_KIND_OPENAI, "POST", "/v1/completions", COMPL, PX_PROTO_OPENAI, PX_ACTION_CHAT},
        {PX_KIND_HTTP, "POST", "/v1/embeddings", EMB, PX_PROTO_OPENAI, PX_ACTION_EMBEDDING},
        {PX_KIND_OPENAI, "GET", "/v1/models", NULL, PX_PROTO_OPENAI, PX_ACTION_HTTP},
        {PX_KIND_HTTP, "GET", "/v1/models/gpt-4o", NULL, PX_PROTO_OPENAI, PX_ACTION_HTTP},
        {PX_KIND_ANTHROPIC, "GET", "/v1/models", NULL, PX_PROTO_ANTHROPIC, PX_ACTION_HTTP},
        {PX_KIND_OPENAI, "POST", "/v1/files", "not json", PX_PROTO_OPENAI, PX_ACTION_HTTP},
        {PX_KIND_ANTHROPIC, "POST", "/v1/messages", MSGS, PX_PROTO_ANTHROPIC, PX_ACTION_CHAT},
        {PX_KIND_HTTP, "POST", "/anthropic/v1/messages", MSGS, PX_PROTO_ANTHROPIC, PX_ACTION_CHAT},
        {PX_KIND_OPENAI, "POST", "/v1/messages", MSGS, PX_PROTO_ANTHROPIC, PX_ACTION_CHAT},
        {PX_KIND_ANTHROPIC, "POST", "/messages", MSGS, PX_PROTO_ANTHROPIC, PX_ACTION_CHAT},
        {PX_KIND_ANTHROPIC, "POST", "/v1/messages/count_tokens", MSGS, PX_PROTO_ANTHROPIC,
         PX_ACTION_HTTP},
        {PX_KIND_HTTP, "POST", "/v1/messages/batches", "{}", PX_PROTO_ANTHROPIC, PX_ACTION_HTTP},
        {PX_KIND_MCP, "POST", "/mcp", RPC, PX_PROTO_MCP, PX_ACTION_MCP},
        {PX_KIND_MCP, "POST", "/v1/chat/completions", RPC, PX_PROTO_MCP, PX_ACTION_MCP},
        {PX_KIND_MCP, "GET", "/mcp", NULL, PX_PROTO_MCP, PX_ACTION_MCP},
        {PX_KIND_MCP, "DELETE", "/mcp", NULL, PX_PROTO_MCP, PX_ACTION_MCP},
        {PX_KIND_HTTP, "POST", "/api/things", "<xml/>", PX_PROTO_HTTP, PX_ACTION_HTTP},
        {PX_KIND_HTTP, "GET", "/", NULL, PX_PROTO_HTTP, PX_ACTION_HTTP},
        {PX_KIND_HTTP, "POST", "/v1/chat/completions-x", "x", PX_PROTO_HTTP, PX_ACTION_HTTP},
        {PX_KIND_HTTP, "POST", "/api/v1/messages?beta=true", MSGS, PX_PROTO_ANTHROPIC,
         PX_ACTION_CHAT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const class_case_t *c = &cases[i];
        px_request_info_t info;
        rl_buf_t rw;
        rl_status_t st = prep(c->method, c->path, c->body, NULL, c->kind, &info, &rw);
        if (st != RL_OK || info.proto != c->proto || info.action != c->action)
            fail_msg("case %zu (%s %s): status %d proto %d action %d", i, c->method, c->path, st,
                     info.proto, info.action);
        assert_int_equal(px_protocol_of(c->kind, c->path), c->proto);
        assert_int_equal(rw.len, 0);
        rl_buf_free(&rw);
    }
    assert_int_equal(px_protocol_of(PX_KIND_HTTP, NULL), PX_PROTO_HTTP);
}

static void reads_model_stream_and_estimate(void **state)
{
    (void)state;
    px_request_info_t info;
    /* The mock's example: "be brief" + "hello there!" = 20 bytes, 5 tokens. */
    expect_rewrite("/v1/chat/completions",
                   "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"system\",\"content\":\"be "
                   "brief\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hello "
                   "there!\"}]}]}",
                   NULL, PX_KIND_OPENAI, NULL, &info);
    assert_string_equal(info.model, "gpt-4o-mini");
    assert_false(info.stream);
    assert_false(info.usage_injected);
    assert_int_equal(info.estimated_input_tokens, 5);
    assert_int_equal(info.ntool_calls, 0);

    expect_rewrite("/v1/messages",
                   "{\"model\":\"claude-haiku-4-5\",\"max_tokens\":5,\"stream\":true,\"system\":[{"
                   "\"type\":\"text\",\"text\":\"abcd\"}],\"messages\":[{\"role\":\"user\","
                   "\"content\":\"efghi\"}]}",
                   NULL, PX_KIND_ANTHROPIC, NULL, &info);
    assert_string_equal(info.model, "claude-haiku-4-5");
    assert_true(info.stream);
    assert_false(info.usage_injected); /* Anthropic streams always carry usage */
    assert_int_equal(info.estimated_input_tokens, 3);

    expect_rewrite("/v1/responses",
                   "{\"model\":\"gpt-4.1-mini\",\"instructions\":\"1234\",\"input\":[{\"role\":"
                   "\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"5678\"}]}],"
                   "\"stream\":true}",
                   NULL, PX_KIND_OPENAI, NULL, &info);
    assert_true(info.stream);
    assert_false(info.usage_injected); /* response.completed always carries usage */
    assert_int_equal(info.estimated_input_tokens, 2);

    expect_rewrite("/v1/completions", "{\"model\":\"m\",\"prompt\":[\"12345\",\"678\"]}", NULL,
                   PX_KIND_OPENAI, NULL, &info);
    assert_int_equal(info.estimated_input_tokens, 2);

    expect_rewrite(
        "/v1/embeddings",
        "{\"model\":\"text-embedding-3-small\",\"input\":[\"hello there!\",\"abc\",[1,2,3]]}", NULL,
        PX_KIND_OPENAI, NULL, &info);
    assert_int_equal(info.action, PX_ACTION_EMBEDDING);
    assert_string_equal(info.model, "text-embedding-3-small");
    assert_int_equal(info.estimated_input_tokens, 7); /* (12 + 3 + 3 * 4) / 4 rounded up */
}

static void malformed_bodies_are_invalid(void **state)
{
    (void)state;
    const struct {
        px_kind_t kind;
        const char *path, *body;
    } bad[] = {
        {PX_KIND_OPENAI, "/v1/chat/completions", "{\"model\":"},
        {PX_KIND_OPENAI, "/v1/chat/completions", ""},
        {PX_KIND_OPENAI, "/v1/chat/completions", NULL},
        {PX_KIND_OPENAI, "/v1/chat/completions", "[1,2]"},
        {PX_KIND_OPENAI, "/v1/chat/completions", "{\"a\":1,\"a\":2}"},
        {PX_KIND_OPENAI, "/v1/responses", "nope"},
        {PX_KIND_OPENAI, "/v1/completions", "{"},
        {PX_KIND_OPENAI, "/v1/embeddings", "{\"input\":}"},
        {PX_KIND_ANTHROPIC, "/v1/messages", "{\"messages\":[}"},
        {PX_KIND_MCP, "/mcp", "{\"jsonrpc\":"},
        {PX_KIND_MCP, "/mcp", ""},
        {PX_KIND_MCP, "/mcp", "[]"},
        {PX_KIND_MCP, "/mcp", "[1]"},
        {PX_KIND_MCP, "/mcp", "\"x\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        px_request_info_t info;
        rl_buf_t rw;
        rl_status_t st = prep("POST", bad[i].path, bad[i].body, NULL, bad[i].kind, &info, &rw);
        if (st != RL_ERR_INVALID)
            fail_msg("case %zu (%s): status %d", i, bad[i].body ? bad[i].body : "NULL", st);
        assert_int_equal(rw.len, 0);
        rl_buf_free(&rw);
    }
    /* Paths that are not read forward anything, and count_tokens leaves a bad body to the upstream.
     */
    px_request_info_t info;
    px_gate_t *g = make_gate("claude-pinned", NULL);
    expect_rewrite("/v1/messages/count_tokens", "{oops", g, PX_KIND_ANTHROPIC, NULL, &info);
    expect_rewrite("/v1/audio/speech", "{oops", g, PX_KIND_OPENAI, NULL, &info);
    free_gate(g);
}

/* ---- tool results ------------------------------------------------------------------------ */

static void openai_tool_results_are_tool_calls(void **state)
{
    (void)state;
    const char *body = "{\"model\":\"gpt-4o-mini\",\"messages\":["
                       "{\"role\":\"user\",\"content\":\"weather in Paris and Rome?\"},"
                       "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
                       "{\"id\":\"call_old\",\"type\":\"function\",\"function\":{\"name\":\"get_"
                       "time\",\"arguments\":\"{}\"}}]},"
                       "{\"role\":\"tool\",\"tool_call_id\":\"call_old\",\"content\":\"12:00\"},"
                       "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
                       "{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_"
                       "weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}},"
                       "{\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"get_"
                       "weather\",\"arguments\":\"{\\\"city\\\":\\\"Rome\\\"}\"}}]},"
                       "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"sunny\"},"
                       "{\"role\":\"tool\",\"tool_call_id\":\"call_2\",\"content\":[{\"type\":"
                       "\"text\",\"text\":\"rain\"}]},"
                       "{\"role\":\"tool\",\"tool_call_id\":\"call_unknown\",\"content\":\"?\"}]}";
    px_request_info_t info;
    expect_rewrite("/v1/chat/completions", body, NULL, PX_KIND_OPENAI, NULL, &info);
    assert_int_equal(info.action, PX_ACTION_TOOL_CALL);
    assert_int_equal(info.proto, PX_PROTO_OPENAI);
    /* Only the results after the last assistant turn: call_old was sent before. */
    assert_int_equal(info.ntool_calls, 3);
    char h[65];
    assert_string_equal(info.tool_calls[0].id, "call_1");
    assert_string_equal(info.tool_calls[0].name, "get_weather");
    assert_int_equal(info.tool_calls[0].phase, PX_TOOL_RESULT);
    sha_hex("sunny", h);
    assert_string_equal(info.tool_calls[0].args_sha256, h);
    assert_string_equal(info.tool_calls[1].id, "call_2");
    assert_string_equal(info.tool_calls[1].name, "get_weather");
    sha_hex("[{\"type\":\"text\",\"text\":\"rain\"}]", h);
    assert_string_equal(info.tool_calls[1].args_sha256, h);
    assert_string_equal(info.tool_calls[2].id, "call_unknown");
    assert_string_equal(info.tool_calls[2].name, "");
    sha_hex("?", h);
    assert_string_equal(info.tool_calls[2].args_sha256, h);

    /* A later user turn after the results: still this call's results. */
    expect_rewrite("/v1/chat/completions",
                   "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\","
                   "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},{\"role\":\"tool\","
                   "\"tool_call_id\":\"c\",\"content\":\"ok\"},{\"role\":\"user\",\"content\":"
                   "\"and?\"}]}",
                   NULL, PX_KIND_OPENAI, NULL, &info);
    assert_int_equal(info.action, PX_ACTION_TOOL_CALL);
    assert_int_equal(info.ntool_calls, 1);
    assert_string_equal(info.tool_calls[0].name, "f");

    /* History only (an assistant answer closes it): a plain chat. */
    expect_rewrite("/v1/chat/completions",
                   "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\","
                   "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},{\"role\":\"tool\","
                   "\"tool_call_id\":\"c\",\"content\":\"ok\"},{\"role\":\"assistant\",\"content\":"
                   "\"done\"},{\"role\":\"user\",\"content\":\"thanks\"}]}",
                   NULL, PX_KIND_OPENAI, NULL, &info);
    assert_int_equal(info.action, PX_ACTION_CHAT);
    assert_int_equal(info.ntool_calls, 0);
}

static void anthropic_tool_results_are_tool_calls(void **state)
{
    (void)state;
    const char *body =
        "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":100,\"messages\":["
        "{\"role\":\"user\",\"content\":\"weather?\"},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"I'll check.\"},"
        "{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{\"city\":"
        "\"Paris\"}}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_1\","
        "\"content\":\"sunny\"},{\"type\":\"text\",\"text\":\"thanks\"},"
        "{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_x\",\"is_error\":true,"
        "\"content\":[{\"type\":\"text\",\"text\":\"boom\"}]}]}]}";
    px_request_info_t info;
    expect_rewrite("/v1/messages", body, NULL, PX_KIND_ANTHROPIC, NULL, &info);
    assert_int_equal(info.action, PX_ACTION_TOOL_CALL);
    assert_int_equal(info.ntool_calls, 2);
    char h[65];
    assert_string_equal(info.tool_calls[0].id, "toolu_1");
    assert_string_equal(info.tool_calls[0].name, "get_weather");
    assert_int_equal(info.tool_calls[0].phase, PX_TOOL_RESULT);
    sha_hex("sunny", h);
    assert_string_equal(info.tool_calls[0].args_sha256, h);
    assert_string_equal(info.tool_calls[1].id, "toolu_x");
    assert_string_equal(info.tool_calls[1].name, "");
    sha_hex("[{\"type\":\"text\",\"text\":\"boom\"}]", h);
    assert_string_equal(info.tool_calls[1].args_sha256, h);
    /* "weather?" + "I'll check." + "sunny" + "thanks" + "boom" = 34 bytes */
    assert_int_equal(info.estimated_input_tokens, 9);
}

static void responses_tool_results_are_tool_calls(void **state)
{
    (void)state;
    const char *body =
        "{\"model\":\"gpt-4o-mini\",\"input\":[{\"role\":\"user\",\"content\":\"weather?\"},"
        "{\"type\":\"function_call\",\"call_id\":\"call_9\",\"name\":\"get_weather\","
        "\"arguments\":\"{}\"},"
        "{\"type\":\"function_call_output\",\"call_id\":\"call_9\",\"output\":\"sunny\"}]}";
    px_request_info_t info;
    expect_rewrite("/v1/responses", body, NULL, PX_KIND_OPENAI, NULL, &info);
    assert_int_equal(info.action, PX_ACTION_TOOL_CALL);
    assert_int_equal(info.ntool_calls, 1);
    assert_string_equal(info.tool_calls[0].id, "call_9");
    assert_string_equal(info.tool_calls[0].name, "get_weather");
    char h[65];
    sha_hex("sunny", h);
    assert_string_equal(info.tool_calls[0].args_sha256, h);
}

static void tool_results_are_bounded(void **state)
{
    (void)state;
    rl_buf_t b;
    rl_buf_init(&b, RW_MAX);
    assert_int_equal(rl_buf_append_str(&b, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}"),
                     RL_OK);
    for (int i = 0; i < PX_MAX_TOOL_CALLS + 10; i++)
        assert_int_equal(
            rl_buf_appendf(&b, ",{\"role\":\"tool\",\"tool_call_id\":\"c%d\",\"content\":\"r\"}",
                           i),
            RL_OK);
    assert_int_equal(rl_buf_append_str(&b, "]}"), RL_OK);
    px_request_info_t info;
    expect_rewrite("/v1/chat/completions", b.data, NULL, PX_KIND_OPENAI, NULL, &info);
    assert_int_equal(info.ntool_calls, PX_MAX_TOOL_CALLS);
    assert_string_equal(info.tool_calls[PX_MAX_TOOL_CALLS - 1].id, "c31");
    rl_buf_free(&b);
}

/* ---- rewrites ---------------------------------------------------------------------------- */

static void model_pin_replaces_in_place(void **state)
{
    (void)state;
    px_gate_t *g = make_gate("gpt-4o", NULL);
    px_request_info_t info;
    expect_rewrite(
        "/v1/chat/completions",
        "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
        "\"temperature\":0.5}",
        g, PX_KIND_OPENAI,
        "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
        "\"temperature\":0.5}",
        &info);
    assert_string_equal(info.model, "gpt-4o");
    /* Already the pinned model: nothing to rewrite. */
    expect_rewrite("/v1/chat/completions", "{\"model\":\"gpt-4o\",\"messages\":[]}", g,
                   PX_KIND_OPENAI, NULL, &info);
    assert_string_equal(info.model, "gpt-4o");
    /* No model at all: the pin adds it. */
    expect_rewrite("/v1/embeddings", "{\"input\":\"x\"}", g, PX_KIND_OPENAI,
                   "{\"input\":\"x\",\"model\":\"gpt-4o\"}", &info);
    assert_string_equal(info.model, "gpt-4o");
    /* count_tokens follows the pin; other paths are not touched. */
    expect_rewrite("/v1/messages/count_tokens", "{\"model\":\"a\",\"messages\":[]}", g,
                   PX_KIND_ANTHROPIC, "{\"model\":\"gpt-4o\",\"messages\":[]}", &info);
    assert_int_equal(info.action, PX_ACTION_HTTP);
    expect_rewrite("/v1/files", "{\"model\":\"a\"}", g, PX_KIND_OPENAI, NULL, &info);
    /* Unicode and escapes survive the rewrite. */
    expect_rewrite(
        "/v1/chat/completions",
        "{\"model\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9 \\\"q\\\" "
        "\xe2\x82\xac\\n\"}]}",
        g, PX_KIND_OPENAI,
        "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9 \\\"q\\\" "
        "\xe2\x82\xac\\n\"}]}",
        &info);
    free_gate(g);
    /* An empty pin is no pin. */
    g = make_gate("", NULL);
    expect_rewrite("/v1/chat/completions", CHAT, g, PX_KIND_OPENAI, NULL, &info);
    free_gate(g);
}

static void defaults_fill_only_what_is_missing(void **state)
{
    (void)state;
    px_gate_t *g = make_gate(NULL, "{\"temperature\":0.2,\"top_p\":0.9,\"max_tokens\":256,"
                                   "\"system_prompt\":\"Be safe.\"}");
    px_request_info_t info;
    /* OpenAI chat: client temperature kept, the rest added, system message first. */
    expect_rewrite(
        "/v1/chat/completions",
        "{\"model\":\"m\",\"temperature\":1,\"messages\":[{\"role\":\"user\",\"content\":"
        "\"hi\"}]}",
        g, PX_KIND_OPENAI,
        "{\"model\":\"m\",\"temperature\":1,\"messages\":[{\"role\":\"system\",\"content\":"
        "\"Be safe.\"},{\"role\":\"user\",\"content\":\"hi\"}],\"top_p\":0.9,"
        "\"max_completion_tokens\":256}",
        &info);
    /* Client's own system (or developer) message and max_tokens win. */
    expect_rewrite(
        "/v1/chat/completions",
        "{\"model\":\"m\",\"temperature\":0.2,\"top_p\":0.9,\"max_tokens\":5,\"messages\":[{"
        "\"role\":\"developer\",\"content\":\"mine\"}]}",
        g, PX_KIND_OPENAI, NULL, &info);
    expect_rewrite("/v1/chat/completions",
                   "{\"model\":\"m\",\"temperature\":0.2,\"top_p\":0.9,\"max_completion_tokens\":5,"
                   "\"messages\":[{\"role\":\"system\",\"content\":\"mine\"}]}",
                   g, PX_KIND_OPENAI, NULL, &info);
    /* A null is not a value set by the client. */
    expect_rewrite(
        "/v1/chat/completions",
        "{\"model\":\"m\",\"temperature\":null,\"top_p\":0.9,\"max_tokens\":5,\"messages\":[{"
        "\"role\":\"system\",\"content\":\"mine\"}]}",
        g, PX_KIND_OPENAI,
        "{\"model\":\"m\",\"temperature\":0.2,\"top_p\":0.9,\"max_tokens\":5,\"messages\":[{"
        "\"role\":\"system\",\"content\":\"mine\"}]}",
        &info);
    /* Anthropic: system and max_tokens; one sampling default, not both. */
    expect_rewrite("/v1/messages",
                   "{\"model\":\"c\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", g,
                   PX_KIND_ANTHROPIC,
                   "{\"model\":\"c\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                   "\"temperature\":0.2,\"max_tokens\":256,\"system\":\"Be safe.\"}",
                   &info);
    expect_rewrite(
        "/v1/messages",
        "{\"model\":\"c\",\"max_tokens\":10,\"top_p\":0.5,\"system\":\"mine\",\"messages\":[]}", g,
        PX_KIND_ANTHROPIC, NULL, &info);
    /* Responses: instructions and max_output_tokens. */
    expect_rewrite("/v1/responses", "{\"model\":\"m\",\"input\":\"hi\"}", g, PX_KIND_OPENAI,
                   "{\"model\":\"m\",\"input\":\"hi\",\"temperature\":0.2,\"top_p\":0.9,"
                   "\"max_output_tokens\":256,\"instructions\":\"Be safe.\"}",
                   &info);
    /* Legacy completions: max_tokens, no system prompt. */
    expect_rewrite("/v1/completions",
                   "{\"model\":\"m\",\"prompt\":\"hi\",\"temperature\":0,\"top_p\":1}", g,
                   PX_KIND_OPENAI,
                   "{\"model\":\"m\",\"prompt\":\"hi\",\"temperature\":0,\"top_p\":1,"
                   "\"max_tokens\":256}",
                   &info);
    /* Embeddings take no defaults. */
    expect_rewrite("/v1/embeddings", EMB, g, PX_KIND_OPENAI, NULL, &info);
    free_gate(g);

    /* Defaults of the wrong type are ignored; an empty object changes nothing. */
    g = make_gate(NULL, "{\"temperature\":\"hot\",\"max_tokens\":1.5,\"system_prompt\":7}");
    expect_rewrite("/v1/chat/completions", CHAT, g, PX_KIND_OPENAI, NULL, &info);
    free_gate(g);
    g = make_gate(NULL, "{}");
    expect_rewrite("/v1/messages", MSGS, g, PX_KIND_ANTHROPIC, NULL, &info);
    free_gate(g);
    /* Anthropic with only top_p as a default. */
    g = make_gate(NULL, "{\"top_p\":0.7}");
    expect_rewrite("/v1/messages", MSGS, g, PX_KIND_ANTHROPIC,
                   "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":10,\"messages\":[{\"role\":"
                   "\"user\",\"content\":\"hi\"}],\"top_p\":0.7}",
                   &info);
    free_gate(g);
}

static void include_usage_injected_only_when_needed(void **state)
{
    (void)state;
    px_request_info_t info;
    expect_rewrite("/v1/chat/completions", "{\"model\":\"m\",\"stream\":true,\"messages\":[]}",
                   NULL, PX_KIND_OPENAI,
                   "{\"model\":\"m\",\"stream\":true,\"messages\":[],\"stream_options\":{"
                   "\"include_usage\":true}}",
                   &info);
    assert_true(info.stream);
    assert_true(info.usage_injected);

    expect_rewrite("/v1/chat/completions",
                   "{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
                   "\"messages\":[]}",
                   NULL, PX_KIND_OPENAI, NULL, &info);
    assert_true(info.stream);
    assert_false(info.usage_injected);

    expect_rewrite("/v1/chat/completions",
                   "{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_obfuscation\":"
                   "false},\"messages\":[]}",
                   NULL, PX_KIND_OPENAI,
                   "{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_obfuscation\":"
                   "false,\"include_usage\":true},\"messages\":[]}",
                   &info);
    assert_true(info.usage_injected);

    expect_rewrite("/v1/chat/completions",
                   "{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":false},"
                   "\"messages\":[]}",
                   NULL, PX_KIND_OPENAI,
                   "{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
                   "\"messages\":[]}",
                   &info);
    assert_true(info.usage_injected);

    expect_rewrite("/v1/chat/completions",
                   "{\"model\":\"m\",\"stream\":true,\"stream_options\":null,\"messages\":[]}",
                   NULL, PX_KIND_OPENAI,
                   "{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
                   "\"messages\":[]}",
                   &info);
    assert_true(info.usage_injected);

    /* Not a stream, or a stream that reports usage anyway: nothing. */
    expect_rewrite("/v1/chat/completions", "{\"model\":\"m\",\"stream\":false,\"messages\":[]}",
                   NULL, PX_KIND_OPENAI, NULL, &info);
    assert_false(info.usage_injected);
    expect_rewrite("/v1/responses", "{\"model\":\"m\",\"stream\":true,\"input\":\"x\"}", NULL,
                   PX_KIND_OPENAI, NULL, &info);
    assert_false(info.usage_injected);
    expect_rewrite("/v1/messages",
                   "{\"model\":\"c\",\"stream\":true,\"max_tokens\":1,\"messages\":[]}", NULL,
                   PX_KIND_ANTHROPIC, NULL, &info);
    assert_false(info.usage_injected);

    /* Legacy completions streams too. */
    expect_rewrite("/v1/completions", "{\"model\":\"m\",\"prompt\":\"x\",\"stream\":true}", NULL,
                   PX_KIND_OPENAI,
                   "{\"model\":\"m\",\"prompt\":\"x\",\"stream\":true,\"stream_options\":{"
                   "\"include_usage\":true}}",
                   &info);
    assert_true(info.usage_injected);

    /* Pin, default and injection together, in one rewrite. */
    px_gate_t *g = make_gate("gpt-4o", "{\"max_tokens\":64}");
    expect_rewrite("/v1/chat/completions", "{\"model\":\"m\",\"stream\":true,\"messages\":[]}", g,
                   PX_KIND_OPENAI,
                   "{\"model\":\"gpt-4o\",\"stream\":true,\"messages\":[],"
                   "\"max_completion_tokens\":64,\"stream_options\":{\"include_usage\":true}}",
                   &info);
    assert_true(info.usage_injected);
    assert_string_equal(info.model, "gpt-4o");
    free_gate(g);
}

static void rewrite_keeps_the_client_text(void **state)
{
    (void)state;
    px_gate_t *g = make_gate("gpt-4o", "{\"top_p\":0.9,\"temperature\":0.2,\"system_prompt\":"
                                       "\"S \\\"q\\\"\"}");
    px_request_info_t info;
    /* Spacing, number spelling and escapes stay; only the edits differ. */
    expect_rewrite("/v1/chat/completions",
                   "{\n  \"model\" : \"x\",\n  \"temperature\": 0.70,\n  \"n\": 1E0,\n"
                   "  \"messages\": [ ]\n}\n",
                   g, PX_KIND_OPENAI,
                   "{\n  \"model\" : \"gpt-4o\",\n  \"temperature\": 0.70,\n  \"n\": 1E0,\n"
                   "  \"messages\": [{\"role\":\"system\",\"content\":\"S \\\"q\\\"\"} ]\n,"
                   "\"top_p\":0.9}\n",
                   &info);
    /* An empty object. */
    expect_rewrite("/v1/embeddings", "{}", g, PX_KIND_OPENAI, "{\"model\":\"gpt-4o\"}", &info);
    /* An escaped member name is the same member: the pin replaces it. */
    expect_rewrite("/v1/embeddings", "{\"\\u006dodel\":\"big\",\"input\":\"x\"}", g, PX_KIND_OPENAI,
                   "{\"\\u006dodel\":\"gpt-4o\",\"input\":\"x\"}", &info);
    /* A model member after nested values and strings holding braces. */
    expect_rewrite(
        "/v1/embeddings",
        "{\"input\":[\"}{\\\"]\",{\"a\":[1,{\"b\":\"]\"}]}],\"dimensions\":8,\"model\":\"m\"}", g,
        PX_KIND_OPENAI,
        "{\"input\":[\"}{\\\"]\",{\"a\":[1,{\"b\":\"]\"}]}],\"dimensions\":8,\"model\":"
        "\"gpt-4o\"}",
        &info);
    free_gate(g);
}

static void rewrite_respects_the_buffer_bound(void **state)
{
    (void)state;
    px_gate_t *g = make_gate("a-much-longer-pinned-model-name", NULL);
    px_request_info_t info;
    rl_buf_t rw;
    rl_buf_init(&rw, 20);
    const char *body = "{\"model\":\"m\",\"messages\":[]}";
    assert_int_equal(px_protocol_prepare("POST", "/v1/chat/completions", body, strlen(body), g,
                                         PX_KIND_OPENAI, &info, &rw),
                     RL_ERR_TOO_LARGE);
    assert_int_equal(rw.len, 0);
    rl_buf_free(&rw);
    free_gate(g);
}

/* ---- MCP --------------------------------------------------------------------------------- */

static void mcp_methods_and_tool_names(void **state)
{
    (void)state;
    px_request_info_t info;
    expect_rewrite("/mcp",
                   "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":"
                   "\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}}",
                   NULL, PX_KIND_MCP, NULL, &info);
    assert_int_equal(info.proto, PX_PROTO_MCP);
    assert_int_equal(info.action, PX_ACTION_MCP);
    assert_string_equal(info.mcp_method, "tools/call");
    assert_string_equal(info.mcp_id, "3");
    assert_string_equal(info.tool_name, "get_weather");
    assert_int_equal(info.ntool_calls, 1);
    assert_string_equal(info.tool_calls[0].id, "3");
    assert_string_equal(info.tool_calls[0].name, "get_weather");
    assert_int_equal(info.tool_calls[0].phase, PX_TOOL_REQUESTED);
    char h[65];
    sha_hex("{\"city\":\"Paris\"}", h);
    assert_string_equal(info.tool_calls[0].args_sha256, h);
    assert_string_equal(info.model, "");

    expect_rewrite(
        "/mcp",
        "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{"
        "\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},\"clientInfo\":{\"name\":"
        "\"c\",\"version\":\"1\"}}}",
        NULL, PX_KIND_MCP, NULL, &info);
    assert_string_equal(info.mcp_method, "initialize");
    assert_string_equal(info.tool_name, "");
    assert_int_equal(info.ntool_calls, 0);

    expect_rewrite("/mcp", "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", NULL,
                   PX_KIND_MCP, NULL, &info);
    assert_string_equal(info.mcp_method, "notifications/initialized");
    assert_string_equal(info.mcp_id, "");

    /* A response the client sends back carries no method. */
    expect_rewrite("/mcp", "{\"jsonrpc\":\"2.0\",\"id\":\"s1\",\"result\":{}}", NULL, PX_KIND_MCP,
                   NULL, &info);
    assert_string_equal(info.mcp_method, "");
    assert_string_equal(info.mcp_id, "\"s1\"");

    /* A batch: the first tools/call decides; every call is listed. */
    expect_rewrite(
        "/mcp",
        "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"},"
        "{\"jsonrpc\":\"2.0\",\"id\":\"b\",\"method\":\"tools/call\",\"params\":{\"name\":"
        "\"delete_file\",\"arguments\":{\"path\":\"/etc\"}}},"
        "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":"
        "\"search_docs\"}}]",
        NULL, PX_KIND_MCP, NULL, &info);
    assert_string_equal(info.mcp_method, "tools/call");
    assert_string_equal(info.mcp_id, ""); /* a batch answers with an array */
    assert_string_equal(info.tool_name, "delete_file");
    assert_int_equal(info.ntool_calls, 2);
    assert_string_equal(info.tool_calls[0].id, "b");
    assert_string_equal(info.tool_calls[1].name, "search_docs");
    sha_hex("{}", h);
    assert_string_equal(info.tool_calls[1].args_sha256, h);

    /* GET opens the server's stream: no body to read. */
    rl_buf_t rw;
    assert_int_equal(prep("GET", "/mcp", NULL, NULL, PX_KIND_MCP, &info, &rw), RL_OK);
    assert_int_equal(info.action, PX_ACTION_MCP);
    assert_string_equal(info.mcp_method, "");
    rl_buf_free(&rw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(classifies_every_path),
        cmocka_unit_test(reads_model_stream_and_estimate),
        cmocka_unit_test(malformed_bodies_are_invalid),
        cmocka_unit_test(openai_tool_results_are_tool_calls),
        cmocka_unit_test(anthropic_tool_results_are_tool_calls),
        cmocka_unit_test(responses_tool_results_are_tool_calls),
        cmocka_unit_test(tool_results_are_bounded),
        cmocka_unit_test(model_pin_replaces_in_place),
        cmocka_unit_test(defaults_fill_only_what_is_missing),
        cmocka_unit_test(include_usage_injected_only_when_needed),
        cmocka_unit_test(rewrite_keeps_the_client_text),
        cmocka_unit_test(rewrite_respects_the_buffer_bound),
        cmocka_unit_test(mcp_methods_and_tool_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
