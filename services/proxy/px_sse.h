/* px_sse: an incremental Server-Sent Events framer (WHATWG HTML, "Parsing an
 * event stream"). It is fed the bytes of a stream as they arrive and hands
 * each complete event (the lines up to and including the blank line that
 * ends it) to a callback, which decides whether the event is passed on.
 * Passed-on bytes are exactly the bytes received: line endings (LF, CRLF or
 * CR), comments, unknown fields and BOMs are never rewritten.
 *
 * Bounded: an event that grows past max_event bytes before its blank line is
 * forwarded as it arrives, unparsed and never handed to the callback.
 * Not thread-safe: one stream, one owner. */
#ifndef PX_SSE_H
#define PX_SSE_H

#include <stdbool.h>
#include <stddef.h>

#include "rl_buf.h"
#include "rl_status.h"

/* The largest event the proxy holds to parse (px_response, px_guard): a
 * larger one passes on as it arrives, unparsed. The fuzz build (RL_FUZZ)
 * lowers it so that short inputs reach those paths. */
#ifndef PX_SSE_EVENT_MAX
#define PX_SSE_EVENT_MAX ((size_t)1 << 20)
#endif

/* One complete event. Every pointer is borrowed and valid only during the
 * callback. */
typedef struct {
    const char *raw; /* the event's bytes as received, its blank line included (when
                      * that line ends in a CRLF split across feeds, the LF is not
                      * in raw: it follows the event's fate on arrival) */
    size_t raw_len;
    const char *event; /* the value of the last "event" field; NULL when none */
    size_t event_len;
    const char *data; /* the "data" lines joined with "\n" (no final "\n"); NULL when none */
    size_t data_len;
    bool tail; /* px_sse_take_dropped only: raw is the LF of the CRLF that ended the
                * event before, arrived in a later feed; no fields */
} px_sse_event_t;

/* Called for each complete event. Returns true to forward its raw bytes,
 * false to drop them. */
typedef bool (*px_sse_event_cb)(void *ctx, const px_sse_event_t *ev);

typedef struct px_sse px_sse_t;

/* Creates a framer. cb may be NULL (every event is forwarded); ctx is passed
 * to cb as is. max_event: the largest event held for the callback (bytes).
 * *out owned (px_sse_destroy); untouched on error (RL_ERR_NOMEM). */
rl_status_t px_sse_create(size_t max_event, px_sse_event_cb cb, void *ctx, px_sse_t **out);

/* Frees the framer and what it holds. NULL does nothing. */
void px_sse_destroy(px_sse_t *s);

/* For a callback that keeps the bytes of the events it returns false for
 * (and passes them on itself): when such an event ends with a CRLF whose LF
 * arrives in a later feed, that LF is handed to the callback as an event of
 * its own (tail set) instead of being dropped, so the caller sees every byte
 * in order; forward then only ever gets the bytes of oversized events. */
void px_sse_take_dropped(px_sse_t *s);

/* Feeds n bytes; appends to forward the bytes the client must receive now:
 * every event completed by these bytes (unless dropped) and the bytes of an
 * oversized event. RL_ERR_TOO_LARGE / RL_ERR_NOMEM when forward cannot grow;
 * the stream is then broken and must be abandoned. */
rl_status_t px_sse_feed(px_sse_t *s, const char *data, size_t n, rl_buf_t *forward);

/* The stream ended: a last event that lacks its blank line goes to the
 * callback like any other (its bytes, as received, are appended to forward
 * unless the callback drops them). Same errors as px_sse_feed. */
rl_status_t px_sse_finish(px_sse_t *s, rl_buf_t *forward);

/* Events seen (complete ones, dropped included) and events forwarded unparsed
 * because they passed max_event. */
size_t px_sse_events(const px_sse_t *s);
size_t px_sse_oversized(const px_sse_t *s);

#endif
