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

/* Feeds n bytes; appends to forward the bytes the client must receive now:
 * every event completed by these bytes (unless dropped) and the bytes of an
 * oversized event. RL_ERR_TOO_LARGE / RL_ERR_NOMEM when forward cannot grow;
 * the stream is then broken and must be abandoned. */
rl_status_t px_sse_feed(px_sse_t *s, const char *data, size_t n, rl_buf_t *forward);

/* The stream ended: hands a last event that lacks its blank line to the
 * callback (its answer is ignored: the bytes are forwarded, as received) and
 * appends them to forward. Same errors as px_sse_feed. */
rl_status_t px_sse_finish(px_sse_t *s, rl_buf_t *forward);

/* Events seen (complete ones, dropped included) and events forwarded unparsed
 * because they passed max_event. */
size_t px_sse_events(const px_sse_t *s);
size_t px_sse_oversized(const px_sse_t *s);

#endif
