/* px_protocol, request side: classification of a call by its path and body,
 * the tool results an agent sends back, and the rewrites a gate asks for
 * (model pin, request defaults, include_usage). See docs/protocols.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "px_protocol.h"
#include "rl_crypto.h"
#include "rl_json.h"

/* The endpoints the proxy reads; everything else is forwarded unread. */
typedef enum {
    EP_OTHER,
    EP_CHAT,        /* OpenAI chat completions */
    EP_COMPLETIONS, /* OpenAI legacy completions */
    EP_RESPONSES,   /* OpenAI Responses API */
    EP_EMBEDDINGS,
    EP_MODELS,
    EP_MESSAGES,     /* Anthropic messages */
    EP_COUNT_TOKENS, /* Anthropic messages/count_tokens */
    EP_ANTHROPIC,    /* any other Anthropic messages path (batches) */
} endpoint_t;

/* ---- classification ---------------------------------------------------------------------- */

static bool ends_with(const char *s, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);
    return len >= n && memcmp(s + len - n, suffix, n) == 0;
}

static bool contains(const char *s, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    return len >= n && memmem(s, len, needle, n) != NULL;
}

/* The endpoint of path, matched on its suffix so a prefix before /v1 does not
 * matter. Gates of a provider's kind also match the suffix without /v1: a
 * client whose base URL lacks it talks to an upstream URL that holds it. */
static endpoint_t endpoint_of(px_kind_t kind, const char *path)
{
    if (path == NULL)
        return EP_OTHER;
    size_t len = strcspn(path, "?#");
    while (len > 1 && path[len - 1] == '/')
        len--;
    bool openai = kind == PX_KIND_OPENAI;
    bool anthropic = kind == PX_KIND_ANTHROPIC;

    if (ends_with(path, len, "/v1/messages/count_tokens") ||
        (anthropic && ends_with(path, len, "/messages/count_tokens")))
        return EP_COUNT_TOKENS;
    if (ends_with(path, len, "/v1/messages") || (anthropic && ends_with(path, len, "/messages")))
        return EP_MESSAGES;
    if (contains(path, len, "/v1/messages/"))
        return EP_ANTHROPIC;
    if (ends_with(path, len, "/v1/chat/completions") ||
        (openai && ends_with(path, len, "/chat/completions")))
        return EP_CHAT;
    if (ends_with(path, len, "/v1/completions") || (openai && ends_with(path, len, "/completions")))
        return EP_COMPLETIONS;
    if (ends_with(path, len, "/v1/responses") || (openai && ends_with(path, len, "/responses")))
        return EP_RESPONSES;
    if (ends_with(path, len, "/v1/embeddings") || (openai && ends_with(path, len, "/embeddings")))
        return EP_EMBEDDINGS;
    if (ends_with(path, len, "/v1/models") || contains(path, len, "/v1/models/") ||
        (openai && ends_with(path, len, "/models")))
        return EP_MODELS;
    return EP_OTHER;
}

static px_proto_t proto_of(px_kind_t kind, endpoint_t ep)
{
    if (kind == PX_KIND_MCP)
        return PX_PROTO_MCP;
    switch (ep) {
    case EP_MESSAGES:
    case EP_COUNT_TOKENS:
    case EP_ANTHROPIC:
        return PX_PROTO_ANTHROPIC;
    case EP_CHAT:
    case EP_COMPLETIONS:
    case EP_RESPONSES:
    case EP_EMBEDDINGS:
        return PX_PROTO_OPENAI;
    case EP_MODELS:
        return kind == PX_KIND_ANTHROPIC ? PX_PROTO_ANTHROPIC : PX_PROTO_OPENAI;
    case EP_OTHER:
        break;
    }
    if (kind == PX_KIND_OPENAI)
        return PX_PROTO_OPENAI;
    if (kind == PX_KIND_ANTHROPIC)
        return PX_PROTO_ANTHROPIC;
    return PX_PROTO_HTTP;
}

