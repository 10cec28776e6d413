/* rl_bus: RenLayer's connection to NATS and JetStream. It connects in the
 * background (and keeps reconnecting forever), creates or updates the streams
 * and the KV bucket of the bus contract (docs/bus.md), builds validated
 * subjects and publishes: JetStream asynchronously with a Nats-Msg-Id, core
 * NATS plainly. It never blocks the caller on the bus: a publish that cannot
 * be handed over now is refused with RL_ERR_UNAVAILABLE and the caller (the
 * proxy's spool) keeps the message.
 *
 * Threads: all functions are thread-safe except rl_bus_destroy(), which must
 * not run concurrently with any other call on the same bus. Callbacks run on
 * libnats threads (see rl_bus_options_t) and must not call rl_bus_destroy(). */
#ifndef RL_BUS_H
#define RL_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

#include "rl_status.h"

/* Stream and bucket names of the bus contract (docs/bus.md), for consumers. */
#define RL_BUS_STREAM_DECISIONS "RENLAYER_DECISIONS"
#define RL_BUS_STREAM_TRACES "RENLAYER_TRACES"
#define RL_BUS_STREAM_SESSIONS "RENLAYER_SESSIONS"
#define RL_BUS_STREAM_INSIGHTS "RENLAYER_INSIGHTS"
#define RL_BUS_KV_SESSION_STATE "RENLAYER_SESSION_STATE"

/* Longest subject token (tenant or agent id) the builders accept, in bytes. */
#define RL_BUS_TOKEN_MAX 64
/* A buffer of this size holds any subject the builders produce, NUL included. */
#define RL_BUS_SUBJECT_MAX 160
/* Longest message id rl_bus_publish_js() accepts, in bytes. */
#define RL_BUS_MSG_ID_MAX 128

typedef struct rl_bus rl_bus_t;

/* A JetStream publish that was accepted by rl_bus_publish_js() but not stored:
 * every field is borrowed and valid only during the callback. */
typedef struct {
    const char *subject;
    const char *msg_id;
    const void *data;
    size_t len;
    rl_status_t status; /* RL_ERR_TIMEOUT: no ack in time (the stream may still
                           have it: resend with the same msg id); RL_ERR_UNAVAILABLE:
                           no stream answered, the server refused it, or the bus
                           closed before the ack */
    int js_err_code;    /* JetStream error code (jsErrCode) when the server refused, else 0 */
    const char *detail; /* human-readable reason, never NULL */
} rl_bus_nack_t;

/* Connection state changed. Runs on libnats' single process-wide callback
 * thread: return quickly and do not block on the bus there. */
typedef void (*rl_bus_state_cb)(rl_bus_t *bus, bool connected, void *ctx);

/* An accepted JetStream publish will never be acked (see rl_bus_nack_t). Runs
 * on the bus's ack thread (or in rl_bus_destroy() for what was still waiting),
 * one call at a time; acks of this bus wait while it runs, so spool and return. */
typedef void (*rl_bus_ack_failure_cb)(rl_bus_t *bus, const rl_bus_nack_t *nack, void *ctx);

/* An automatic topology run finished (see ensure_topology): status RL_OK or
 * the error, detail the error context ("" on success). Runs on the bus's
 * topology thread. */
typedef void (*rl_bus_topology_cb)(rl_bus_t *bus, rl_status_t status, const char *detail,
                                   void *ctx);

/* Options of rl_bus_create(). Zero means the default; the struct is borrowed
 * during rl_bus_create() only (strings are copied). */
