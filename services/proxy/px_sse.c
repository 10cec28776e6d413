#include "px_sse.h"

#include <stdlib.h>
#include <string.h>

struct px_sse {
    size_t max_event;
    px_sse_event_cb cb;
    void *ctx;
    rl_buf_t pending;  /* the current event's bytes received so far (at most max_event) */
    rl_buf_t scratch;  /* the joined data of an event with several data lines */
    size_t line_len;   /* bytes of the current line so far; 0 at the start of a line */
    bool prev_cr;      /* the last byte was a CR: an LF right after it ends nothing new */
    bool tail;         /* ... and that CR ended an event, whose LF arrives later */
    bool tail_dropped; /* ... and that event was dropped, so its LF is dropped too */
    bool take_dropped; /* the callback keeps what it drops: a late LF goes to it */
    bool oversized;    /* the current event passed max_event: its bytes go straight on */
    bool started;      /* an event was completed (a BOM can only open the stream) */
    size_t events;
    size_t noversized;
};

rl_status_t px_sse_create(size_t max_event, px_sse_event_cb cb, void *ctx, px_sse_t **out)
{
    px_sse_t *s = calloc(1, sizeof *s);
    if (s == NULL)
        return rl_error(RL_ERR_NOMEM, "SSE parser allocation failed");
    s->max_event = max_event;
    s->cb = cb;
    s->ctx = ctx;
    rl_buf_init(&s->pending, max_event + 1); /* and the LF of a final CRLF */
    rl_buf_init(&s->scratch, max_event);
    *out = s;
    return RL_OK;
}

void px_sse_destroy(px_sse_t *s)
{
    if (s == NULL)
        return;
    rl_buf_free(&s->pending);
    rl_buf_free(&s->scratch);
    free(s);
}

size_t px_sse_events(const px_sse_t *s)
{
    return s->events;
}

size_t px_sse_oversized(const px_sse_t *s)
{
    return s->noversized;
}

/* Splits raw into fields and hands the event to the callback. Returns true
 * when the event must be forwarded. */
static bool dispatch(px_sse_t *s, const char *raw, size_t len)
{
    if (s->cb == NULL)
        return true;
    px_sse_event_t ev = {.raw = raw, .raw_len = len};
    size_t i = 0;
    /* A UTF-8 BOM may open the stream; it is not part of the first field name. */
    if (!s->started && len >= 3 && memcmp(raw, "\xEF\xBB\xBF", 3) == 0)
        i = 3;
    int ndata = 0;
    rl_buf_reset(&s->scratch);
    bool scratch_ok = true;
    while (i < len) {
        size_t b = i;
        while (i < len && raw[i] != '\r' && raw[i] != '\n')
            i++;
        size_t e = i;
        if (i < len && raw[i] == '\r' && i + 1 < len && raw[i + 1] == '\n')
            i++;
        if (i < len)
            i++;
        if (e == b)
            break; /* the blank line that ends the event */
        if (raw[b] == ':')
            continue; /* a comment */
        const char *colon = memchr(raw + b, ':', e - b);
        size_t nlen = colon ? (size_t)(colon - (raw + b)) : e - b;
        const char *v = colon ? colon + 1 : raw + e;
        if (v < raw + e && *v == ' ')
            v++;
        size_t vlen = (size_t)(raw + e - v);
        if (nlen == 4 && memcmp(raw + b, "data", 4) == 0) {
            if (ndata == 0) {
                ev.data = v;
                ev.data_len = vlen;
            } else {
                /* Data lines join with "\n"; the joined text can only be
                 * shorter than the event, so max_event bounds it. */
                if (ndata == 1)
                    scratch_ok = rl_buf_append(&s->scratch, ev.data, ev.data_len) == RL_OK;
                scratch_ok = scratch_ok && rl_buf_append(&s->scratch, "\n", 1) == RL_OK &&
                             rl_buf_append(&s->scratch, v, vlen) == RL_OK;
            }
            ndata++;
        } else if (nlen == 5 && memcmp(raw + b, "event", 5) == 0) {
            ev.event = v;
            ev.event_len = vlen;
        }
    }
    if (ndata > 1) {
        if (!scratch_ok)
            return true; /* cannot read it: pass it on unread */
        ev.data = s->scratch.data;
        ev.data_len = s->scratch.len;
    }
    return s->cb(s->ctx, &ev);
}

/* The event whose last bytes are data[0..n) is complete. Returns the status
 * of forwarding and sets *dropped. */