px_proto_t px_protocol_of(px_kind_t kind, const char *path)
{
    return proto_of(kind, endpoint_of(kind, path));
}

/* ---- small helpers ----------------------------------------------------------------------- */

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

static const char *str_at(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key)); /* NULL unless a string */
}

/* Present and not null: what "the client set it" means. */
static bool is_set(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return v != NULL && !json_is_null(v);
}

static void sha256_hex(const void *data, size_t n, char out[65])
{
    uint8_t d[RL_SHA256_LEN];
    if (rl_sha256(data, n, d) != RL_OK || rl_hex_encode(d, sizeof d, out, 65) != RL_OK)
        out[0] = '\0';
}

/* The hash of a JSON value as a tool's content or arguments: a string is
 * hashed as its text, anything else as its compact JSON encoding. */
static void hash_value(const json_t *v, char out[65])
{
    if (v == NULL) {
        sha256_hex("", 0, out);
        return;
    }
    if (json_is_string(v)) {
        sha256_hex(json_string_value(v), json_string_length(v), out);
        return;
    }
    rl_buf_t b;
    rl_buf_init(&b, (size_t)1 << 30);
    if (rl_json_dump(v, &b) == RL_OK)
        sha256_hex(b.data, b.len, out);
    else
        out[0] = '\0';
    rl_buf_free(&b);
}

/* The JSON-RPC id as text: a number's digits or a string's value. */
static void id_text(const json_t *id, char *out, size_t cap)
{
    if (json_is_string(id))
        copy_str(out, cap, json_string_value(id));
    else if (json_is_integer(id))
        snprintf(out, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(id));
    else
        out[0] = '\0';
}

static px_tool_call_t *add_tool(px_request_info_t *info, px_tool_phase_t phase, const char *id,
                                const char *name)
{
    if (info->ntool_calls >= PX_MAX_TOOL_CALLS)
        return NULL;
    px_tool_call_t *t = &info->tool_calls[info->ntool_calls++];
    memset(t, 0, sizeof *t);
    t->phase = phase;
    copy_str(t->id, sizeof t->id, id);
    copy_str(t->name, sizeof t->name, name);
    return t;
}

/* ---- text size for the token estimate ---------------------------------------------------- */

/* Bytes of the text in an OpenAI / Anthropic content value: a string, or an
 * array of parts whose "text" counts (Anthropic tool_result content inside). */
static size_t content_bytes(const json_t *c)
{
    if (json_is_string(c))
        return json_string_length(c);
    if (!json_is_array(c))
        return 0;
    size_t n = 0, i;
    json_t *p;
    json_array_foreach(c, i, p)
    {
        if (json_is_string(p))
            n += json_string_length(p);
        else if (json_is_string(json_object_get(p, "text")))
            n += json_string_length(json_object_get(p, "text"));
        else if (json_is_object(p))
            n += content_bytes(json_object_get(p, "content"));
    }
    return n;
}

static int64_t tokens_of(size_t bytes)
{
    return (int64_t)((bytes + 3) / 4);
}

/* ---- tool results sent back -------------------------------------------------------------- */

/* Only the results after the last assistant turn are new in this call; the
 * ones before it were recorded with the call that sent them, and counting
 * them again would make every long agent run look like a loop. */

static const char *openai_call_name(const json_t *msgs, const char *id)
{
    size_t i, j;
    json_t *m, *tc;
    json_array_foreach(msgs, i, m)
    {
        const char *role = str_at(m, "role");
        if (role == NULL || strcmp(role, "assistant") != 0)
            continue;
        json_array_foreach(json_object_get(m, "tool_calls"), j, tc)
        {
            const char *tid = str_at(tc, "id");
            if (tid == NULL || strcmp(tid, id) != 0)
                continue;
            const char *name = str_at(json_object_get(tc, "function"), "name");
            return name ? name : str_at(json_object_get(tc, "custom"), "name");
        }
    }
    return NULL;
}

