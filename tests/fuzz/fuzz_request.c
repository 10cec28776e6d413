/* Fuzzes the request side of px_protocol: any body on any endpoint, with or
 * without a gate that pins a model and sets request defaults.
 *
 * Input: [case][gate flags][body...].
 * Properties: only RL_OK or RL_ERR_INVALID come back; a rewritten body is a
 * JSON object without duplicate keys that keeps every member of the client's
 * body as it was, except the ones the proxy owns (model under a pin,
 * stream_options when it asked for usage, a system message put first, and
 * defaults the client did not set), each of which holds what the gate says;
 * a body left as it is already carries the pinned model. */
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz_support.h"
#include "px_protocol.h"

typedef struct {
    px_kind_t kind;
    const char *method, *path;
    bool json;     /* the endpoint reads a JSON object and may rewrite it */
    bool messages; /* Anthropic messages: temperature and top_p never both added */
} request_case_t;

static const request_case_t cases[] = {
    {PX_KIND_OPENAI, "POST", "/v1/chat/completions", true, false},
    {PX_KIND_OPENAI, "POST", "/v1/responses", true, false},
    {PX_KIND_OPENAI, "POST", "/v1/completions", true, false},
    {PX_KIND_OPENAI, "POST", "/v1/embeddings", true, false},
    {PX_KIND_ANTHROPIC, "POST", "/v1/messages", true, true},
    {PX_KIND_ANTHROPIC, "POST", "/v1/messages/count_tokens", true, false},
    {PX_KIND_OPENAI, "POST", "/gates/g/chat/completions?x=1", true, false},
    {PX_KIND_MCP, "POST", "/mcp", false, false},
    {PX_KIND_HTTP, "POST", "/anything/else", false, false},
    {PX_KIND_OPENAI, "GET", "/v1/models", false, false},
};

static const char *const TRICKY_PIN = "p\"in\\ned-\xc3\xa9-\xe2\x80\xa8";

/* Members the proxy may change; every other member must come back equal. */
static bool owned_member(const char *key)
{
    static const char *const owned[] = {
        "model",      "stream_options",        "messages",          "temperature",  "top_p",
        "max_tokens", "max_completion_tokens", "max_output_tokens", "instructions", "system"};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++)
        if (strcmp(key, owned[i]) == 0)
            return true;
    return false;
}

static bool same_number(const json_t *a, const json_t *b)
{
    return json_is_number(a) && json_is_number(b) && json_number_value(a) == json_number_value(b);
}

