/* px_guard_response: DLP on the response (docs/proxy.md, "Policies and
 * DLP", request path step 8). A whole body is scanned when it has arrived;
 * a stream is scanned over the text of its events (the deltas the client
 * will read, not the raw `data:` lines) with rl_dlp_stream, and events are
 * held back only while the scanner's safe point is behind them. A blocking
 * finding replaces a whole body with a structured error, or ends a stream
 * with an error event. The trace's copy of a response with findings has
 * every finding redacted, or is dropped when that is not possible. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px_guard_internal.h"
#include "px_sse.h"
#include "rl_json.h"
#include "rl_log.h"

#define STREAM_HELD_MAX (4u << 20) /* bytes a stream guard may hold back */
#define WHOLE_MAX (64u << 20)      /* a whole response, as px_request's OUT_MAX */

/* ---- streams -------------------------------------------------------------------------- */

/* One event (or piece passed on unparsed) waiting for the scanner: its bytes
 * in held [start, end), its text at absolute text offsets [tstart, tend). */
typedef struct {
    size_t start, end;
    size_t tstart, tend;
    bool raw;  /* bytes passed on unparsed: held[start, end) is text[tstart, tend) itself */
    bool tail; /* the late LF of the event before (px_sse_event_t.tail) */
} mark_t;

struct px_stream_guard {
    rl_dlp_stream_t *stream;
    px_sse_t *framer;
    rl_buf_t incoming; /* events as framed, before they are marked */
    rl_buf_t held;     /* bytes not released to the client yet */
    rl_buf_t text;     /* the text of held events, from text_base on */
    size_t text_base;  /* absolute text offset of text.data[0] */
    mark_t *marks;
    size_t nmarks, capmarks;
    rl_dlp_findings_t found; /* every finding of the stream so far */
    rl_dlp_findings_t fresh;
    px_request_t *req;      /* the owner, for the framer's callback */
    bool blocked_whole;     /* an event scanned on its own blocks */
    bool mid_event;         /* the client got part of an oversized event, not its end */
    char blocked_dets[200]; /* its blocking detectors */
    bool failed;            /* out of memory or bounds: cut the stream */
};

/* The string field holding an event's text: OpenAI chat
 * choices[0].delta.content (or its first tool call's arguments),
 * completions choices[0].text, Responses
 * "*.delta", Anthropic delta.text / delta.partial_json. NULL when none. */
static json_t *text_holder(json_t *o, const char **key)
{
    json_t *choices = json_object_get(o, "choices");
    if (json_is_array(choices) && json_array_size(choices) > 0) {
        json_t *c = json_array_get(choices, 0);
        json_t *d = json_object_get(c, "delta");
        if (json_is_string(json_object_get(d, "content"))) {
            *key = "content";
            return d;
        }
        if (json_is_string(json_object_get(c, "text"))) {
            *key = "text";
            return c;
        }
        json_t *fn =
            json_object_get(json_array_get(json_object_get(d, "tool_calls"), 0), "function");
        if (json_is_string(json_object_get(fn, "arguments"))) {
            *key = "arguments";
            return fn;
        }
        return NULL;
    }
    json_t *d = json_object_get(o, "delta");
    if (json_is_string(d)) {
        *key = "delta"; /* Responses API: response.output_text.delta and friends */
        return o;
    }
    if (json_is_object(d)) {
        for (const char *const *k = (const char *const[]){"text", "partial_json", "thinking", NULL};
             *k; k++) {
            if (json_is_string(json_object_get(d, *k))) {
                *key = *k;
                return d;
            }
        }
    }
    return NULL;
}

static bool mark_push(px_stream_guard_t *g, mark_t m)
{
    if (g->nmarks == g->capmarks) {
        size_t cap = g->capmarks ? g->capmarks * 2 : 32;
        mark_t *n = realloc(g->marks, cap * sizeof *n);
        if (n == NULL)
            return false;
        g->marks = n;
        g->capmarks = cap;
    }
    g->marks[g->nmarks++] = m;
    return true;
}