static void openai_tool_results(const json_t *msgs, px_request_info_t *info)
{
    size_t n = json_array_size(msgs), start = 0;
    for (size_t i = n; i > 0; i--) {
        const char *role = str_at(json_array_get(msgs, i - 1), "role");
        if (role && strcmp(role, "assistant") == 0) {
            start = i;
            break;
        }
    }
    for (size_t i = start; i < n; i++) {
        json_t *m = json_array_get(msgs, i);
        const char *role = str_at(m, "role");
        px_tool_call_t *t = NULL;
        if (role && strcmp(role, "tool") == 0) {
            const char *id = str_at(m, "tool_call_id");
            t = add_tool(info, PX_TOOL_RESULT, id, id ? openai_call_name(msgs, id) : NULL);
        } else if (role && strcmp(role, "function") == 0) { /* the deprecated functions API */
            t = add_tool(info, PX_TOOL_RESULT, NULL, str_at(m, "name"));
        }
        if (t)
            hash_value(json_object_get(m, "content"), t->args_sha256);
    }
}

static const char *anthropic_call_name(const json_t *msgs, const char *id)
{
    size_t i, j;
    json_t *m, *b;
    json_array_foreach(msgs, i, m)
    {
        const char *role = str_at(m, "role");
        if (role == NULL || strcmp(role, "assistant") != 0)
            continue;
        json_array_foreach(json_object_get(m, "content"), j, b)
        {
            const char *bid = str_at(b, "id");
            if (bid && strcmp(bid, id) == 0)
                return str_at(b, "name");
        }
    }
    return NULL;
}

static void anthropic_tool_results(const json_t *msgs, px_request_info_t *info)
{
    size_t n = json_array_size(msgs), start = 0;
    for (size_t i = n; i > 0; i--) {
        const char *role = str_at(json_array_get(msgs, i - 1), "role");
        if (role && strcmp(role, "assistant") == 0) {
            start = i;
            break;
        }
    }
    for (size_t i = start; i < n; i++) {
        json_t *m = json_array_get(msgs, i);
        const char *role = str_at(m, "role");
        if (role == NULL || strcmp(role, "user") != 0)
            continue;
        size_t j;
        json_t *b;
        json_array_foreach(json_object_get(m, "content"), j, b)
        {
            const char *type = str_at(b, "type");
            if (type == NULL || strcmp(type, "tool_result") != 0)
                continue;
            const char *id = str_at(b, "tool_use_id");
            px_tool_call_t *t =
                add_tool(info, PX_TOOL_RESULT, id, id ? anthropic_call_name(msgs, id) : NULL);
            if (t)
                hash_value(json_object_get(b, "content"), t->args_sha256);
        }
    }
}

static bool has_type(const json_t *item, const char *type)
{
    const char *t = str_at(item, "type");
    return t && strcmp(t, type) == 0;
}

static const char *responses_call_name(const json_t *items, const char *call_id)
{
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it)
    {
        if (!has_type(it, "function_call") && !has_type(it, "custom_tool_call"))
            continue;
        const char *cid = str_at(it, "call_id");
        if (cid && strcmp(cid, call_id) == 0)
            return str_at(it, "name");
    }
    return NULL;
}

static void responses_tool_results(const json_t *items, px_request_info_t *info)
{
    size_t n = json_array_size(items), start = 0;
    for (size_t i = n; i > 0; i--) {
        const char *role = str_at(json_array_get(items, i - 1), "role");
        if (role && strcmp(role, "assistant") == 0) {
            start = i;
            break;
        }
    }
    for (size_t i = start; i < n; i++) {
        json_t *it = json_array_get(items, i);
        if (!has_type(it, "function_call_output") && !has_type(it, "custom_tool_call_output"))
            continue;
        const char *id = str_at(it, "call_id");
        px_tool_call_t *t =
            add_tool(info, PX_TOOL_RESULT, id, id ? responses_call_name(items, id) : NULL);
        if (t)
            hash_value(json_object_get(it, "output"), t->args_sha256);
    }
}

/* ---- rewrites ---------------------------------------------------------------------------- */

