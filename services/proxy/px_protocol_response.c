/* px_protocol, response side: passes the upstream's bytes on as they arrive
 * and reads usage, tool calls and the model on the way, for SSE streams
 * (event by event) and JSON bodies (a scan of the top-level object that
 * keeps only the members it reads). See docs/protocols.md. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px_protocol.h"
#include "px_sse.h"
#include "rl_crypto.h"
#include "rl_json.h"

#define JSON_HOLD_MAX ((size_t)4 << 20) /* members of a JSON body held for parsing */
#define USAGE_MAX ((size_t)64 << 10)    /* the "usage" member */
#define MODEL_MAX ((size_t)1 << 10)     /* the "model" member */
#define ARGS_MAX ((size_t)1 << 20)      /* the streamed arguments of one tool call */

/* ---- the top-level scan of a JSON body --------------------------------------------------- */

/* Members of the top-level object worth keeping: usage and model always,
 * the one that may hold tool calls for chats. */
enum { CAP_USAGE, CAP_MODEL, CAP_TOOLS, NCAP };

typedef enum {
    JS_START, /* before the opening brace */
    JS_KEY_OR_END,
    JS_KEY,
    JS_COLON,
    JS_VALUE, /* before a member's value */
    JS_IN_VALUE,
    JS_NEXT, /* after a value: a comma or the closing brace */
    JS_DONE,
    JS_BAD,
} js_state_t;

typedef struct {
    js_state_t st;
    char key[16];
    size_t keylen;
    bool key_odd; /* escaped or longer than key[]: matches nothing */
    bool key_esc;
    int target; /* CAP_* of the current value, -1 when not kept */
    int depth;  /* nesting inside the current value */
    bool in_str, esc, scalar;
    const char *tools_keys[2]; /* members that may hold tool calls; NULL: none */
    const char *tools_key;     /* the one kept, NULL when none */
    rl_buf_t cap[NCAP];
    bool cap_ok[NCAP]; /* the value was kept whole */
} jscan_t;

/* Bytes that end a number or literal, and bytes that matter inside a container. */
static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void jscan_init(jscan_t *s, const char *tools1, const char *tools2)
{
    memset(s, 0, sizeof *s);
    s->target = -1;
    s->tools_keys[0] = tools1;
    s->tools_keys[1] = tools2;
    rl_buf_init(&s->cap[CAP_USAGE], USAGE_MAX);
    rl_buf_init(&s->cap[CAP_MODEL], MODEL_MAX);
    rl_buf_init(&s->cap[CAP_TOOLS], JSON_HOLD_MAX);
}

static void jscan_free(jscan_t *s)
{
    for (int i = 0; i < NCAP; i++)
        rl_buf_free(&s->cap[i]);
}

static int target_of(jscan_t *s)
{
    if (s->key_odd)
        return -1;
    if (s->keylen == 5 && memcmp(s->key, "usage", 5) == 0)
        return CAP_USAGE;
    if (s->keylen == 5 && memcmp(s->key, "model", 5) == 0)
        return CAP_MODEL;
    for (int i = 0; i < 2; i++) {
        const char *k = s->tools_keys[i];
        if (k && s->keylen == strlen(k) && memcmp(s->key, k, s->keylen) == 0) {
            s->tools_key = k;
            return CAP_TOOLS;
        }
    }
    return -1;
}

/* Keeps data[from..to) of the current value; a value past its bound is dropped. */
static void keep(jscan_t *s, const char *data, size_t from, size_t to)
{
    if (s->target < 0 || to <= from)
        return;
    rl_buf_t *b = &s->cap[s->target];
    if (rl_buf_append(b, data + from, to - from) != RL_OK) {
        rl_buf_free(b);
        rl_buf_init(b, 0); /* nothing more fits: the member is not read */
        rl_error_clear();
        s->target = -1;
    }
}

static void value_done(jscan_t *s)
{
    if (s->target >= 0)
        s->cap_ok[s->target] = true;
    s->target = -1;
    s->st = JS_NEXT;
}

/* Scans n more bytes of the body. Only the structure of the top level is
 * followed; values are skipped (or kept) without being parsed. */