static void guard_feed_text(px_request_t *req, px_stream_guard_t *g, const char *s, size_t n)
{
    if (n == 0 || g->failed)
        return;
    if (rl_buf_append(&g->text, s, n) != RL_OK) {
        g->failed = true;
        return;
    }
    rl_dlp_findings_reset(&g->fresh);
    rl_status_t st = rl_dlp_stream_feed(g->stream, s, n, px_guard_scratch(req->worker), &g->fresh);
    if (st == RL_ERR_TIMEOUT) {
        rl_counter_add(req->worker->engine->m.dlp_errors, 1);
        if (req->agent->tenant->fail_closed)
            g->failed = true;
    } else if (st != RL_OK) {
        g->failed = true;
    }
    rl_error_clear();
    if (rl_dlp_findings_merge(&g->found, &g->fresh) != RL_OK) {
        rl_error_clear();
        g->failed = true;
        return;
    }
    for (size_t i = 0; i < g->fresh.len; i++) {
        px_guard_add_finding(req, &g->fresh.items[i], "response");
        req->resp_findings = true;
    }
}

/* Scans a complete piece of a stream on its own (an event without a text
 * delta, or bytes passed unparsed). Its findings go to the trace and to the
 * stream's verdict; when one redacts, *changed is set and red holds the piece
 * redacted (a piece that cannot be redacted fails the stream: it is cut).
 * JSON that escapes plain ASCII is scanned in its plain form, which is what
 * red then holds; without a redaction the piece passes as sent. */
static void oneshot(px_stream_guard_t *g, const char *data, size_t len, rl_buf_t *red,
                    bool *changed)
{
    px_request_t *req = g->req;
    if (g->failed)
        return;
    rl_buf_t plain;
    rl_buf_init(&plain, red->max);
    if (rl_json_plain_ascii(data, len, &plain)) {
        data = plain.data;
        len = plain.len;
    }
    rl_dlp_findings_reset(&g->fresh);
    rl_status_t st = rl_dlp_scan(req->agent->tenant->dlp, RL_DLP_SCOPE_RESPONSE, data, len,
                                 px_guard_scratch(req->worker), &g->fresh);
    if (st != RL_OK) {
        rl_counter_add(req->worker->engine->m.dlp_errors, 1);
        rl_error_clear();
        if (st != RL_ERR_TIMEOUT || req->agent->tenant->fail_closed)
            g->failed = true;
    }
    for (size_t i = 0; i < g->fresh.len; i++) {
        px_guard_add_finding(req, &g->fresh.items[i], "response");
        req->resp_findings = true;
    }
    rl_dlp_verdict_t v = rl_dlp_verdict(&g->fresh);
    if (v == RL_DLP_BLOCKED) {
        g->blocked_whole = true;
        px_guard_detector_list(&g->fresh, true, g->blocked_dets, sizeof g->blocked_dets);
    }
    if (v != RL_DLP_BLOCKED && px_guard_any_redact(&g->fresh)) {
        if (rl_dlp_redact(data, len, 0, &g->fresh, red) == RL_OK)
            *changed = true;
        else {
            rl_error_clear();
            g->failed = true;
        }
    }
    rl_buf_free(&plain);
}

/* Bytes the framer passed on unparsed (an event past its bound, as it
 * arrives) are held in order and scanned as text of the stream, like deltas,
 * so a finding split across two reads is found whole and its bytes are
 * redacted where they are held. */
static void hold_unparsed(px_stream_guard_t *g)
{
    if (g->incoming.len == 0)
        return;
    size_t t = rl_dlp_stream_total(g->stream);
    guard_feed_text(g->req, g, g->incoming.data, g->incoming.len);
    mark_t m = {.start = g->held.len,
                .end = g->held.len + g->incoming.len,
                .tstart = t,
                .tend = rl_dlp_stream_total(g->stream),
                .raw = true};
    if (g->failed || rl_buf_append(&g->held, g->incoming.data, g->incoming.len) != RL_OK) {
        g->failed = true;
    } else if (g->nmarks > 0 && g->marks[g->nmarks - 1].raw &&
               g->marks[g->nmarks - 1].end == m.start && g->marks[g->nmarks - 1].tend == t) {
        /* the next read of the same oversized event: one piece, so that a
         * finding across the two is redacted with one marker */
        g->marks[g->nmarks - 1].end = m.end;
        g->marks[g->nmarks - 1].tend = m.tend;
    } else if (!mark_push(g, m)) {
        g->failed = true;
    }
    rl_buf_reset(&g->incoming);
}

/* Each event of the stream: its text goes to the scanner, its bytes are held
 * (returns false: nothing goes to the framer's own output). */