/* A rewrite is a few edits spliced into the client's own text, so whatever
 * it did not ask to change stays byte for byte what it sent: numbers keep
 * their spelling, strings their escapes, members their order. The parsed
 * tree decides what to change; the text is only scanned for positions. */

#define MAX_EDITS 8

typedef struct {
    size_t at, del; /* replace body[at..at+del) */
    char *text;     /* owned */
} edit_t;

typedef struct {
    const char *body;
    size_t len;
    edit_t e[MAX_EDITS];
    size_t n;
    size_t appended; /* members added before the closing brace */
    bool failed;     /* an allocation failed */
} edits_t;

static size_t skip_ws(const char *s, size_t i, size_t n)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    return i;
}

/* The end of the value that starts at s[i]. The text parsed already, so
 * only strings and nesting need following. */
static size_t skip_value(const char *s, size_t i, size_t n)
{
    if (i >= n)
        return n;
    if (s[i] == '"') {
        for (i++; i < n; i++) {
            if (s[i] == '\\')
                i++;
            else if (s[i] == '"')
                return i + 1;
        }
        return n;
    }
    if (s[i] != '{' && s[i] != '[') {
        while (i < n && strchr(",}] \t\r\n", s[i]) == NULL)
            i++;
        return i;
    }
    int depth = 0;
    bool in_str = false;
    for (; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if ((c == '}' || c == ']') && --depth == 0) {
            return i + 1;
        }
    }
    return n;
}

/* Whether the member name s[b..e) (quotes included) is key; escaped names
 * are decoded so "\u006dodel" cannot slip past a pin. */
static bool name_is(const char *s, size_t b, size_t e, const char *key)
{
    size_t klen = strlen(key);
    if (memchr(s + b, '\\', e - b) == NULL)
        return e - b == klen + 2 && memcmp(s + b + 1, key, klen) == 0;
    json_t *v = json_loadb(s + b, e - b, JSON_DECODE_ANY, NULL);
    bool same = json_is_string(v) && strcmp(json_string_value(v), key) == 0;
    json_decref(v);
    return same;
}

/* Finds the value of the top-level member key: [*vb, *ve). When absent,
 * returns false and *vb is the position of the closing brace. */
static bool find_member(const char *s, size_t n, const char *key, size_t *vb, size_t *ve)
{
    size_t i = skip_ws(s, 0, n);
    if (i >= n || s[i] != '{')
        return false;
    i++;
    for (;;) {
        i = skip_ws(s, i, n);
        if (i >= n || s[i] == '}')
            break;
        size_t kb = i, ke = skip_value(s, i, n);
        i = skip_ws(s, ke, n);
        i = skip_ws(s, i + 1, n); /* past ':' */
        size_t b = i, e = skip_value(s, i, n);
        if (name_is(s, kb, ke, key)) {
            *vb = b;
            *ve = e;
            return true;
        }
        i = skip_ws(s, e, n);
        if (i < n && s[i] == ',')
            i++;
    }
    *vb = i;
    return false;
}

static void edit_add(edits_t *ed, size_t at, size_t del, char *text)
{
    if (text == NULL || ed->n == MAX_EDITS) {
        free(text);
        ed->failed = true;
        return;
    }
    ed->e[ed->n++] = (edit_t){.at = at, .del = del, .text = text};
}

/* Sets top-level member key to the JSON text value (owned): replaced in
 * place when present, else added last. root: the parsed body, to know
 * whether the object had members. */
static void edit_set(edits_t *ed, const json_t *root, const char *key, char *value)
{
    if (value == NULL) {
        ed->failed = true;
        return;
    }
    size_t vb, ve;
    if (find_member(ed->body, ed->len, key, &vb, &ve)) {
        edit_add(ed, vb, ve - vb, value);
        return;
    }
    bool comma = json_object_size(root) > 0 || ed->appended > 0;
    char *text = NULL;
    if (asprintf(&text, "%s\"%s\":%s", comma ? "," : "", key, value) < 0)
        text = NULL;
    free(value);
    ed->appended++;
    edit_add(ed, vb, 0, text);
}