static void jscan_feed(jscan_t *s, const char *data, size_t n)
{
    size_t i = 0;
    size_t from = 0; /* start of the kept part of the current value in data */
    while (i < n && s->st != JS_DONE && s->st != JS_BAD) {
        char c = data[i];
        switch (s->st) {
        case JS_START:
            /* Whitespace, or the bytes of a UTF-8 BOM, may come first. */
            if (c == '{')
                s->st = JS_KEY_OR_END;
            else if (!is_ws(c) && (unsigned char)c != 0xEF && (unsigned char)c != 0xBB &&
                     (unsigned char)c != 0xBF)
                s->st = JS_BAD;
            i++;
            break;
        case JS_KEY_OR_END:
            if (c == '"') {
                s->st = JS_KEY;
                s->keylen = 0;
                s->key_odd = s->key_esc = false;
            } else if (c == '}') {
                s->st = JS_DONE;
            } else if (!is_ws(c)) {
                s->st = JS_BAD;
            }
            i++;
            break;
        case JS_KEY:
            if (s->key_esc) {
                s->key_esc = false;
            } else if (c == '\\') {
                s->key_esc = s->key_odd = true;
            } else if (c == '"') {
                s->st = JS_COLON;
            } else if (s->keylen < sizeof s->key) {
                s->key[s->keylen++] = c;
            } else {
                s->key_odd = true;
            }
            i++;
            break;
        case JS_COLON:
            if (c == ':')
                s->st = JS_VALUE;
            else if (!is_ws(c))
                s->st = JS_BAD;
            i++;
            break;
        case JS_VALUE:
            if (is_ws(c)) {
                i++;
                break;
            }
            s->target = target_of(s);
            if (s->target >= 0)
                rl_buf_reset(&s->cap[s->target]);
            s->depth = 0;
            s->in_str = c == '"';
            s->esc = false;
            s->scalar = !s->in_str && c != '{' && c != '[';
            if (c == '{' || c == '[')
                s->depth = 1;
            s->st = JS_IN_VALUE;
            from = i;
            i++;
            break;
        case JS_IN_VALUE:
            if (s->scalar) {
                if (c == ',' || c == '}' || c == ']' || is_ws(c)) {
                    keep(s, data, from, i);
                    value_done(s);
                    break; /* c is read again as JS_NEXT */
                }
                i++;
                break;
            }
            if (s->in_str) {
                /* Skip the plain part of a string at once. */
                while (i < n && data[i] != '"' && data[i] != '\\' && !s->esc)
                    i++;
                if (i == n)
                    break;
                c = data[i];
                if (s->esc)
                    s->esc = false;
                else if (c == '\\')
                    s->esc = true;
                else if (c == '"')
                    s->in_str = false;
                i++;
                if (!s->in_str && s->depth == 0) {
                    keep(s, data, from, i);
                    value_done(s);
                }
                break;
            }
            while (i < n && data[i] != '"' && data[i] != '{' && data[i] != '[' && data[i] != '}' &&
                   data[i] != ']')
                i++;
            if (i == n)
                break;
            c = data[i++];
            if (c == '"')
                s->in_str = true;
            else if (c == '{' || c == '[')
                s->depth++;
            else if (--s->depth == 0) {
                keep(s, data, from, i);
                value_done(s);
            }
            break;
        case JS_NEXT:
            if (c == ',')
                s->st = JS_KEY_OR_END;
            else if (c == '}')
                s->st = JS_DONE;
            else if (!is_ws(c))
                s->st = JS_BAD;
            i++;
            break;
        case JS_DONE:
        case JS_BAD:
            break;
        }
    }
    if (s->st == JS_IN_VALUE)
        keep(s, data, from, n);
}

/* ---- the parser -------------------------------------------------------------------------- */

typedef struct {
    int choice; /* OpenAI: the choice index; Anthropic: -1 */
    int index;  /* OpenAI: tool_calls[].index; Anthropic: the content block index */
    char id[96];
    char name[PX_NAME_MAX];
    rl_buf_t args;
    bool from_start; /* args came with the block start; deltas replace them */
} acc_t;

struct px_response {
    px_proto_t proto;
    px_action_t action;
    bool read; /* usage and tool calls are read (a success of a model call) */
    bool usage_injected;
    bool finished;
    px_sse_t *sse;
    jscan_t *scan;
    char model[PX_MODEL_MAX];
    px_usage_t usage;
    int64_t a_in, a_cread, a_cwrite, a_out; /* Anthropic's counters */
    acc_t acc[PX_MAX_TOOL_CALLS];
    size_t nacc;
    px_tool_call_t calls[PX_MAX_TOOL_CALLS];
    size_t ncalls;
};

