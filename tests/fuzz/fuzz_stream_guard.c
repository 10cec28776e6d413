/* Fuzzes the proxy's DLP on streamed responses (px_guard_response.c) as the upstream
 * path drives it: bytes through the response reader (px_response), then the
 * guard, which scans the text the client will read (the deltas of OpenAI,
 * Anthropic and Responses events) across events and chunks, holds events
 * back while a match may still grow, redacts, and ends the stream with an
 * error event on a blocking finding.
 *
 * Input: [engine][protocol][chunk seed][SSE bytes]; engines: the built-ins
 * as shipped, every built-in blocking, every built-in redacting.
 * Properties: the verdict (cut or not) and the findings do not depend on how
 * the stream is split (a cut stops reading, so fewer may be seen then); an uncut stream gives the
 * client the same events either way (a redacted event is rebuilt, so only its bytes may differ),
 * and byte for byte what the upstream sent when nothing was found; when every detector blocks, no
 * byte of a finding ever reaches the client: the events released before the error event carry text
 * that ends before the first finding of the whole stream's text, the cut ends with the protocol's
 * error event, and no event released on its own holds a finding. */
#include <jansson.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz_support.h"
#include "px_internal.h"
#include "px_sse.h"
#include "rl_dlp.h"

#define NENGINES 3
static rl_dlp_engine_t *engines[NENGINES];
static rl_dlp_scratch_t *scratch;
static px_engine_t engine;                       /* metrics left NULL: counting is a no-op */
static px_worker_t worker = {.engine = &engine}; /* keeps its DLP scratch between inputs */

static rl_dlp_engine_t *build(rl_dlp_action_t action)
{
    rl_dlp_config_t *cfg;
    FUZZ_CHECK(rl_dlp_config_create(&cfg) == RL_OK, "config");
    for (int d = 0; action && d < RL_DLP_BUILTIN_COUNT; d++)
        FUZZ_CHECK(rl_dlp_config_set_builtin(cfg, (rl_dlp_builtin_t)d, true, 0, action) == RL_OK,
                   "override");
    rl_dlp_engine_t *e;
    FUZZ_CHECK(rl_dlp_engine_create(cfg, &e) == RL_OK, "engine");
    rl_dlp_config_destroy(cfg);
    return e;
}

typedef struct {
    rl_buf_t out;
    bool cut;
    const char *status;
    char findings[PX_MAX_FINDINGS][80];
    size_t nfindings;
} run_t;

static void run(rl_dlp_engine_t *e, px_proto_t proto, const char *data, size_t len,
                fuzz_chunks_t *chunks, run_t *r)
{
    px_tenant_t tenant = {.dlp = e};
    px_agent_t agent = {.tenant = &tenant};
    px_request_t *req = calloc(1, sizeof *req);
    req->worker = &worker;
    req->agent = &agent;
    req->proto = proto;
    req->up_sse = true;
    req->status = PX_STATUS_ALLOWED;
    snprintf(req->trace_id, sizeof req->trace_id, "01a209fb-cbc0-71ae-8c0a-7fbcc2c9574f");
    rl_buf_init(&req->out, 64u << 20);
    px_request_info_t info;
    px_request_info_reset(&info);
    info.proto = proto;
    info.action = PX_ACTION_CHAT;
    px_response_t *parser;
    FUZZ_CHECK(px_response_create(&info, 200, true, &parser) == RL_OK, "parser");
    px_guard_response_start(req);
    FUZZ_CHECK(req->guard != NULL, "no stream guard");

    bool go_on = true;
    for (size_t at = 0; at < len && go_on;) {
        size_t n = chunks ? fuzz_chunk(chunks, len - at) : len;
        size_t before = req->out.len;
        FUZZ_CHECK(px_response_feed(parser, data + at, n, &req->out) == RL_OK, "feed");
        go_on = px_guard_stream(req, before);
        at += n;
    }
    size_t before = req->out.len;
    FUZZ_CHECK(px_response_finish(parser, &req->out) == RL_OK, "finish");
    px_guard_response_end(req, before);

    r->cut = req->dlp_cut;
    r->status = req->status; /* a static string */
    FUZZ_CHECK(r->cut == (strcmp(req->status, PX_STATUS_DLP_BLOCKED) == 0), "status %s, cut %d",
               req->status, r->cut);
    r->nfindings = req->nfindings;
    for (size_t i = 0; i < req->nfindings; i++)
        snprintf(r->findings[i], sizeof r->findings[i], "%s/%s/%s", req->findings[i].detector,
                 req->findings[i].where, req->findings[i].action);
    qsort(r->findings, r->nfindings, sizeof r->findings[0],
          (int (*)(const void *, const void *))strcmp);
    r->out = req->out; /* taken */
    px_guard_free(req);
    px_response_destroy(parser);
    free(req);
}