static bool on_frame(void *ctx, const px_sse_event_t *ev)
{
    px_stream_guard_t *g = ctx;
    hold_unparsed(g); /* bytes the framer passed on before this event stay before it */
    size_t tstart = rl_dlp_stream_total(g->stream);
    if (ev->tail) {
        /* the LF of the last event's CRLF, come in this read: held after it, no text */
        mark_t m = {.start = g->held.len,
                    .end = g->held.len + 1,
                    .tstart = tstart,
                    .tend = tstart,
                    .tail = true};
        if (rl_buf_append(&g->held, ev->raw, ev->raw_len) != RL_OK || !mark_push(g, m))
            g->failed = true;
        return false;
    }
    bool delta = false;
    if (ev->data && ev->data_len > 0 && ev->data[0] == '{') {
        json_t *o = json_loadb(ev->data, ev->data_len, 0, NULL);
        const char *key = NULL;
        json_t *h = json_is_object(o) ? text_holder(o, &key) : NULL;
        if (h) {
            json_t *v = json_object_get(h, key);
            guard_feed_text(g->req, g, json_string_value(v), json_string_length(v));
            delta = true;
        }
        json_decref(o);
    }
    mark_t m = {.start = g->held.len, .tstart = tstart, .tend = rl_dlp_stream_total(g->stream)};
    rl_status_t st;
    if (!delta && ev->data && ev->data_len > 0) {
        /* a complete event of its own (a role or usage chunk, a Responses
         * ".done" / "response.completed" copy of the text, an MCP result):
         * scanned in one piece, rewritten when a finding redacts */
        rl_buf_t red;
        rl_buf_init(&red, PX_SSE_EVENT_MAX + 4096);
        bool changed = false;
        oneshot(g, ev->data, ev->data_len, &red, &changed);
        if (changed) {
            for (size_t i = 0; i < red.len; i++)
                if (red.data[i] == '\n' || red.data[i] == '\r')
                    red.data[i] = ' '; /* joined data lines: one line again (JSON whitespace) */
            if (ev->event)
                rl_buf_appendf(&g->held, "event: %.*s\n", (int)ev->event_len, ev->event);
            rl_buf_append_str(&g->held, "data: ");
            rl_buf_append(&g->held, red.data, red.len);
            st = rl_buf_append_str(&g->held, "\n\n");
        } else {
            st = rl_buf_append(&g->held, ev->raw, ev->raw_len);
        }
        rl_buf_free(&red);
    } else {
        st = rl_buf_append(&g->held, ev->raw, ev->raw_len);
    }
    m.end = g->held.len;
    if (st != RL_OK || !mark_push(g, m))
        g->failed = true;
    return false;
}

void px_guard_response_start(px_request_t *req)
{
    px_guard_free(req);
    rl_dlp_engine_t *e = req->agent->tenant->dlp;
    if (!req->up_sse || !px_guard_engine_active(e))
        return;
    px_stream_guard_t *g = calloc(1, sizeof *g);
    if (g == NULL)
        return;
    g->req = req;
    rl_buf_init(&g->incoming, STREAM_HELD_MAX);
    rl_buf_init(&g->held, STREAM_HELD_MAX);
    rl_buf_init(&g->text, STREAM_HELD_MAX);
    rl_dlp_findings_init(&g->found, PX_GUARD_FINDINGS_MAX);
    rl_dlp_findings_init(&g->fresh, PX_GUARD_FINDINGS_MAX);
    if (rl_dlp_stream_create(e, RL_DLP_SCOPE_RESPONSE, &g->stream) != RL_OK ||
        px_sse_create(PX_SSE_EVENT_MAX, on_frame, g, &g->framer) != RL_OK) {
        rl_error_clear();
        g->failed = true; /* cuts the stream at its first bytes: never forward unscanned */
    } else {
        px_sse_take_dropped(g->framer); /* on_frame holds every event's bytes itself */
    }
    req->guard = g;
}

void px_guard_free(px_request_t *req)
{
    px_stream_guard_t *g = req->guard;
    if (g == NULL)
        return;
    rl_dlp_stream_destroy(g->stream);
    px_sse_destroy(g->framer);
    rl_buf_free(&g->incoming);
    rl_buf_free(&g->held);
    rl_buf_free(&g->text);
    free(g->marks);
    rl_dlp_findings_free(&g->found);
    rl_dlp_findings_free(&g->fresh);
    free(g);
    req->guard = NULL;
}

/* The text of mark m with the stream's redact findings replaced, appended to out. */
static rl_status_t redact_text(const px_stream_guard_t *g, const mark_t *m, rl_buf_t *out)
{
    return rl_dlp_redact(g->text.data + (m->tstart - g->text_base), m->tend - m->tstart, m->tstart,
                         &g->found, out);
}