static const char *str_at(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

static bool is_type(const json_t *obj, const char *type)
{
    const char *t = str_at(obj, "type");
    return t && strcmp(t, type) == 0;
}

/* A token count: a non-negative number, else absent. */
static bool count_at(const json_t *obj, const char *key, int64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_number(v))
        return false;
    double d = json_number_value(v);
    *out = d > 0 ? (int64_t)d : 0;
    return true;
}

static void set_model(px_response_t *r, const char *model)
{
    if (r->model[0] == '\0' && model && model[0])
        snprintf(r->model, sizeof r->model, "%s", model);
}

static void sha256_hex(const void *data, size_t n, char out[65])
{
    uint8_t d[RL_SHA256_LEN];
    if (rl_sha256(data, n, d) != RL_OK || rl_hex_encode(d, sizeof d, out, 65) != RL_OK)
        out[0] = '\0';
}

/* The hash of tool arguments given as JSON text: of their compact encoding
 * when they parse (so whitespace and streaming do not change it), else of
 * the text as it is. */
static void hash_args(const char *text, size_t n, char out[65])
{
    json_t *v = n > 0 ? json_loadb(text, n, JSON_DECODE_ANY, NULL) : NULL;
    if (v != NULL && (json_is_object(v) || json_is_array(v))) {
        rl_buf_t b;
        rl_buf_init(&b, (size_t)1 << 30);
        if (rl_json_dump(v, &b) == RL_OK)
            sha256_hex(b.data, b.len, out);
        else
            sha256_hex(text, n, out);
        rl_buf_free(&b);
    } else {
        sha256_hex(text, n, out);
    }
    json_decref(v);
}

static void hash_json(const json_t *v, char out[65])
{
    if (json_is_string(v)) {
        hash_args(json_string_value(v), json_string_length(v), out);
        return;
    }
    rl_buf_t b;
    rl_buf_init(&b, (size_t)1 << 30);
    if (v != NULL && rl_json_dump(v, &b) == RL_OK)
        sha256_hex(b.data, b.len, out);
    else
        sha256_hex("{}", 2, out);
    rl_buf_free(&b);
}

/* Adds a requested call unless one with the same id is there already (the
 * Responses API repeats its items in response.completed). */
static px_tool_call_t *add_call(px_response_t *r, const char *id, const char *name)
{
    if (id && id[0]) {
        for (size_t i = 0; i < r->ncalls; i++)
            if (strcmp(r->calls[i].id, id) == 0)
                return NULL;
    }
    if (r->ncalls >= PX_MAX_TOOL_CALLS)
        return NULL;
    px_tool_call_t *t = &r->calls[r->ncalls++];
    memset(t, 0, sizeof *t);
    t->phase = PX_TOOL_REQUESTED;
    snprintf(t->id, sizeof t->id, "%s", id ? id : "");
    snprintf(t->name, sizeof t->name, "%s", name ? name : "");
    return t;
}

static acc_t *find_acc(px_response_t *r, int choice, int index, bool create)
{
    for (size_t i = 0; i < r->nacc; i++)
        if (r->acc[i].choice == choice && r->acc[i].index == index)
            return &r->acc[i];
    if (!create || r->nacc >= PX_MAX_TOOL_CALLS)
        return NULL;
    acc_t *a = &r->acc[r->nacc++];
    memset(a, 0, sizeof *a);
    a->choice = choice;
    a->index = index;
    rl_buf_init(&a->args, ARGS_MAX);
    return a;
}

static void acc_append(acc_t *a, const char *s, size_t n)
{
    if (a->from_start) {
        rl_buf_reset(&a->args);
        a->from_start = false;
    }
    if (rl_buf_append(&a->args, s, n) != RL_OK)
        rl_error_clear(); /* past ARGS_MAX: the hash covers the first MiB */
}

/* ---- usage ------------------------------------------------------------------------------- */

static void anthropic_usage_total(px_response_t *r)
{
    px_usage_t *u = &r->usage;
    u->input_tokens = r->a_in + r->a_cread + r->a_cwrite;
    u->cached_input_tokens = r->a_cread;
    u->cache_write_tokens = r->a_cwrite;
    u->output_tokens = r->a_out;
    u->reasoning_tokens = 0;
    u->total_tokens = u->input_tokens + u->output_tokens;
    u->present = true;
}