static void check_rewrite(const request_case_t *c, const px_gate_t *g,
                          const px_request_info_t *info, const json_t *orig, const json_t *neu)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)orig, key, v)
    {
        json_t *nv = json_object_get(neu, key);
        FUZZ_CHECK(nv != NULL, "member \"%s\" lost", key);
        bool may_change = strcmp(key, "model") == 0 || strcmp(key, "stream_options") == 0 ||
                          strcmp(key, "messages") == 0;
        if (!may_change)
            FUZZ_CHECK(json_equal(v, nv), "member \"%s\" changed", key);
    }
    json_object_foreach((json_t *)neu, key, v)
    {
        if (json_object_get(orig, key) == NULL)
            FUZZ_CHECK(owned_member(key), "member \"%s\" appeared", key);
    }
    const char *pin = g ? g->pinned_model : NULL;
    if (pin) {
        const char *m = json_string_value(json_object_get(neu, "model"));
        FUZZ_CHECK(m && strcmp(m, pin) == 0, "pinned model not forwarded");
    } else {
        FUZZ_CHECK(json_equal(json_object_get(orig, "model"), json_object_get(neu, "model")) ||
                       json_object_get(orig, "model") == NULL,
                   "model changed without a pin");
    }
    json_t *so = json_object_get(neu, "stream_options"),
           *oso = json_object_get(orig, "stream_options");
    if (info->usage_injected) {
        FUZZ_CHECK(json_is_true(json_object_get(so, "include_usage")), "include_usage not set");
        json_object_foreach(oso, key, v)
        {
            if (strcmp(key, "include_usage") != 0)
                FUZZ_CHECK(json_equal(v, json_object_get(so, key)), "stream_options.%s lost", key);
        }
    } else if (oso) {
        FUZZ_CHECK(json_equal(oso, so), "stream_options changed");
    }
    json_t *om = json_object_get(orig, "messages"), *nm = json_object_get(neu, "messages");
    if (om && !json_equal(om, nm)) {
        const json_t *d = g ? g->request_defaults : NULL;
        const char *sys = json_string_value(json_object_get(d, "system_prompt"));
        FUZZ_CHECK(sys && json_is_array(om) && json_array_size(nm) == json_array_size(om) + 1,
                   "messages changed without a system prompt to add");
        json_t *first = json_array_get(nm, 0);
        FUZZ_CHECK(json_object_size(first) == 2 &&
                       strcmp(json_string_value(json_object_get(first, "role")), "system") == 0 &&
                       strcmp(json_string_value(json_object_get(first, "content")), sys) == 0,
                   "the added system message is not the gate's");
        for (size_t i = 0; i < json_array_size(om); i++)
            FUZZ_CHECK(json_equal(json_array_get(om, i), json_array_get(nm, i + 1)),
                       "message %zu changed", i);
    }
    /* Defaults: an added member holds the gate's value. */
    const json_t *d = g ? g->request_defaults : NULL;
    static const struct {
        const char *member, *dflt;
    } defaults[] = {{"temperature", "temperature"},
                    {"top_p", "top_p"},
                    {"max_tokens", "max_tokens"},
                    {"max_completion_tokens", "max_tokens"},
                    {"max_output_tokens", "max_tokens"}};
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) {
        json_t *added = json_object_get(neu, defaults[i].member);
        if (added && !json_object_get(orig, defaults[i].member))
            FUZZ_CHECK(same_number(added, json_object_get(d, defaults[i].dflt)),
                       "default %s not the gate's", defaults[i].member);
    }
    if (c->messages && !json_object_get(orig, "temperature") && !json_object_get(orig, "top_p"))
        FUZZ_CHECK(!(json_object_get(neu, "temperature") && json_object_get(neu, "top_p")),
                   "temperature and top_p both added to an Anthropic call");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input_t in = {data, size};
    const request_case_t *c = &cases[fuzz_byte(&in) % (sizeof cases / sizeof cases[0])];
    uint8_t flags = fuzz_byte(&in);
    const char *body = (const char *)in.p;
    size_t len = in.n;

    px_gate_t gate = {0};
    px_gate_t *g = (flags & 1) ? &gate : NULL;
    if (flags & 2)
        gate.pinned_model = (char *)((flags & 4) ? TRICKY_PIN : "pinned-model");
    if (flags & 0xf8) {
        gate.request_defaults = json_object();
        if (flags & 8)
            json_object_set_new(gate.request_defaults, "temperature",
                                (flags & 0x80) ? json_real(1e300) : json_real(0.3));
        if (flags & 0x10)
            json_object_set_new(gate.request_defaults, "top_p", json_real(0.9));
        if (flags & 0x20)
            json_object_set_new(gate.request_defaults, "max_tokens", json_integer(256));
        if (flags & 0x40)
            json_object_set_new(gate.request_defaults, "system_prompt",
                                json_string("Be \"brief\".\n\xe2\x80\xa8"));
    }

    px_request_info_t info;
    rl_buf_t out;
    rl_buf_init(&out, 8u << 20);
    rl_status_t st =
        px_protocol_prepare(c->method, c->path, len ? body : NULL, len, g, c->kind, &info, &out);
    FUZZ_CHECK(st == RL_OK || st == RL_ERR_INVALID, "status %d", (int)st);
    FUZZ_CHECK(memchr(info.model, '\0', sizeof info.model) != NULL, "model not terminated");
    FUZZ_CHECK(memchr(info.mcp_method, '\0', sizeof info.mcp_method) != NULL, "method");
    FUZZ_CHECK(memchr(info.tool_name, '\0', sizeof info.tool_name) != NULL, "tool name");
    FUZZ_CHECK(info.ntool_calls <= PX_MAX_TOOL_CALLS, "%zu tool calls", info.ntool_calls);
    FUZZ_CHECK(info.estimated_input_tokens >= 0, "negative estimate");
    if (info.mcp_id[0] != '\0') {
        json_t *id = json_loads(info.mcp_id, JSON_DECODE_ANY, NULL);
        FUZZ_CHECK(json_is_string(id) || json_is_integer(id), "mcp id %s", info.mcp_id);
        json_decref(id);
    }

    if (st == RL_OK && c->json && len > 0) {
        /* JSON text holds no NUL byte (jansson alone accepts one after a number) */
        json_t *orig = memchr(body, 0, len) ? NULL : json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
        bool count_tokens = strstr(c->path, "count_tokens") != NULL;
        if (!count_tokens)
            FUZZ_CHECK(json_is_object(orig), "accepted a body that is not a JSON object");
        if (out.len > 0) {
            json_error_t err;
            json_t *neu = json_loadb(out.data, out.len, JSON_REJECT_DUPLICATES, &err);
            FUZZ_CHECK(json_is_object(neu), "rewritten body does not parse: %s", err.text);
            check_rewrite(c, g, &info, orig, neu);
            json_decref(neu);
        } else if (json_is_object(orig) && g && g->pinned_model) {
            const char *m = json_string_value(json_object_get(orig, "model"));
            FUZZ_CHECK(m && strcmp(m, g->pinned_model) == 0, "pin not applied");
        }
        if (info.usage_injected)
            FUZZ_CHECK(out.len > 0, "usage asked for without a rewrite");
        json_decref(orig);
    }
    rl_buf_free(&out);
    json_decref(gate.request_defaults);
    return 0;
}