typedef struct {
    const char *url;  /* required: "nats://host:4222", or several separated by commas */
    const char *name; /* client name shown by the server; default "renlayer" */

    /* When true, a background thread runs rl_bus_ensure_topology() after every
     * connect and reconnect, retrying with backoff until it succeeds. */
    bool ensure_topology;

    int64_t stream_max_age_s;    /* age limit of every stream; default 7 days */
    int64_t stream_max_bytes;    /* size limit of every stream; default unlimited */
    int64_t duplicate_window_s;  /* Nats-Msg-Id dedupe window; default 600 (capped at max age) */
    int replicas;                /* replicas of streams and bucket; default 1 */
    int64_t session_state_ttl_s; /* TTL of RENLAYER_SESSION_STATE entries; default 24 h */

    int max_pending_acks;       /* JetStream publishes awaiting ack at once; default 4096 */
    int64_t ack_timeout_ms;     /* after this an unacked publish is reported failed; default 5000 */
    int64_t request_timeout_ms; /* JetStream API requests (topology); default 5000 */
    int64_t reconnect_wait_ms;  /* first reconnect delay, doubled per attempt; default 100 */
    int64_t reconnect_wait_max_ms; /* delay bound, plus up to 20% jitter; default 5000 */
    int64_t drain_timeout_ms;      /* rl_bus_destroy() waits this long for acks; default 2000 */
    int64_t write_deadline_ms;     /* a publish blocks at most this long on a server that stopped
                                      reading, then the connection drops and reconnects; default 1000 */

    rl_bus_state_cb on_state;             /* optional */
    rl_bus_ack_failure_cb on_ack_failure; /* optional; without it failures are only counted */
    rl_bus_topology_cb on_topology;       /* optional */
    void *ctx;                            /* passed to every callback, borrowed */
} rl_bus_options_t;

/* Counters since rl_bus_create(), for /metrics. */
typedef struct {
    uint64_t js_published;    /* accepted by rl_bus_publish_js() */
    uint64_t js_acked;        /* stored by the stream (duplicates included) */
    uint64_t js_duplicates;   /* acked as a duplicate Nats-Msg-Id, not stored again */
    uint64_t js_ack_failures; /* reported through on_ack_failure */
    uint64_t js_refused;      /* refused with RL_ERR_UNAVAILABLE: disconnected or window full */
    uint64_t js_pending;      /* awaiting an ack now */
    uint64_t core_published;  /* accepted by rl_bus_publish() */
    uint64_t core_refused;    /* refused by rl_bus_publish() while disconnected */
    uint64_t disconnects;
    uint64_t reconnects;       /* connects after the first one */
    uint64_t topology_runs_ok; /* successful rl_bus_ensure_topology() runs */
    uint64_t topology_runs_failed;
    uint64_t topology_created; /* streams and buckets created */
    uint64_t topology_updated; /* streams and buckets whose config was updated */
} rl_bus_stats_t;

/* Creates a bus and starts connecting in the background, at once: the first
 * connection is retried (reconnect_wait_ms doubling up to
 * reconnect_wait_max_ms) while the server is down or does not answer, and
 * libnats reconnects by itself after that. *out is set only on success (free
 * with rl_bus_destroy). RL_ERR_INVALID for a missing or malformed url or a
 * negative option, RL_ERR_NOMEM, RL_ERR_UNAVAILABLE if libnats cannot start.
 * rl_bus_conn() and rl_bus_js() are NULL until the first connection. on_state
 * may run before this returns. */
rl_status_t rl_bus_create(const rl_bus_options_t *opts, rl_bus_t **out);

/* Refuses new publishes, waits up to drain_timeout_ms for pending acks and
 * flushes core publishes (if connected), reports what is still unacked through
 * on_ack_failure (status RL_ERR_UNAVAILABLE) on the calling thread, stops the
 * topology thread, closes the connection and frees the bus. Returns once no
 * callback of this bus is running or will run. NULL does nothing. */
void rl_bus_destroy(rl_bus_t *bus);

/* True while the connection to a server is established. */
bool rl_bus_is_connected(rl_bus_t *bus);

/* True while connected and rl_bus_ensure_topology() has succeeded since the
 * latest (re)connect: what a service's /readyz reports. */
bool rl_bus_is_ready(rl_bus_t *bus);