/* ---- reading SSE back: the events and the text of their deltas ------------------------- */

/* The string the guard scans in an event, as px_guard_response.c's text_holder picks it. */
static json_t *delta_of(json_t *o)
{
    json_t *v = NULL, *choices = json_object_get(o, "choices");
    if (json_is_array(choices) && json_array_size(choices) > 0) {
        json_t *c = json_array_get(choices, 0), *d = json_object_get(c, "delta");
        if (json_is_string(json_object_get(d, "content")))
            v = json_object_get(d, "content");
        else if (json_is_string(json_object_get(c, "text")))
            v = json_object_get(c, "text");
        else
            v = json_object_get(
                json_object_get(json_array_get(json_object_get(d, "tool_calls"), 0), "function"),
                "arguments");
    } else if (json_is_string(json_object_get(o, "delta"))) {
        v = json_object_get(o, "delta");
    } else if (json_is_object(json_object_get(o, "delta"))) {
        json_t *d = json_object_get(o, "delta");
        v = json_is_string(json_object_get(d, "text")) ? json_object_get(d, "text")
            : json_is_string(json_object_get(d, "partial_json"))
                ? json_object_get(d, "partial_json")
                : json_object_get(d, "thinking");
    }
    return json_is_string(v) ? v : NULL;
}

/* An SSE stream read as the guard frames it (the same event bound). */
typedef struct {
    rl_buf_t text;      /* what the guard scans as the stream's text, in order */
    rl_buf_t sig;       /* what a client reads: events ("name US data RS") and raw bytes */
    rl_buf_t sink;      /* the framer's output: bytes passed on unparsed, not yet taken */
    json_t *last;       /* the last event's data, parsed (NULL when not JSON) */
    rl_dlp_engine_t *e; /* when set: events without a delta are scanned one by one */
    size_t lone_hits;   /* ... and this many of them held a finding */
    bool last_lone_hit; /* the last one did */
    /* where each event or unparsed piece lies in the bytes and in the text */
    struct segment {
        size_t b0, b1, t0, t1;
        bool raw, hit;
    } seg[4096];
    size_t nseg, bytes;
} reader_t;

static void add_segment(reader_t *r, size_t nbytes, size_t t0, bool raw, bool hit)
{
    FUZZ_CHECK(r->nseg < sizeof r->seg / sizeof r->seg[0], "too many events");
    r->seg[r->nseg++] = (struct segment){r->bytes, r->bytes + nbytes, t0, r->text.len, raw, hit};
    r->bytes += nbytes;
}

/* Bytes passed on unparsed (events over PX_SSE_EVENT_MAX) are text, in order. */
static void take_unparsed(reader_t *r)
{
    if (r->sink.len > 0) {
        size_t t0 = r->text.len;
        rl_buf_append(&r->text, r->sink.data, r->sink.len);
        rl_buf_append(&r->sig, r->sink.data, r->sink.len);
        add_segment(r, r->sink.len, t0, true, false);
    }
    rl_buf_reset(&r->sink);
}