/* The event in held [m->start, m->end) with its text redacted, appended to out. */
static void append_redacted_event(px_stream_guard_t *g, const mark_t *m, rl_buf_t *out)
{
    const char *raw = g->held.data + m->start;
    size_t len = m->end - m->start;
    rl_buf_t red;
    rl_buf_init(&red, PX_SSE_EVENT_MAX);
    bool done = false;
    if (m->tend > m->tstart && redact_text(g, m, &red) == RL_OK) {
        /* rebuild the event from its parsed data with the text replaced */
        px_sse_event_t ev = {0};
        const char *ename = NULL;
        size_t elen = 0;
        const char *d = memmem(raw, len, "data:", 5);
        const char *e = memmem(raw, len, "event:", 6);
        if (e && (e == raw || e[-1] == '\n')) {
            ename = e + 6;
            while (*ename == ' ')
                ename++;
            elen = strcspn(ename, "\r\n");
        }
        if (d && (d == raw || d[-1] == '\n')) {
            ev.data = d + 5;
            while (*ev.data == ' ')
                ev.data++;
            ev.data_len = strcspn(ev.data, "\r\n");
        }
        json_t *o = ev.data ? json_loadb(ev.data, ev.data_len, 0, NULL) : NULL;
        const char *key = NULL;
        json_t *h = json_is_object(o) ? text_holder(o, &key) : NULL;
        if (h &&
            json_object_set_new(h, key, json_stringn(red.data ? red.data : "", red.len)) == 0) {
            char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
            if (text) {
                if (ename)
                    rl_buf_appendf(out, "event: %.*s\n", (int)elen, ename);
                rl_buf_appendf(out, "data: %s\n\n", text);
                free(text);
                done = true;
            }
        }
        json_decref(o);
    }
    rl_error_clear();
    rl_buf_free(&red);
    if (!done)
        rl_buf_append(out, raw, len); /* no text of its own to redact */
}

/* Bytes held unparsed, which are their own text, with findings redacted. A
 * piece that cannot be redacted is replaced by nothing rather than passed on. */
static void append_redacted_raw(px_stream_guard_t *g, const mark_t *m, rl_buf_t *out)
{
    if (redact_text(g, m, out) != RL_OK) {
        rl_error_clear();
        g->failed = true;
    }
}

static bool overlaps_redact(const px_stream_guard_t *g, const mark_t *m)
{
    for (size_t i = 0; i < g->found.len; i++) {
        const rl_dlp_finding_t *f = &g->found.items[i];
        if (f->action == RL_DLP_ACTION_REDACT && f->start < m->tend && f->end > m->tstart)
            return true;
    }
    return false;
}

/* Cuts b to its first n bytes (keeping its NUL terminator). */
static void truncate_to(rl_buf_t *b, size_t n)
{
    if (b->data == NULL || n >= b->len)
        return;
    b->len = n;
    b->data[n] = '\0';
}