static void edits_free(edits_t *ed)
{
    for (size_t i = 0; i < ed->n; i++)
        free(ed->e[i].text);
    ed->n = 0;
}

/* Writes the edited body to out. Nothing to do: out untouched. */
static rl_status_t edits_apply(edits_t *ed, rl_buf_t *out)
{
    if (ed->failed) {
        edits_free(ed);
        return rl_error(RL_ERR_NOMEM, "request rewrite failed");
    }
    if (ed->n == 0)
        return RL_OK;
    /* By position; edits at one position keep the order they were made in. */
    edit_t sorted[MAX_EDITS];
    size_t order[MAX_EDITS];
    for (size_t i = 0; i < ed->n; i++)
        order[i] = i;
    for (size_t i = 1; i < ed->n; i++)
        for (size_t j = i; j > 0 && ed->e[order[j]].at < ed->e[order[j - 1]].at; j--) {
            size_t t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    for (size_t i = 0; i < ed->n; i++)
        sorted[i] = ed->e[order[i]];
    rl_buf_reset(out);
    rl_status_t st = RL_OK;
    size_t pos = 0;
    for (size_t i = 0; i < ed->n && st == RL_OK; i++) {
        st = rl_buf_append(out, ed->body + pos, sorted[i].at - pos);
        if (st == RL_OK)
            st = rl_buf_append_str(out, sorted[i].text);
        pos = sorted[i].at + sorted[i].del;
    }
    if (st == RL_OK)
        st = rl_buf_append(out, ed->body + pos, ed->len - pos);
    if (st != RL_OK)
        rl_buf_reset(out);
    edits_free(ed);
    return st;
}

/* The JSON text of a number: integers as they are, reals in the shortest
 * form that reads back the same (0.2, not 0.20000000000000001). */
static char *number_text(const json_t *v)
{
    char buf[64];
    if (json_is_integer(v)) {
        snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    } else {
        double d = json_real_value(v);
        for (int p = 1; p <= 17; p++) {
            snprintf(buf, sizeof buf, "%.*g", p, d);
            if (strtod(buf, NULL) == d)
                break;
        }
    }
    return strdup(buf);
}

static char *string_text(const char *s)
{
    json_t *v = json_string(s);
    char *t = v ? json_dumps(v, JSON_ENCODE_ANY) : NULL;
    json_decref(v);
    return t;
}

/* Sets key to the gate's default when the client did not set it and the
 * default has the expected type. */
static void set_default(edits_t *ed, const json_t *root, const char *key, const json_t *dflt,
                        bool real)
{
    if (dflt == NULL || is_set(root, key))
        return;
    if (real ? !json_is_number(dflt) : !json_is_integer(dflt))
        return;
    edit_set(ed, root, key, number_text(dflt));
}

static bool has_system_message(const json_t *msgs)
{
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m)
    {
        const char *role = str_at(m, "role");
        if (role && (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0))
            return true;
    }
    return false;
}

/* Puts a system message first in "messages". */
static void prepend_system(edits_t *ed, const json_t *msgs, const char *sys)
{
    size_t vb, ve;
    if (!find_member(ed->body, ed->len, "messages", &vb, &ve) || ed->body[vb] != '[')
        return;
    char *content = string_text(sys), *text = NULL;
    if (content == NULL || asprintf(&text, "{\"role\":\"system\",\"content\":%s}%s", content,
                                    json_array_size(msgs) > 0 ? "," : "") < 0)
        text = NULL;
    free(content);
    edit_add(ed, vb + 1, 0, text);
}