/* Anthropic's counters: message_start has them all, message_delta repeats
 * them as running totals (output_tokens always, the others when not null):
 * each replaces the last, nothing is added. */
static void anthropic_usage(px_response_t *r, const json_t *u)
{
    if (!json_is_object(u))
        return;
    bool any = count_at(u, "input_tokens", &r->a_in);
    any |= count_at(u, "cache_read_input_tokens", &r->a_cread);
    any |= count_at(u, "cache_creation_input_tokens", &r->a_cwrite);
    any |= count_at(u, "output_tokens", &r->a_out);
    if (any)
        anthropic_usage_total(r);
}

/* OpenAI's shapes: chat and completions (prompt_tokens, completion_tokens),
 * embeddings (prompt_tokens only), Responses (input_tokens, output_tokens).
 * Each report replaces the last. */
static void openai_usage(px_response_t *r, const json_t *u)
{
    if (!json_is_object(u))
        return;
    if (r->proto == PX_PROTO_ANTHROPIC || json_object_get(u, "cache_read_input_tokens") ||
        json_object_get(u, "cache_creation_input_tokens")) {
        anthropic_usage(r, u);
        return;
    }
    px_usage_t n = {0};
    if (count_at(u, "prompt_tokens", &n.input_tokens)) {
        count_at(u, "completion_tokens", &n.output_tokens);
        count_at(json_object_get(u, "prompt_tokens_details"), "cached_tokens",
                 &n.cached_input_tokens);
        count_at(json_object_get(u, "completion_tokens_details"), "reasoning_tokens",
                 &n.reasoning_tokens);
    } else if (count_at(u, "input_tokens", &n.input_tokens)) {
        count_at(u, "output_tokens", &n.output_tokens);
        count_at(json_object_get(u, "input_tokens_details"), "cached_tokens",
                 &n.cached_input_tokens);
        count_at(json_object_get(u, "output_tokens_details"), "reasoning_tokens",
                 &n.reasoning_tokens);
    } else {
        return;
    }
    n.total_tokens = n.input_tokens + n.output_tokens;
    n.present = true;
    r->usage = n;
}

/* ---- tool calls -------------------------------------------------------------------------- */

/* An OpenAI chat message (JSON) or delta (stream). */
static void openai_tool_calls(px_response_t *r, int choice, const json_t *msg, bool delta)
{
    size_t i;
    json_t *tc;
    json_array_foreach(json_object_get(msg, "tool_calls"), i, tc)
    {
        json_t *fn = json_object_get(tc, "function");
        if (fn == NULL)
            fn = json_object_get(tc, "custom"); /* custom tools: name and input */
        json_t *args = json_object_get(fn, "arguments");
        if (args == NULL)
            args = json_object_get(fn, "input");
        if (!delta) {
            px_tool_call_t *t = add_call(r, str_at(tc, "id"), str_at(fn, "name"));
            if (t)
                hash_json(args, t->args_sha256);
            continue;
        }
        int64_t index = (int64_t)i;
        count_at(tc, "index", &index);
        acc_t *a = find_acc(r, choice, (int)index, true);
        if (a == NULL)
            continue;
        if (str_at(tc, "id") && a->id[0] == '\0')
            snprintf(a->id, sizeof a->id, "%s", str_at(tc, "id"));
        if (str_at(fn, "name") && a->name[0] == '\0')
            snprintf(a->name, sizeof a->name, "%s", str_at(fn, "name"));
        if (json_is_string(args))
            acc_append(a, json_string_value(args), json_string_length(args));
    }
    /* The deprecated functions API: one call, no id. */
    json_t *fc = json_object_get(msg, "function_call");
    if (!json_is_object(fc))
        return;
    json_t *args = json_object_get(fc, "arguments");
    if (!delta) {
        px_tool_call_t *t = add_call(r, NULL, str_at(fc, "name"));
        if (t)
            hash_json(args, t->args_sha256);
        return;
    }
    acc_t *a = find_acc(r, choice, -1, true);
    if (a == NULL)
        return;
    if (str_at(fc, "name") && a->name[0] == '\0')
        snprintf(a->name, sizeof a->name, "%s", str_at(fc, "name"));
    if (json_is_string(args))
        acc_append(a, json_string_value(args), json_string_length(args));
}

