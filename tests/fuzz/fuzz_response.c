/* Fuzzes the response side of px_protocol: any body, JSON or SSE, fed whole
 * and fed in random pieces.
 *
 * Input: [mode][chunk seed][body...]; mode picks SSE or JSON, the protocol
 * and action, whether the proxy asked for usage, and the upstream status.
 * Properties: pieces or not, the client gets the same bytes and the trace
 * the same usage, model and tool calls; a JSON body and a stream whose usage
 * the proxy did not ask for reach the client byte for byte; and a JSON body
 * read by the proxy's top-level scanner gives what it gives once jansson
 * has re-encoded it (the scanner agrees with a real parser). */
#include <jansson.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz_support.h"
#include "px_protocol.h"

typedef struct {
    rl_buf_t forward;
    px_usage_t usage;
    char model[PX_MODEL_MAX];
    px_tool_call_t calls[PX_MAX_TOOL_CALLS + 1];
    size_t ncalls;
} outcome_t;

/* Runs one parser over body; chunks NULL feeds it whole. */
static void run(const px_request_info_t *info, int status, bool sse, const char *body, size_t len,
                fuzz_chunks_t *chunks, outcome_t *o)
{
    memset(o, 0, sizeof *o);
    rl_buf_init(&o->forward, 16u << 20);
    px_response_t *r;
    FUZZ_CHECK(px_response_create(info, status, sse, &r) == RL_OK, "create");
    size_t at = 0;
    while (at < len) {
        size_t n = chunks ? fuzz_chunk(chunks, len - at) : len;
        FUZZ_CHECK(px_response_feed(r, body + at, n, &o->forward) == RL_OK, "feed");
        at += n;
    }
    FUZZ_CHECK(px_response_finish(r, &o->forward) == RL_OK, "finish");
    px_response_usage(r, &o->usage);
    snprintf(o->model, sizeof o->model, "%s", px_response_model(r));
    const px_tool_call_t *calls;
    o->ncalls = px_response_tool_calls(r, &calls);
    FUZZ_CHECK(o->ncalls <= PX_MAX_TOOL_CALLS, "%zu tool calls", o->ncalls);
    memcpy(o->calls, calls, o->ncalls * sizeof *calls);
    px_response_destroy(r);
}

static void check_same(const outcome_t *a, const outcome_t *b, bool forward, const char *what)
{
    if (forward)
        FUZZ_CHECK(
            fuzz_same_bytes(a->forward.data, a->forward.len, b->forward.data, b->forward.len),
            "%s: forwarded bytes differ", what);
    const px_usage_t *u = &a->usage, *v = &b->usage;
    FUZZ_CHECK(u->present == v->present && u->input_tokens == v->input_tokens &&
                   u->output_tokens == v->output_tokens &&
                   u->cached_input_tokens == v->cached_input_tokens &&
                   u->cache_write_tokens == v->cache_write_tokens &&
                   u->reasoning_tokens == v->reasoning_tokens && u->total_tokens == v->total_tokens,
               "%s: usage differs (input %lld vs %lld, output %lld vs %lld)", what,
               (long long)u->input_tokens, (long long)v->input_tokens, (long long)u->output_tokens,
               (long long)v->output_tokens);
    FUZZ_CHECK(strcmp(a->model, b->model) == 0, "%s: model \"%s\" vs \"%s\"", what, a->model,
               b->model);
    FUZZ_CHECK(a->ncalls == b->ncalls, "%s: %zu vs %zu tool calls", what, a->ncalls, b->ncalls);
    for (size_t i = 0; i < a->ncalls; i++) {
        const px_tool_call_t *x = &a->calls[i], *y = &b->calls[i];
        FUZZ_CHECK(x->phase == y->phase && strcmp(x->name, y->name) == 0 &&
                       strcmp(x->id, y->id) == 0 && strcmp(x->args_sha256, y->args_sha256) == 0,
                   "%s: tool call %zu differs (%s/%s vs %s/%s)", what, i, x->name, x->id, y->name,
                   y->id);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input_t in = {data, size};
    uint8_t mode = fuzz_byte(&in);
    uint8_t seed = fuzz_byte(&in);
    const char *body = (const char *)in.p;
    size_t len = in.n;

    static const struct {
        px_proto_t proto;
        px_action_t action;
    } kinds[] = {{PX_PROTO_OPENAI, PX_ACTION_CHAT},         {PX_PROTO_ANTHROPIC, PX_ACTION_CHAT},
                 {PX_PROTO_OPENAI, PX_ACTION_TOOL_CALL},    {PX_PROTO_OPENAI, PX_ACTION_EMBEDDING},
                 {PX_PROTO_ANTHROPIC, PX_ACTION_TOOL_CALL}, {PX_PROTO_MCP, PX_ACTION_MCP}};
    bool sse = mode & 1;
    px_request_info_t info;
    px_request_info_reset(&info);
    info.proto = kinds[(mode >> 1) % 6].proto;
    info.action = kinds[(mode >> 1) % 6].action;
    info.usage_injected = (mode & 0x40) != 0;
    int status = (mode & 0x80) ? 500 : 200;

    outcome_t whole, pieces;
    fuzz_chunks_t chunks;
    fuzz_chunks_init(&chunks, seed, 1 + seed % 64);
    run(&info, status, sse, body, len, NULL, &whole);
    run(&info, status, sse, body, len, &chunks, &pieces);
    check_same(&whole, &pieces, true, "whole vs pieces");

    bool passthrough = !sse || !info.usage_injected || status >= 400;
    if (passthrough)
        FUZZ_CHECK(fuzz_same_bytes(whole.forward.data, whole.forward.len, body, len),
                   "the client did not get the upstream's bytes");
    else
        FUZZ_CHECK(whole.forward.len <= len, "the client got more than the upstream sent");

    /* The scanner against jansson: the same body re-encoded must read the
     * same. Escapes are left out (the scanner matches member names as
     * written, and providers never escape them). */
    if (!sse && len > 0 && memchr(body, '\\', len) == NULL) {
        json_t *v = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
        char *canon = json_is_object(v) ? json_dumps(v, JSON_COMPACT) : NULL;
        if (canon) {
            outcome_t again;
            run(&info, status, false, canon, strlen(canon), NULL, &again);
            check_same(&whole, &again, false, "body vs re-encoded body");
            rl_buf_free(&again.forward);
            free(canon);
        }
        json_decref(v);
    }
    rl_buf_free(&whole.forward);
    rl_buf_free(&pieces.forward);
    return 0;
}