static void apply_defaults(edits_t *ed, const json_t *root, endpoint_t ep, const json_t *d)
{
    if (!json_is_object(d))
        return;
    const json_t *temp = json_object_get(d, "temperature");
    const json_t *top_p = json_object_get(d, "top_p");
    const json_t *max = json_object_get(d, "max_tokens");
    const char *sys = json_string_value(json_object_get(d, "system_prompt"));

    if (ep == EP_MESSAGES) {
        /* Recent Claude models refuse temperature and top_p together: a
         * default is added only when the client chose neither, and then one. */
        if (!is_set(root, "temperature") && !is_set(root, "top_p")) {
            if (json_is_number(temp))
                set_default(ed, root, "temperature", temp, true);
            else
                set_default(ed, root, "top_p", top_p, true);
        }
    } else {
        set_default(ed, root, "temperature", temp, true);
        set_default(ed, root, "top_p", top_p, true);
    }

    switch (ep) {
    case EP_CHAT:
        /* max_tokens is refused by OpenAI's reasoning models; its successor
         * is accepted by every chat model. Either one set by the client wins. */
        if (!is_set(root, "max_tokens"))
            set_default(ed, root, "max_completion_tokens", max, false);
        break;
    case EP_RESPONSES:
        set_default(ed, root, "max_output_tokens", max, false);
        break;
    case EP_COMPLETIONS:
    case EP_MESSAGES:
        set_default(ed, root, "max_tokens", max, false);
        break;
    default:
        break;
    }

    if (sys == NULL)
        return;
    if (ep == EP_CHAT) {
        json_t *msgs = json_object_get(root, "messages");
        if (json_is_array(msgs) && !has_system_message(msgs))
            prepend_system(ed, msgs, sys);
    } else if (ep == EP_RESPONSES && !is_set(root, "instructions")) {
        edit_set(ed, root, "instructions", string_text(sys));
    } else if (ep == EP_MESSAGES && !is_set(root, "system")) {
        edit_set(ed, root, "system", string_text(sys));
    }
}

/* Replaces or adds "model" when the gate pins one. */
static void pin_model(edits_t *ed, const json_t *root, const px_gate_t *gate)
{
    if (gate == NULL || gate->pinned_model == NULL || gate->pinned_model[0] == '\0')
        return;
    const char *cur = str_at(root, "model");
    if (cur && strcmp(cur, gate->pinned_model) == 0)
        return;
    edit_set(ed, root, "model", string_text(gate->pinned_model));
}

/* OpenAI streams report usage only when asked; ask for it and remember to
 * remove the chunk the client did not ask for. */
static void inject_include_usage(edits_t *ed, const json_t *root, px_request_info_t *info)
{
    json_t *so = json_object_get(root, "stream_options");
    char *text;
    if (json_is_object(so)) {
        if (json_is_true(json_object_get(so, "include_usage")))
            return;
        /* A small object of flags: rewritten whole, include_usage set. */
        json_t *copy = json_deep_copy(so);
        if (copy == NULL || json_object_set_new(copy, "include_usage", json_true()) != 0) {
            json_decref(copy);
            ed->failed = true;
            return;
        }
        text = json_dumps(copy, JSON_COMPACT);
        json_decref(copy);
    } else if (so == NULL || json_is_null(so)) {
        text = strdup("{\"include_usage\":true}");
    } else {
        return; /* not ours to fix: the upstream will answer 400 */
    }
    edit_set(ed, root, "stream_options", text);
    info->usage_injected = true;
}

/* ---- per endpoint ------------------------------------------------------------------------ */

/* The model as forwarded: the pin, else the client's. */
static void model_of(const json_t *root, const px_gate_t *gate, px_request_info_t *info)
{
    const char *m = str_at(root, "model");
    if (gate && gate->pinned_model && gate->pinned_model[0])
        m = gate->pinned_model;
    copy_str(info->model, sizeof info->model, m);
}

static rl_status_t parse_body(const char *body, size_t len, json_t **root)
{
    if (body == NULL || len == 0)
        return rl_error(RL_ERR_INVALID, "the request body is empty; a JSON object is expected");
    return rl_json_parse_object(body, len, 0, root);
}