static void openai_choices(px_response_t *r, const json_t *choices, bool delta)
{
    size_t i;
    json_t *c;
    json_array_foreach(choices, i, c)
    {
        int64_t index = (int64_t)i;
        count_at(c, "index", &index);
        openai_tool_calls(r, (int)index, json_object_get(c, delta ? "delta" : "message"), delta);
    }
}

static bool is_tool_block(const json_t *b)
{
    return is_type(b, "tool_use") || is_type(b, "server_tool_use") || is_type(b, "mcp_tool_use");
}

static void anthropic_content(px_response_t *r, const json_t *content)
{
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b)
    {
        if (!is_tool_block(b))
            continue;
        px_tool_call_t *t = add_call(r, str_at(b, "id"), str_at(b, "name"));
        if (t)
            hash_json(json_object_get(b, "input"), t->args_sha256);
    }
}

/* A Responses API output item. */
static void responses_item(px_response_t *r, const json_t *it)
{
    const char *id = str_at(it, "call_id");
    json_t *args;
    if (is_type(it, "function_call")) {
        args = json_object_get(it, "arguments");
    } else if (is_type(it, "custom_tool_call")) {
        args = json_object_get(it, "input");
    } else if (is_type(it, "mcp_call")) {
        args = json_object_get(it, "arguments");
        id = str_at(it, "id");
    } else {
        return;
    }
    px_tool_call_t *t = add_call(r, id, str_at(it, "name"));
    if (t)
        hash_json(args, t->args_sha256);
}

static void responses_output(px_response_t *r, const json_t *output)
{
    size_t i;
    json_t *it;
    json_array_foreach(output, i, it) responses_item(r, it);
}

/* Streamed calls are complete at the end of the stream. */
static void finish_accumulators(px_response_t *r)
{
    for (size_t i = 0; i < r->nacc; i++) {
        acc_t *a = &r->acc[i];
        px_tool_call_t *t = add_call(r, a->id, a->name);
        if (t) {
            if (a->args.len == 0)
                sha256_hex("{}", 2, t->args_sha256); /* a call without arguments */
            else
                hash_args(a->args.data, a->args.len, t->args_sha256);
        }
        rl_buf_free(&a->args);
    }
    r->nacc = 0;
}

/* ---- SSE events -------------------------------------------------------------------------- */

static bool has(const char *s, size_t n, const char *needle)
{
    return memmem(s, n, needle, strlen(needle)) != NULL;
}

/* True when the data holds a "usage" member that is not null. */
static bool has_live_usage(const char *s, size_t n)
{
    const char *end = s + n, *p = s;
    while ((p = memmem(p, (size_t)(end - p), "\"usage\"", 7)) != NULL) {
        p += 7;
        while (p < end && is_ws(*p))
            p++;
        if (p == end || *p != ':')
            continue;
        p++;
        while (p < end && is_ws(*p))
            p++;
        if (p < end && *p != 'n')
            return true;
    }
    return false;
}

/* Whether an event may carry something the parser reads; most text deltas
 * do not, and are not parsed. */
static bool worth_parsing(const px_response_t *r, const char *d, size_t n)
{
    return has_live_usage(d, n) || (r->model[0] == '\0' && has(d, n, "\"model\"")) ||
           has(d, n, "tool_calls") || has(d, n, "function_call") || has(d, n, "tool_use") ||
           has(d, n, "input_json_delta") || has(d, n, "custom_tool_call") || has(d, n, "mcp_call");
}

