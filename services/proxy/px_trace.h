/* px_trace: what the proxy publishes about each call — the decision, made
 * before forwarding, and the trace, after the response — as the v1 JSON
 * messages of docs/bus.md on renlayer.decisions.<tenant>.<agent> and
 * renlayer.traces.<tenant>.<agent>, with Nats-Msg-Id = the trace id.
 *
 * Publishing never blocks the request path. When NATS is unreachable, or a
 * publish is not acked, the message goes to a bounded on-disk spool that is
 * replayed in order once the bus is back, and survives a restart of the
 * proxy. Messages are encoded into a reusable per-thread buffer. */
#ifndef PX_TRACE_H
#define PX_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "px_types.h"
#include "rl_buf.h"
#include "rl_bus.h"
#include "rl_metrics.h"
#include "rl_status.h"

#define PX_STATUS_ALLOWED "ALLOWED"
#define PX_STATUS_FLAGGED "FLAGGED"
#define PX_STATUS_DENIED "DENIED"
#define PX_STATUS_DLP_BLOCKED "DLP_BLOCKED"
#define PX_STATUS_DLP_WARNED "DLP_WARNED"

#define PX_MAX_POLICY_IDS 16
#define PX_MAX_FINDINGS 32
#define PX_MAX_ATTEMPTS 8

typedef struct {
    char detector[48];   /* EMAIL, CREDIT_CARD, ... or a custom rule id */
    char severity[12];   /* low, medium, high, critical */
    char where[12];      /* request, response */
    char action[12];     /* block, warn, redact */
} px_finding_t;

typedef struct {
    char gate_id[PX_ID_LEN];
    char upstream[256];  /* base URL tried */
    int http_status;     /* 0: no response (connect error, timeout) */
    char error[96];      /* "" or what failed */
    double ms;
} px_attempt_t;

/* One call, as the engine fills it. Strings are borrowed for the duration of
 * px_publisher_trace(); bodies are already redacted and are truncated there. */
typedef struct {
    char trace_id[PX_ID_LEN];
    char tenant_id[PX_ID_LEN], agent_id[PX_ID_LEN], gate_id[PX_ID_LEN], api_key_id[PX_ID_LEN];
    const char *user;       /* X-RenLayer-User, NULL if none */
    const char *session_id; /* X-RenLayer-Session / X-Layer-Session-Id, NULL if none */
    px_action_t action;
    const char *method, *path;
    char model[PX_MODEL_MAX];
    const char *upstream;   /* the base URL that answered, NULL if none */
    const char *status;     /* PX_STATUS_* */
    int http_status;
    const char *policy_ids[PX_MAX_POLICY_IDS];
    size_t npolicy_ids;
    px_finding_t findings[PX_MAX_FINDINGS];
    size_t nfindings;
    const px_tool_call_t *tool_calls;
    size_t ntool_calls;
    px_usage_t usage;
    double cost_usd;        /* < 0 (or NaN): no price known, published as null */
    double latency_ms, upstream_ms;
    int64_t overhead_us;
    int64_t started_at_us, ended_at_us; /* Unix microseconds; a decision's decided_at is
                                           ended_at_us (0: the clock when encoded) */
    bool stream;
    const char *error;      /* NULL or what went wrong */
    px_attempt_t attempts[PX_MAX_ATTEMPTS];
    size_t nattempts;
    const char *request_body;  size_t request_body_len;
    const char *response_body; size_t response_body_len;
    const char *reason;     /* decisions: why (policy message, detector), NULL if none */
} px_trace_t;

/* Bytes of each body a trace keeps when not configured. */
#define PX_TRACE_BODY_MAX_DEFAULT (16u << 10)

/* px_publisher.c */

typedef struct px_publisher px_publisher_t;

typedef struct {
    rl_bus_t *bus;               /* borrowed; its on_ack_failure must call px_publisher_nack */
    const char *spool_dir;       /* created if missing */
    int64_t spool_max_bytes;     /* beyond it new messages are dropped and counted; 0: 1 GiB */
    size_t body_max_bytes;       /* request/response bodies truncated to this; 0: 16 KiB */
    rl_metrics_t *metrics;       /* borrowed: spool depth, dropped, published, replayed */
} px_publisher_options_t;

/* Opens the spool (replaying what a previous run left, once the bus is
 * ready) and starts the replay thread. *out set only on success. */
rl_status_t px_publisher_create(const px_publisher_options_t *opts, px_publisher_t **out);

/* Flushes what it can and stops the threads: the sender's queue goes to the
 * bus or the spool; the spool is replayed for up to 2 s while the bus is
 * ready, then the bus's pending acks are awaited for up to 10 s so that their
 * failures reach the spool. The spool stays open: px_publisher_nack still
 * spools what the bus reports afterwards, as rl_bus_destroy does for every
 * message still unacked, so call this after the engine stopped publishing,
 * then destroy the bus, then px_publisher_destroy. Idempotent; NULL ok. */
void px_publisher_stop(px_publisher_t *pub);

/* Stops (if not done), closes the spool (what is left stays on disk for the
 * next run) and frees. Touches no metric, so it may run after the registry
 * is gone. px_publisher_nack must not be called once it starts: destroy the
 * bus first. NULL does nothing. */
void px_publisher_destroy(px_publisher_t *pub);

/* Publishes the decision of t (before forwarding). Never blocks on NATS.
 * Nats-Msg-Id: trace_id + ":d". RL_OK when the bus or the spool took it;
 * otherwise it is dropped and counted: RL_ERR_TOO_LARGE (spool full, or a
 * message the bus can never take), RL_ERR_INVALID (bad tenant/agent/trace
 * id), RL_ERR_IO (spool write failed), RL_ERR_NOMEM. Thread-safe. */
rl_status_t px_publisher_decision(px_publisher_t *pub, const px_trace_t *t);

/* Publishes the trace t (after the response). Never blocks on NATS.
 * Nats-Msg-Id: trace_id. Returns as px_publisher_decision(). */
rl_status_t px_publisher_trace(px_publisher_t *pub, const px_trace_t *t);

/* For the bus's on_ack_failure: spools a message the bus took but the
 * stream did not store. */
void px_publisher_nack(px_publisher_t *pub, const rl_bus_nack_t *nack);

/* Waits up to timeout_ms until every message handed to the publisher so far
 * was passed to the bus or the spool (they go through a sender thread that
 * publishes in batches). RL_ERR_TIMEOUT otherwise. For tests and shutdown. */
rl_status_t px_publisher_flush(px_publisher_t *pub, long timeout_ms);

/* Messages in the spool now (for /metrics and tests). */
uint64_t px_publisher_spool_depth(px_publisher_t *pub);

/* px_trace.c */

/* Encodes t as the v1 trace (or decision) JSON into out. Exposed for unit
 * tests and docs/bus.md examples. Appends to out; on error (RL_ERR_TOO_LARGE
 * at out's limit) out is left as it was. body_max 0: 16 KiB. */
rl_status_t px_trace_encode(const px_trace_t *t, bool decision, size_t body_max, rl_buf_t *out);

#endif