static bool on_read(void *ctx, const px_sse_event_t *ev)
{
    reader_t *r = ctx;
    take_unparsed(r);
    FUZZ_CHECK(!ev->tail, "a late LF, yet the reader reads in one go");
    if (r->last_lone_hit)
        r->lone_hits++; /* not the last event after all */
    r->last_lone_hit = false;
    json_decref(r->last);
    r->last = NULL;
    if (ev->data) {
        rl_buf_append(&r->sig, ev->event ? ev->event : "message", ev->event ? ev->event_len : 7);
        rl_buf_append(&r->sig, "\x1f", 1);
        rl_buf_append(&r->sig, ev->data, ev->data_len);
        rl_buf_append(&r->sig, "\x1e", 1);
    }
    bool delta = false;
    size_t t0 = r->text.len;
    if (ev->data && ev->data_len > 0 && ev->data[0] == '{') {
        r->last = json_loadb(ev->data, ev->data_len, 0, NULL);
        json_t *v = json_is_object(r->last) ? delta_of(r->last) : NULL;
        if (v) {
            rl_buf_append(&r->text, json_string_value(v), json_string_length(v));
            delta = true;
        }
    }
    if (r->e && !delta && ev->data && ev->data_len > 0) {
        /* as a client reads it: JSON with its escapes of plain ASCII decoded */
        static rl_buf_t read = {.max = 64u << 20};
        rl_buf_reset(&read);
        if (r->last)
            fuzz_unescape_ascii(ev->data, ev->data_len, &read);
        else
            rl_buf_append(&read, ev->data, ev->data_len);
        rl_dlp_findings_t f;
        rl_dlp_findings_init(&f, 64);
        FUZZ_CHECK(rl_dlp_scan(r->e, RL_DLP_SCOPE_RESPONSE, read.data, read.len, scratch, &f) ==
                       RL_OK,
                   "scan");
        r->last_lone_hit = f.len > 0;
        rl_dlp_findings_free(&f);
    }
    add_segment(r, ev->raw_len, t0, false, r->last_lone_hit);
    return false; /* kept here: only bytes passed on unparsed reach the sink */
}

static void read_sse(const char *data, size_t len, rl_dlp_engine_t *e, reader_t *r)
{
    memset(r, 0, sizeof *r);
    rl_buf_init(&r->text, 64u << 20);
    rl_buf_init(&r->sig, 64u << 20);
    rl_buf_init(&r->sink, 64u << 20);
    r->e = e;
    px_sse_t *sse;
    FUZZ_CHECK(px_sse_create(PX_SSE_EVENT_MAX, on_read, r, &sse) == RL_OK, "reader");
    px_sse_take_dropped(sse);
    FUZZ_CHECK(px_sse_feed(sse, data, len, &r->sink) == RL_OK, "read");
    FUZZ_CHECK(px_sse_finish(sse, &r->sink) == RL_OK, "read end");
    take_unparsed(r);
    px_sse_destroy(sse);
    FUZZ_CHECK(r->bytes == len, "the framer accounted for %zu of %zu bytes", r->bytes, len);
}

static void reader_free(reader_t *r)
{
    json_decref(r->last);
    rl_buf_free(&r->text);
    rl_buf_free(&r->sig);
    rl_buf_free(&r->sink);
}

/* Where the last event starts in out: the error event the guard appends. */
static size_t error_event_at(const rl_buf_t *out, px_proto_t proto)
{
    const char *head = proto == PX_PROTO_ANTHROPIC ? "event: error\ndata: {" : "data: {\"error\":";
    size_t at = out->len;
    for (const char *p = out->data;
         p && (p = memmem(p, out->len - (size_t)(p - out->data), head, strlen(head))) != NULL; p++)
        at = (size_t)(p - out->data);
    return at;
}

/* Every detector blocks: nothing of a finding may have reached the client.
 * Nothing is redacted, so what was released is a prefix of the upstream's
 * bytes; the text of that prefix must end before every finding. */