static size_t chat_text_bytes(const json_t *root, endpoint_t ep)
{
    size_t n = 0, i;
    json_t *m;
    switch (ep) {
    case EP_CHAT:
    case EP_MESSAGES:
        n += content_bytes(json_object_get(root, "system"));
        json_array_foreach(json_object_get(root, "messages"), i, m) n +=
            content_bytes(json_object_get(m, "content"));
        break;
    case EP_COMPLETIONS:
        n += content_bytes(json_object_get(root, "prompt"));
        break;
    case EP_RESPONSES: {
        n += content_bytes(json_object_get(root, "instructions"));
        json_t *in = json_object_get(root, "input");
        if (json_is_string(in)) {
            n += json_string_length(in);
        } else {
            json_array_foreach(in, i, m)
            {
                n += content_bytes(json_object_get(m, "content"));
                n += content_bytes(json_object_get(m, "output"));
            }
        }
        break;
    }
    default:
        break;
    }
    return n;
}

static rl_status_t prepare_chat(endpoint_t ep, const char *body, size_t len, const px_gate_t *gate,
                                px_request_info_t *info, rl_buf_t *rewritten)
{
    json_t *root;
    rl_status_t st = parse_body(body, len, &root);
    if (st != RL_OK)
        return st;
    info->action = PX_ACTION_CHAT;
    info->stream = json_is_true(json_object_get(root, "stream"));

    if (ep == EP_CHAT)
        openai_tool_results(json_object_get(root, "messages"), info);
    else if (ep == EP_MESSAGES)
        anthropic_tool_results(json_object_get(root, "messages"), info);
    else if (ep == EP_RESPONSES)
        responses_tool_results(json_object_get(root, "input"), info);
    if (info->ntool_calls > 0)
        info->action = PX_ACTION_TOOL_CALL;
    info->estimated_input_tokens = tokens_of(chat_text_bytes(root, ep));

    edits_t ed = {.body = body, .len = len};
    pin_model(&ed, root, gate);
    if (gate != NULL)
        apply_defaults(&ed, root, ep, gate->request_defaults);
    if (info->stream && (ep == EP_CHAT || ep == EP_COMPLETIONS))
        inject_include_usage(&ed, root, info);
    model_of(root, gate, info);
    st = edits_apply(&ed, rewritten);
    json_decref(root);
    return st;
}

static rl_status_t prepare_embeddings(const char *body, size_t len, const px_gate_t *gate,
                                      px_request_info_t *info, rl_buf_t *rewritten)
{
    json_t *root;
    rl_status_t st = parse_body(body, len, &root);
    if (st != RL_OK)
        return st;
    info->action = PX_ACTION_EMBEDDING;
    json_t *in = json_object_get(root, "input");
    size_t bytes = 0, i;
    json_t *v;
    if (json_is_string(in)) {
        bytes = json_string_length(in);
    } else {
        json_array_foreach(in, i, v)
        {
            if (json_is_string(v))
                bytes += json_string_length(v);
            else if (json_is_integer(v))
                bytes += 4; /* a token id */
            else if (json_is_array(v))
                bytes += 4 * json_array_size(v);
        }
    }
    info->estimated_input_tokens = tokens_of(bytes);
    edits_t ed = {.body = body, .len = len};
    pin_model(&ed, root, gate);
    model_of(root, gate, info);
    st = edits_apply(&ed, rewritten);
    json_decref(root);
    return st;
}

/* count_tokens is free and read-only: the pin applies (the count depends on
 * the model), a body that does not parse is left to the upstream. */
static rl_status_t prepare_count_tokens(const char *body, size_t len, const px_gate_t *gate,
                                        px_request_info_t *info, rl_buf_t *rewritten)
{
    json_t *root;
    if (body == NULL || len == 0 || rl_json_parse_object(body, len, 0, &root) != RL_OK) {
        rl_error_clear();
        return RL_OK;
    }
    edits_t ed = {.body = body, .len = len};
    pin_model(&ed, root, gate);
    model_of(root, gate, info);
    rl_status_t st = edits_apply(&ed, rewritten);
    json_decref(root);
    return st;
}