static void anthropic_event(px_response_t *r, const json_t *o)
{
    const char *type = str_at(o, "type");
    if (type == NULL)
        return;
    if (strcmp(type, "message_start") == 0) {
        json_t *m = json_object_get(o, "message");
        set_model(r, str_at(m, "model"));
        anthropic_usage(r, json_object_get(m, "usage"));
    } else if (strcmp(type, "message_delta") == 0) {
        anthropic_usage(r, json_object_get(o, "usage"));
    } else if (strcmp(type, "content_block_start") == 0) {
        json_t *b = json_object_get(o, "content_block");
        int64_t index;
        if (!is_tool_block(b) || !count_at(o, "index", &index))
            return;
        acc_t *a = find_acc(r, -1, (int)index, true);
        if (a == NULL)
            return;
        snprintf(a->id, sizeof a->id, "%s", str_at(b, "id") ? str_at(b, "id") : "");
        snprintf(a->name, sizeof a->name, "%s", str_at(b, "name") ? str_at(b, "name") : "");
        /* The start carries "input": {} and the deltas the real input;
         * a non-empty start input stands unless deltas follow. */
        json_t *in = json_object_get(b, "input");
        if (json_object_size(in) > 0 && rl_json_dump(in, &a->args) == RL_OK)
            a->from_start = true;
    } else if (strcmp(type, "content_block_delta") == 0) {
        json_t *d = json_object_get(o, "delta");
        json_t *pj = json_object_get(d, "partial_json");
        int64_t index;
        if (!is_type(d, "input_json_delta") || !json_is_string(pj) || !count_at(o, "index", &index))
            return;
        acc_t *a = find_acc(r, -1, (int)index, false);
        if (a)
            acc_append(a, json_string_value(pj), json_string_length(pj));
    }
}

static void responses_event(px_response_t *r, const char *type, const json_t *o)
{
    if (strcmp(type, "response.output_item.done") == 0) {
        responses_item(r, json_object_get(o, "item"));
        return;
    }
    json_t *resp = json_object_get(o, "response");
    if (!json_is_object(resp))
        return;
    set_model(r, str_at(resp, "model"));
    openai_usage(r, json_object_get(resp, "usage"));
    if (strcmp(type, "response.completed") == 0 || strcmp(type, "response.incomplete") == 0 ||
        strcmp(type, "response.failed") == 0)
        responses_output(r, json_object_get(resp, "output"));
}

/* Returns false for the one event the client must not see: the usage-only
 * chunk of a stream whose usage the proxy asked for. */
static bool on_event(void *ctx, const px_sse_event_t *ev)
{
    px_response_t *r = ctx;
    if (ev->data == NULL || ev->data_len == 0 || ev->data[0] != '{' ||
        !worth_parsing(r, ev->data, ev->data_len))
        return true; /* "[DONE]" among them */
    json_t *o = json_loadb(ev->data, ev->data_len, 0, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return true;
    }
    bool forward = true;
    const char *type = str_at(o, "type");
    if (r->proto == PX_PROTO_ANTHROPIC) {
        anthropic_event(r, o);
    } else if (type && strncmp(type, "response.", 9) == 0) {
        responses_event(r, type, o);
    } else {
        set_model(r, str_at(o, "model"));
        json_t *usage = json_object_get(o, "usage");
        json_t *choices = json_object_get(o, "choices");
        openai_usage(r, usage);
        openai_choices(r, choices, true);
        if (r->usage_injected && json_is_object(usage) && json_is_array(choices) &&
            json_array_size(choices) == 0)
            forward = false;
    }
    json_decref(o);
    return forward;
}

/* ---- JSON bodies ------------------------------------------------------------------------- */

static json_t *load_kept(const jscan_t *s, int which)
{
    const rl_buf_t *b = &s->cap[which];
    if (!s->cap_ok[which] || b->len == 0)
        return NULL;
    return json_loadb(b->data, b->len, JSON_DECODE_ANY, NULL);
}

/* The model name kept by the scanner: printable ASCII without escapes
 * (every provider's) is taken as it is, anything else is decoded and
 * validated by jansson. */
static void read_model(px_response_t *r, const jscan_t *s)
{
    const rl_buf_t *b = &s->cap[CAP_MODEL];
    if (r->model[0] != '\0' || !s->cap_ok[CAP_MODEL] || b->len < 2)
        return;
    const char *text = b->data;
    size_t n = b->len;
    bool plain = text[0] == '"' && text[n - 1] == '"' && n - 2 < sizeof r->model;
    for (size_t i = 1; plain && i + 1 < n; i++)
        plain = text[i] != '\\' && text[i] != '"' && text[i] >= 0x20 && text[i] < 0x7f;
    if (plain) {
        memcpy(r->model, text + 1, n - 2);
        r->model[n - 2] = '\0';
        return;
    }
    json_t *v = load_kept(s, CAP_MODEL);
    set_model(r, json_string_value(v));
    json_decref(v);
}