static void check_secrecy(rl_dlp_engine_t *e, px_proto_t proto, const char *in, size_t len,
                          const run_t *r)
{
    static reader_t all, got; /* large: not on the stack */
    read_sse(in, len, e, &all);
    read_sse(r->out.data, r->out.len, NULL, &got);
    rl_dlp_findings_t f;
    rl_dlp_findings_init(&f, 1u << 16);
    FUZZ_CHECK(rl_dlp_scan(e, RL_DLP_SCOPE_RESPONSE, all.text.data, all.text.len, scratch, &f) ==
                   RL_OK,
               "scan of the whole text");
    bool hit = all.last_lone_hit || all.lone_hits > 0;
    size_t released = r->out.len;
    if (r->cut) {
        const char *st =
            json_string_value(json_object_get(json_object_get(got.last, "renlayer"), "status"));
        FUZZ_CHECK(st && strcmp(st, "DLP_BLOCKED") == 0 &&
                       json_is_object(json_object_get(got.last, "error")),
                   "the stream does not end with the error event");
        released = error_event_at(&r->out, proto);
        /* a part of an oversized event is ended before the error event */
        if (!fuzz_same_bytes(r->out.data, released, in, released < len ? released : len) &&
            released >= 2 && memcmp(r->out.data + released - 2, "\n\n", 2) == 0)
            released -= 2;
    } else {
        FUZZ_CHECK(f.len == 0 && !hit, "a blocking finding was not cut (%zu in the text)", f.len);
    }
    FUZZ_CHECK(released <= len && fuzz_same_bytes(r->out.data, released, in, released),
               "what reached the client is not a prefix of what the upstream sent");
    /* the text of the bytes released */
    size_t text = 0;
    for (size_t i = 0; i < all.nseg && all.seg[i].b0 < released; i++) {
        const struct segment *g = &all.seg[i];
        bool late_lf = !g->raw && g->b1 == released + 1 && in[released] == '\n' &&
                       in[released - 1] == '\r'; /* cut before the LF of its CRLF came */
        if (g->b1 <= released || late_lf) {
            FUZZ_CHECK(!g->hit, "an event with a finding reached the client");
            text = g->t1;
        } else {
            FUZZ_CHECK(g->raw, "part of an event reached the client");
            text = g->t0 + (released - g->b0);
        }
    }
    for (size_t i = 0; i < f.len; i++)
        FUZZ_CHECK(f.items[i].start >= text,
                   "%s at [%zu, %zu) reached the client (%zu bytes of text released)",
                   f.items[i].detector, f.items[i].start, f.items[i].end, text);
    rl_dlp_findings_free(&f);
    reader_free(&all);
    reader_free(&got);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (scratch == NULL) {
        engines[0] = build(0);
        engines[1] = build(RL_DLP_ACTION_BLOCK);
        engines[2] = build(RL_DLP_ACTION_REDACT);
        FUZZ_CHECK(rl_dlp_scratch_create(&scratch) == RL_OK, "scratch");
    }
    fuzz_input_t in = {data, size};
    int which = fuzz_byte(&in) % NENGINES;
    px_proto_t proto = fuzz_byte(&in) & 1 ? PX_PROTO_ANTHROPIC : PX_PROTO_OPENAI;
    uint8_t seed = fuzz_byte(&in);
    const char *body = (const char *)in.p;
    size_t len = in.n;

    static run_t whole, pieces;
    fuzz_chunks_t chunks;
    fuzz_chunks_init(&chunks, seed, 1 + seed % 128);
    run(engines[which], proto, body, len, NULL, &whole);
    run(engines[which], proto, body, len, &chunks, &pieces);

    FUZZ_CHECK(whole.cut == pieces.cut, "cut whole %d, in pieces %d", whole.cut, pieces.cut);
    /* A cut stops reading the upstream, so pieces may have seen less then. */
    for (size_t i = 0; i < pieces.nfindings; i++)
        FUZZ_CHECK(bsearch(pieces.findings[i], whole.findings, whole.nfindings,
                           sizeof whole.findings[0],
                           (int (*)(const void *, const void *))strcmp) != NULL,
                   "finding %s in pieces only", pieces.findings[i]);
    if (!whole.cut)
        FUZZ_CHECK(whole.nfindings == pieces.nfindings && strcmp(whole.status, pieces.status) == 0,
                   "%zu findings, %s whole; %zu, %s in pieces", whole.nfindings, whole.status,
                   pieces.nfindings, pieces.status);
    if (!whole.cut && whole.nfindings == 0)
        FUZZ_CHECK(fuzz_same_bytes(whole.out.data, whole.out.len, pieces.out.data, pieces.out.len),
                   "the client got different bytes whole and in pieces");
    if (!whole.cut) {
        /* redacted events are rebuilt: the client must read the same events */
        static reader_t a, b; /* large: not on the stack */
        read_sse(whole.out.data, whole.out.len, NULL, &a);
        read_sse(pieces.out.data, pieces.out.len, NULL, &b);
        FUZZ_CHECK(fuzz_same_bytes(a.sig.data, a.sig.len, b.sig.data, b.sig.len),
                   "the client read different events whole and in pieces");
        reader_free(&a);
        reader_free(&b);
    }
    if (!whole.cut && whole.nfindings == 0)
        FUZZ_CHECK(fuzz_same_bytes(whole.out.data, whole.out.len, body, len),
                   "nothing found, yet the client did not get the upstream's bytes");
    if (which == 1) {
        check_secrecy(engines[1], proto, body, len, &whole);
        check_secrecy(engines[1], proto, body, len, &pieces);
    }
    rl_buf_free(&whole.out);
    rl_buf_free(&pieces.out);
    return 0;
}