static void mcp_message(const json_t *m, px_request_info_t *info)
{
    const char *method = str_at(m, "method");
    if (method == NULL)
        return; /* a response or error the client sends back to the server */
    bool call = strcmp(method, "tools/call") == 0;
    /* The method that decides: the first tools/call of a batch, else the first. */
    bool first_call = call && strcmp(info->mcp_method, "tools/call") != 0;
    if (info->mcp_method[0] == '\0' || first_call)
        copy_str(info->mcp_method, sizeof info->mcp_method, method);
    if (!call)
        return;
    json_t *params = json_object_get(m, "params");
    const char *name = str_at(params, "name");
    if (first_call)
        copy_str(info->tool_name, sizeof info->tool_name, name);
    char id[96];
    id_text(json_object_get(m, "id"), id, sizeof id);
    px_tool_call_t *t = add_tool(info, PX_TOOL_REQUESTED, id, name);
    if (t == NULL)
        return;
    json_t *args = json_object_get(params, "arguments");
    if (args == NULL || json_is_null(args))
        sha256_hex("{}", 2, t->args_sha256);
    else
        hash_value(args, t->args_sha256);
}

static rl_status_t prepare_mcp(const char *method, const char *body, size_t len,
                               px_request_info_t *info)
{
    info->action = PX_ACTION_MCP;
    if (method == NULL || strcasecmp(method, "POST") != 0)
        return RL_OK; /* GET opens the server's stream, DELETE ends the session */
    if (body == NULL || len == 0)
        return rl_error(RL_ERR_INVALID, "the request body is empty; JSON-RPC is expected");
    json_t *root;
    rl_status_t st = rl_json_parse(body, len, 0, &root);
    if (st != RL_OK)
        return st;
    if (json_is_object(root)) {
        mcp_message(root, info);
        json_t *id = json_object_get(root, "id");
        char *text =
            json_is_string(id) || json_is_integer(id) ? json_dumps(id, JSON_ENCODE_ANY) : NULL;
        if (text && strlen(text) < sizeof info->mcp_id)
            copy_str(info->mcp_id, sizeof info->mcp_id, text);
        free(text);
    } else if (json_is_array(root) && json_array_size(root) > 0) {
        size_t i;
        json_t *m;
        json_array_foreach(root, i, m)
        {
            if (!json_is_object(m)) {
                st = rl_error(RL_ERR_INVALID, "JSON-RPC batch entry %zu is not an object", i);
                break;
            }
            mcp_message(m, info);
        }
    } else {
        st = rl_error(RL_ERR_INVALID, "JSON-RPC expects an object or a non-empty array");
    }
    json_decref(root);
    return st;
}

void px_request_info_reset(px_request_info_t *info)
{
    info->proto = 0;
    info->action = 0;
    info->model[0] = '\0';
    info->stream = false;
    info->usage_injected = false;
    info->mcp_method[0] = '\0';
    info->mcp_id[0] = '\0';
    info->tool_name[0] = '\0';
    info->ntool_calls = 0;
    info->estimated_input_tokens = 0;
}

rl_status_t px_protocol_prepare(const char *method, const char *path, const char *body, size_t len,
                                const px_gate_t *gate, px_kind_t kind, px_request_info_t *info,
                                rl_buf_t *rewritten)
{
    px_request_info_reset(info);
    endpoint_t ep = endpoint_of(kind, path);
    info->proto = proto_of(kind, ep);
    info->action = PX_ACTION_HTTP;
    if (kind == PX_KIND_MCP)
        return prepare_mcp(method, body, len, info);
    if (method == NULL || strcasecmp(method, "POST") != 0)
        return RL_OK;
    switch (ep) {
    case EP_CHAT:
    case EP_COMPLETIONS:
    case EP_RESPONSES:
    case EP_MESSAGES:
        return prepare_chat(ep, body, len, gate, info, rewritten);
    case EP_EMBEDDINGS:
        return prepare_embeddings(body, len, gate, info, rewritten);
    case EP_COUNT_TOKENS:
        return prepare_count_tokens(body, len, gate, info, rewritten);
    default:
        return RL_OK;
    }
}