static rl_status_t complete(px_sse_t *s, const char *data, size_t n, rl_buf_t *forward,
                            bool *dropped)
{
    *dropped = false;
    rl_status_t st = RL_OK;
    if (s->oversized) {
        s->oversized = false;
        s->noversized++;
        s->events++;
        s->started = true;
        return rl_buf_append(forward, data, n);
    }
    const char *raw = data;
    size_t len = n;
    /* Sizes count up to the CR of a final CRLF: whether its LF came in the
     * same feed must not decide whether the event is read. */
    size_t counted = n >= 2 && data[n - 2] == '\r' && data[n - 1] == '\n' ? n - 1 : n;
    if (s->pending.len > 0) {
        if (counted > s->max_event - s->pending.len) {
            /* Complete but too big to read: pass it on as is. */
            st = rl_buf_append(forward, s->pending.data, s->pending.len);
            if (st == RL_OK)
                st = rl_buf_append(forward, data, n);
            rl_buf_reset(&s->pending);
            s->noversized++;
            s->events++;
            s->started = true;
            return st;
        }
        st = rl_buf_append(&s->pending, data, n);
        if (st != RL_OK)
            return st;
        raw = s->pending.data;
        len = s->pending.len;
    }
    s->events++;
    if (s->pending.len == 0 && counted > s->max_event) {
        s->noversized++;
        st = rl_buf_append(forward, raw, len);
    } else if (dispatch(s, raw, len)) {
        st = rl_buf_append(forward, raw, len);
    } else {
        *dropped = true;
    }
    s->started = true;
    rl_buf_reset(&s->pending);
    return st;
}

/* Bytes data[0..n) belong to the current, incomplete event. */
static rl_status_t hold(px_sse_t *s, const char *data, size_t n, rl_buf_t *forward)
{
    if (n == 0)
        return RL_OK;
    if (s->oversized)
        return rl_buf_append(forward, data, n);
    if (n > s->max_event - s->pending.len) {
        s->oversized = true;
        rl_status_t st =
            rl_buf_append(forward, s->pending.data ? s->pending.data : "", s->pending.len);
        rl_buf_reset(&s->pending);
        if (st != RL_OK)
            return st;
        return rl_buf_append(forward, data, n);
    }
    return rl_buf_append(&s->pending, data, n);
}

rl_status_t px_sse_feed(px_sse_t *s, const char *data, size_t n, rl_buf_t *forward)
{
    if (n == 0)
        return RL_OK; /* data may be NULL then */
    size_t start = 0; /* data[start..i) is not yet placed */
    size_t i = 0;
    rl_status_t st;
    while (i < n) {
        char c = data[i];
        if (s->prev_cr) {
            s->prev_cr = false;
            if (c == '\n') {
                if (s->tail) {
                    /* The LF of the CRLF that ended the last event (start == i). */
                    s->tail = false;
                    if (s->tail_dropped && s->take_dropped) {
                        px_sse_event_t ev = {.raw = "\n", .raw_len = 1, .tail = true};
                        (void)s->cb(s->ctx, &ev);
                    } else if (!s->tail_dropped &&
                               (st = rl_buf_append(forward, "\n", 1)) != RL_OK) {
                        return st;
                    }
                    start = ++i;
                } else {
                    i++; /* the second half of a CRLF line end */
                }
                continue;
            }
            s->tail = false;
        }
        if (c != '\r' && c != '\n') {
            s->line_len++;
            i++;
            continue;
        }
        if (s->line_len > 0) {
            s->line_len = 0;
            s->prev_cr = c == '\r';
            i++;
            continue;
        }
        /* A blank line: the event ends here (with the LF of a CRLF when it is
         * already in data, else the LF is forwarded or dropped on arrival). */
        size_t end = i + 1;
        bool crlf_later = false;
        if (c == '\r') {
            if (end < n && data[end] == '\n')
                end++;
            else if (end == n)
                crlf_later = true;
        }
        bool dropped;
        if ((st = complete(s, data + start, end - start, forward, &dropped)) != RL_OK)
            return st;
        if (crlf_later) {
            s->prev_cr = true;
            s->tail = true;
            s->tail_dropped = dropped;
        }
        i = start = end;
    }
    return hold(s, data + start, n - start, forward);
}

void px_sse_take_dropped(px_sse_t *s)
{
    s->take_dropped = true;
}

rl_status_t px_sse_finish(px_sse_t *s, rl_buf_t *forward)
{
    s->prev_cr = s->tail = false;
    s->line_len = 0;
    if (s->oversized) {
        s->oversized = false;
        s->noversized++;
        s->events++;
        return RL_OK;
    }
    if (s->pending.len == 0)
        return RL_OK;
    s->events++;
    rl_status_t st = RL_OK;
    if (dispatch(s, s->pending.data, s->pending.len))
        st = rl_buf_append(forward, s->pending.data, s->pending.len);
    rl_buf_reset(&s->pending);
    return st;
}