/* Forgets the first n bytes of b (keeping its NUL terminator). */
static void drop_front(rl_buf_t *b, size_t n)
{
    if (b->data == NULL || n == 0)
        return;
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

/* Whether s[0..n) ends with a blank line (two line ends: LF, CR or CRLF). */
static bool ends_blank_line(const char *s, size_t n)
{
    if (n >= 2 && s[n - 2] == '\r' && s[n - 1] == '\n')
        n -= 2;
    else if (n >= 1 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        n -= 1;
    else
        return false;
    return n >= 1 && (s[n - 1] == '\n' || s[n - 1] == '\r');
}

/* One held mark to the client, redacted where a finding asks for it. */
static void emit(px_stream_guard_t *g, const mark_t *m, rl_buf_t *out)
{
    if (!overlaps_redact(g, m))
        rl_buf_append(out, g->held.data + m->start, m->end - m->start);
    else if (m->raw)
        append_redacted_raw(g, m, out);
    else
        append_redacted_event(g, m, out);
    /* events end with their blank line (a late LF completes one); the
     * bytes of an oversized event end it only with its last piece */
    if (m->raw)
        g->mid_event = !ends_blank_line(g->held.data + m->start, m->end - m->start);
    else if (!m->tail)
        g->mid_event = false;
}

/* Releases every held event whose text is all before the safe point, and the
 * part before it of a piece passed on unparsed (its bytes are its text, and
 * the safe point never lies inside a finding). */
static void release(px_stream_guard_t *g, size_t safe, rl_buf_t *out)
{
    size_t k = 0, bytes = 0, tpos = g->text_base; /* released: every mark holds bytes */
    while (k < g->nmarks && !g->failed) {
        mark_t *m = &g->marks[k];
        if (m->tend <= safe) {
            emit(g, m, out);
            bytes = m->end;
            tpos = m->tend;
            k++;
            continue;
        }
        if (m->raw && m->tstart < safe) {
            mark_t head = *m;
            head.end = m->start + (safe - m->tstart);
            head.tend = safe;
            emit(g, &head, out);
            m->start = head.end;
            m->tstart = safe;
            bytes = head.end;
            tpos = safe;
        }
        break;
    }
    if (bytes == 0)
        return;
    drop_front(&g->held, bytes);
    drop_front(&g->text, tpos - g->text_base);
    g->text_base = tpos;
    memmove(g->marks, g->marks + k, (g->nmarks - k) * sizeof *g->marks);
    g->nmarks -= k;
    for (size_t i = 0; i < g->nmarks; i++) {
        g->marks[i].start -= bytes;
        g->marks[i].end -= bytes;
    }
    rl_dlp_stream_release(g->stream, NULL);
}

/* Ends the stream with an error event in the protocol's shape. */
static void cut(px_request_t *req, px_stream_guard_t *g, rl_buf_t *out)
{
    char dets[300], msg[400];
    px_guard_detector_list(&g->found, true, dets, sizeof dets);
    if (dets[0] == '\0' && g->blocked_whole)
        snprintf(dets, sizeof dets, "%s", g->blocked_dets);
    if (dets[0])
        snprintf(msg, sizeof msg, "Response blocked by RenLayer DLP: sensitive data detected (%s).",
                 dets);
    else
        snprintf(msg, sizeof msg, "Response blocked by RenLayer DLP: it could not be scanned.");
    req->status = PX_STATUS_DLP_BLOCKED;
    req->error = "dlp_blocked";
    px_guard_set_reason(req, msg);
    px_guard_count(req, req->status);
    rl_buf_t body;
    rl_buf_init(&body, 8192);
    const char *ctype = NULL;
    px_protocol_error(req->proto, 403, "dlp_blocked", msg, req->status, req->trace_id, NULL, &body,
                      &ctype);
    if (g->mid_event)
        rl_buf_append_str(out, "\n\n"); /* ends the part sent, or the error would join it */
    if (req->proto == PX_PROTO_ANTHROPIC)
        rl_buf_appendf(out, "event: error\ndata: %s\n\n", body.data ? body.data : "{}");
    else
        rl_buf_appendf(out, "data: %s\n\n", body.data ? body.data : "{}");
    rl_buf_free(&body);
    rl_buf_reset(&g->held);
    g->nmarks = 0;
    req->dlp_cut = true;
}

/* The verdict on the stream so far, and what may go to the client now. */
static bool settle(px_request_t *req, px_stream_guard_t *g, size_t safe)
{
    rl_buf_t *out = &req->out;
    if (g->failed || g->blocked_whole || rl_dlp_verdict(&g->found) == RL_DLP_BLOCKED) {
        cut(req, g, out);
        return false;
    }
    release(g, safe, out);
    return true;
}

bool px_guard_stream(px_request_t *req, size_t from)
{
    px_stream_guard_t *g = req->guard;
    if (req->dlp_cut) {
        truncate_to(&req->out, from); /* nothing more after the error event */
        return false;
    }
    if (g == NULL || req->out.len <= from)
        return true;
    /* take the new (complete) events out of out: they come back once scanned */
    size_t n = req->out.len - from;
    rl_buf_reset(&g->incoming);
    if (!g->failed && px_sse_feed(g->framer, req->out.data + from, n, &g->incoming) != RL_OK)
        g->failed = true;
    truncate_to(&req->out, from);
    hold_unparsed(g);
    return settle(req, g, g->stream ? rl_dlp_stream_safe(g->stream) : 0);
}

/* Scans a whole (not streamed) response in req->out. */
static void whole_response(px_request_t *req)
{
    rl_dlp_engine_t *e = req->agent->tenant->dlp;
    if (!px_guard_engine_active(e) || req->out.len == 0)
        return;
    rl_buf_t plain;
    rl_buf_init(&plain, req->out.max);
    if (rl_json_plain_ascii(req->out.data, req->out.len, &plain))
        rl_buf_move(&req->out, &plain);
    rl_buf_free(&plain);
    rl_dlp_findings_t f;
    rl_dlp_findings_init(&f, PX_GUARD_FINDINGS_MAX);
    rl_status_t st = rl_dlp_scan(e, RL_DLP_SCOPE_RESPONSE, req->out.data, req->out.len,
                                 px_guard_scratch(req->worker), &f);
    bool scanned = st == RL_OK;
    if (!scanned) {
        rl_counter_add(req->worker->engine->m.dlp_errors, 1);
        rl_error_clear();
    }
    for (size_t i = 0; i < f.len; i++)
        px_guard_add_finding(req, &f.items[i], "response");
    if (f.len > 0 || f.dropped > 0) {
        req->resp_findings = true;
        /* the trace's copy: every finding redacted, first bytes only */
        rl_buf_t red;
        rl_buf_init(&red, WHOLE_MAX);
        rl_buf_reset(&req->resp_copy);
        if (px_guard_redact_all(req->out.data, req->out.len, &f, &red))
            rl_buf_append(&req->resp_copy, red.data,
                          red.len < req->resp_copy.max ? red.len : req->resp_copy.max);
        rl_buf_free(&red);
    }
    rl_dlp_verdict_t v = rl_dlp_verdict(&f);
    bool blocked = v == RL_DLP_BLOCKED || (!scanned && req->agent->tenant->fail_closed);
    if (!blocked && px_guard_any_redact(&f)) {
        rl_buf_t red;
        rl_buf_init(&red, req->out.max);
        if (rl_dlp_redact(req->out.data, req->out.len, 0, &f, &red) == RL_OK) {
            rl_buf_move(&req->out, &red);
        } else {
            rl_error_clear();
            rl_buf_free(&red);
            blocked = true; /* never forward half-redacted text */
        }
    }
    if (blocked) {
        char dets[300], msg[400];
        px_guard_detector_list(&f, true, dets, sizeof dets);
        snprintf(msg, sizeof msg, "Response blocked by RenLayer DLP: %s%s%s",
                 dets[0] ? "sensitive data detected (" : "it could not be scanned or redacted",
                 dets, dets[0] ? ")." : ".");
        req->status = PX_STATUS_DLP_BLOCKED;
        req->error = "dlp_blocked";
        px_guard_set_reason(req, msg);
        px_guard_count(req, req->status);
        rl_buf_reset(&req->out);
        const char *ctype = "application/json";
        px_protocol_error(req->proto, 403, "dlp_blocked", msg, req->status, req->trace_id,
                          req->mcp_id[0] ? req->mcp_id : NULL, &req->out, &ctype);
        req->up_status = 403;
        px_resp_headers_reset(req);
        (void)px_resp_header_add(req, "Content-Type", 12, ctype, strlen(ctype));
    } else if (v == RL_DLP_WARNED && strcmp(req->status, PX_STATUS_ALLOWED) == 0) {
        req->status = PX_STATUS_DLP_WARNED;
        px_guard_count(req, req->status);
    }
    rl_dlp_findings_free(&f);
}

void px_guard_response_end(px_request_t *req, size_t from)
{
    px_stream_guard_t *g = req->guard;
    if (!req->up_sse) {
        whole_response(req);
        return;
    }
    if (g == NULL)
        return;
    if (!px_guard_stream(req, from))
        return;
    rl_buf_reset(&g->incoming);
    if (!g->failed && px_sse_finish(g->framer, &g->incoming) != RL_OK)
        g->failed = true;
    hold_unparsed(g);
    if (!g->failed && g->stream) {
        rl_dlp_findings_reset(&g->fresh);
        if (rl_dlp_stream_finish(g->stream, px_guard_scratch(req->worker), &g->fresh) != RL_OK)
            rl_error_clear();
        /* the last findings: recorded like the others */
        size_t total = rl_dlp_stream_total(g->stream);
        if (rl_dlp_findings_merge(&g->found, &g->fresh) != RL_OK) {
            rl_error_clear();
            g->failed = true;
        }
        for (size_t i = 0; i < g->fresh.len; i++)
            px_guard_add_finding(req, &g->fresh.items[i], "response");
        if (settle(req, g, total) && g->found.len > 0 &&
            strcmp(req->status, PX_STATUS_ALLOWED) == 0) {
            req->status = PX_STATUS_DLP_WARNED;
            px_guard_count(req, req->status);
        }
    } else {
        settle(req, g, 0);
    }
    if (g->found.len > 0 || g->found.dropped > 0)
        req->resp_findings = true;
}