static void read_json_body(px_response_t *r)
{
    jscan_t *s = r->scan;
    read_model(r, s);
    json_t *v = load_kept(s, CAP_USAGE);
    openai_usage(r, v);
    json_decref(v);
    const rl_buf_t *t = &s->cap[CAP_TOOLS];
    if (!s->cap_ok[CAP_TOOLS] || t->len == 0 || s->tools_key == NULL ||
        !(has(t->data, t->len, "tool_calls") || has(t->data, t->len, "function_call") ||
          has(t->data, t->len, "tool_use") || has(t->data, t->len, "custom_tool_call") ||
          has(t->data, t->len, "mcp_call")))
        return;
    v = load_kept(s, CAP_TOOLS);
    if (strcmp(s->tools_key, "choices") == 0)
        openai_choices(r, v, false);
    else if (strcmp(s->tools_key, "content") == 0)
        anthropic_content(r, v);
    else
        responses_output(r, v);
    json_decref(v);
}

/* ---- the interface ----------------------------------------------------------------------- */

rl_status_t px_response_create(const px_request_info_t *info, int status, bool sse,
                               px_response_t **out)
{
    /* acc[] and calls[] (most of the struct) are cleared entry by entry as
     * they fill: only what precedes them is zeroed. */
    px_response_t *r = malloc(sizeof *r);
    if (r == NULL)
        return rl_error(RL_ERR_NOMEM, "response parser allocation failed");
    memset(r, 0, offsetof(px_response_t, acc));
    r->nacc = 0;
    r->ncalls = 0;
    r->proto = info ? info->proto : PX_PROTO_HTTP;
    r->action = info ? info->action : PX_ACTION_HTTP;
    r->usage_injected = info && info->usage_injected;
    /* Model calls are read when they succeed; errors, MCP and plain HTTP
     * pass through untouched. */
    r->read = status < 400 && (r->action == PX_ACTION_CHAT || r->action == PX_ACTION_TOOL_CALL ||
                               r->action == PX_ACTION_EMBEDDING);
    if (!r->read)
        r->usage_injected = false;
    rl_status_t st = RL_OK;
    if (r->read && sse) {
        st = px_sse_create(PX_SSE_EVENT_MAX, on_event, r, &r->sse);
    } else if (r->read) {
        r->scan = malloc(sizeof *r->scan);
        if (r->scan == NULL) {
            st = rl_error(RL_ERR_NOMEM, "response parser allocation failed");
        } else {
            /* Tool calls live in "choices" (chat), "output" (Responses) or
             * "content" (Anthropic); embeddings have none. */
            if (r->action == PX_ACTION_EMBEDDING)
                jscan_init(r->scan, NULL, NULL);
            else if (r->proto == PX_PROTO_ANTHROPIC)
                jscan_init(r->scan, "content", NULL);
            else
                jscan_init(r->scan, "choices", "output");
        }
    }
    if (st != RL_OK) {
        free(r->scan);
        free(r);
        return st;
    }
    *out = r;
    return RL_OK;
}

void px_response_destroy(px_response_t *r)
{
    if (r == NULL)
        return;
    px_sse_destroy(r->sse);
    if (r->scan) {
        jscan_free(r->scan);
        free(r->scan);
    }
    for (size_t i = 0; i < r->nacc; i++)
        rl_buf_free(&r->acc[i].args);
    free(r);
}

rl_status_t px_response_feed(px_response_t *r, const char *data, size_t n, rl_buf_t *forward)
{
    if (n == 0)
        return RL_OK;
    if (r->sse)
        return px_sse_feed(r->sse, data, n, forward);
    rl_status_t st = rl_buf_append(forward, data, n);
    if (st == RL_OK && r->scan)
        jscan_feed(r->scan, data, n);
    return st;
}

rl_status_t px_response_finish(px_response_t *r, rl_buf_t *forward)
{
    if (r->finished)
        return RL_OK;
    r->finished = true;
    rl_status_t st = RL_OK;
    if (r->sse)
        st = px_sse_finish(r->sse, forward);
    else if (r->scan)
        read_json_body(r);
    finish_accumulators(r);
    return st;
}

void px_response_usage(const px_response_t *r, px_usage_t *out)
{
    *out = r->usage;
}

size_t px_response_tool_calls(const px_response_t *r, const px_tool_call_t **calls)
{
    *calls = r->calls;
    return r->ncalls;
}

const char *px_response_model(const px_response_t *r)
{
    return r->model;
}