/* rl_bus_is_ready() as of the latest connection event, without a lock: one
 * atomic load, for the request path (rl_bus_is_connected() takes the
 * connection's lock, which libnats' own threads hold often: futex calls per
 * request, measured). It turns false when the disconnect callback runs, a
 * moment after the socket broke; a publish in that moment is refused and its
 * caller keeps the message, as for any refused publish. */
bool rl_bus_ready_hint(rl_bus_t *bus);

/* Creates what is missing of the streams and bucket in docs/bus.md and updates
 * those whose managed settings (subjects, limits, storage, replicas, dedupe
 * window, TTL, history) differ from the options; settings it does not manage
 * are kept and nothing is ever deleted. Idempotent, and safe while other
 * processes do the same. Blocks for JetStream requests (each bounded by
 * request_timeout_ms): never call it from a bus callback or a request path.
 * RL_ERR_UNAVAILABLE when disconnected or JetStream does not answer,
 * RL_ERR_TIMEOUT, RL_ERR_CONFLICT when a stream cannot be brought to the
 * wanted config (storage type changed, subjects owned by another stream). */
rl_status_t rl_bus_ensure_topology(rl_bus_t *bus);

/* Publishes to JetStream without waiting, with header Nats-Msg-Id = msg_id so
 * the stream drops a replay within the duplicate window. data is copied.
 * RL_OK: the bus took the message; if it is not acked, on_ack_failure reports
 * it. RL_ERR_UNAVAILABLE: not connected, closing, or max_pending_acks publishes
 * are awaiting acks; the caller keeps the message. RL_ERR_INVALID for a bad
 * subject or msg id (empty, longer than RL_BUS_MSG_ID_MAX), RL_ERR_TOO_LARGE
 * for data above the server's max payload, RL_ERR_NOMEM. */
rl_status_t rl_bus_publish_js(rl_bus_t *bus, const char *subject, const char *msg_id,
                              const void *data, size_t len);

/* Publishes on core NATS (at most once, no ack): for renlayer.usage.<tenant>.
 * data is copied. RL_ERR_UNAVAILABLE when not connected (nothing buffered),
 * RL_ERR_INVALID, RL_ERR_TOO_LARGE, RL_ERR_NOMEM. */
rl_status_t rl_bus_publish(rl_bus_t *bus, const char *subject, const void *data, size_t len);

/* Copies the counters into *out. */
void rl_bus_stats(rl_bus_t *bus, rl_bus_stats_t *out);

/* The bus's connection, borrowed: NULL before the first connection, then
 * valid until rl_bus_destroy(); never close or destroy it. For consumers
 * (subscriptions, durable pull consumers). */
natsConnection *rl_bus_conn(rl_bus_t *bus);

/* The bus's JetStream context, borrowed like rl_bus_conn(). Its async-publish
 * settings belong to rl_bus_publish_js(): use js_Publish*Async only through it. */
jsCtx *rl_bus_js(rl_bus_t *bus);

/* True if tok can be a subject token: 1..RL_BUS_TOKEN_MAX bytes of
 * [A-Za-z0-9_-] (a UUID qualifies; '.', '*', '>' and whitespace never do). */
bool rl_bus_token_valid(const char *tok);

/* Subject builders: write the subject of docs/bus.md into out (cap bytes,
 * RL_BUS_SUBJECT_MAX always suffices). RL_ERR_INVALID if a token is not
 * rl_bus_token_valid() or out is NULL, RL_ERR_TOO_LARGE if cap is too small;
 * on error out holds "" when cap > 0. */
rl_status_t rl_bus_subject_traces(const char *tenant, const char *agent, char *out, size_t cap);
rl_status_t rl_bus_subject_decisions(const char *tenant, const char *agent, char *out, size_t cap);
rl_status_t rl_bus_subject_sessions_events(const char *tenant, char *out, size_t cap);
rl_status_t rl_bus_subject_sessions_control(const char *tenant, char *out, size_t cap);
rl_status_t rl_bus_subject_insights(const char *tenant, char *out, size_t cap);
rl_status_t rl_bus_subject_usage(const char *tenant, char *out, size_t cap);

#endif
