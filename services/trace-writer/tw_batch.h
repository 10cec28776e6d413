/* tw_batch: bus messages -> rows. Turns each trace or decision v1 message
 * (docs/bus.md) into rows of PostgreSQL COPY text, one buffer per table, after
 * checking every field the trace-writer stores; a message that cannot be
 * stored becomes a dead item with a low-cardinality reason and a readable
 * detail. Pure: no I/O, the clock comes in through tw_limits_t.
 *
 * The rows of one batch sit in one buffer per table in message order, and each
 * item remembers its byte range in each, so that the rows of any run of items
 * are one contiguous slice per table (what tw_store COPYs, and halves when it
 * isolates a message the database refuses).
 *
 * Threads: a batch belongs to one thread at a time. */
#ifndef TW_BATCH_H
#define TW_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rl_buf.h"
#include "rl_status.h"

/* What a batch holds: messages of one stream. */
typedef enum {
    TW_KIND_TRACE = 0, /* RENLAYER_TRACES: traces, dlp_findings, tool_calls */
    TW_KIND_DECISION,  /* RENLAYER_DECISIONS: decisions */
} tw_kind_t;

/* The tables rows are written to; for decisions only TW_TABLE_MAIN is used. */
typedef enum {
    TW_TABLE_MAIN = 0, /* renlayer.traces or renlayer.decisions */
    TW_TABLE_DLP,      /* renlayer.dlp_findings */
    TW_TABLE_TOOLS,    /* renlayer.tool_calls */
    TW_TABLES,
} tw_table_t;

/* Why a message was not stored. The names are the values of the metric label
 * `reason` and the prefix of dead_letters.reason. */
typedef enum {
    TW_REASON_NONE = 0,
    TW_REASON_INVALID_JSON,        /* not a JSON object */
    TW_REASON_UNSUPPORTED_VERSION, /* "v" is an integer other than 1 */
    TW_REASON_INVALID_FIELD,       /* a field missing, of the wrong type or out of range */
    TW_REASON_TRACE_ID_MISMATCH,   /* trace_id is no UUIDv7 of started_at (+-1 h) */
    TW_REASON_TIME_OUT_OF_RANGE,   /* started_at more than TW_MAX_FUTURE_US ahead */
    TW_REASON_UNKNOWN_TENANT,      /* tenant_id names no tenant (set by tw_store) */
    TW_REASON_DB_REJECTED,         /* PostgreSQL refused the message's rows (set by tw_store) */
    TW_REASON_PAST_RETENTION,      /* its day is past retention: dropped, not dead-lettered */
    TW_REASON_COUNT,
} tw_reason_t;

/* What becomes of a message. */
typedef enum {
    TW_ITEM_ROWS = 0, /* rows encoded; to be written */
    TW_ITEM_DEAD,     /* to the dead letters, then acked */
    TW_ITEM_DROPPED,  /* acked without a trace (TW_REASON_PAST_RETENTION) */
} tw_item_state_t;

/* A message whose started_at lies further ahead of the clock is refused. */
#define TW_MAX_FUTURE_US (24LL * 3600 * 1000000)
/* Most array elements stored per message (the ordinal column is a smallint). */
#define TW_MAX_CHILDREN 32767
/* Most items a batch grows to (its rows buffers bound it first, normally). */
#define TW_BATCH_ITEMS_MAX ((size_t)1 << 20)
/* Bytes of a dead item's detail, NUL included. */
#define TW_DETAIL_MAX 200

/* One trace or decision of a batch: a bus message carries one or more, one
 * per line (docs/bus.md); each is an item of its own. */
typedef struct {
    tw_item_state_t state;
    tw_reason_t reason;         /* TW_REASON_NONE while state is TW_ITEM_ROWS */
    char detail[TW_DETAIL_MAX]; /* what was wrong, for dead_letters.reason */
    bool has_tenant, has_api_key;
    uint8_t tenant[16];      /* tenant_id when the message names a valid one */
    uint8_t api_key[16];     /* api_key_id of a stored trace */
    int64_t started_us;      /* started_at, Unix microseconds (when parsed) */
    size_t begin[TW_TABLES]; /* byte range of the item's rows in each buffer */
    size_t end[TW_TABLES];
    const void *data; /* the message, borrowed from the caller */
    size_t len;
    void *ref; /* the caller's handle (the natsMsg) */
} tw_item_t;

/* The clock and retention the checks use. */
typedef struct {
    int64_t now_us;     /* Unix microseconds */
    int retention_days; /* a day before (today - retention_days) UTC is past retention */
} tw_limits_t;

/* A batch: up to cap items and their rows. Fields are read-only to callers. */
typedef struct {
    tw_kind_t kind;
    tw_item_t *items;
    size_t n, cap;
    rl_buf_t rows[TW_TABLES];
    bool dirty; /* an item died after its rows were encoded: tw_batch_compact() */
} tw_batch_t;

/* Column lists of the COPY text rows, in order (docs/schema.md). */
#define TW_TRACES_COLUMNS                                                                          \
    "trace_id, started_at, ended_at, tenant_id, agent_id, gate_id, api_key_id, end_user, "         \
    "session_key, action, method, path, model, upstream, status, http_status, policy_ids, "        \
    "input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens, "     \
    "total_tokens, cost_usd, latency_ms, upstream_ms, overhead_us, stream, error, attempts, "      \
    "request_body, response_body, truncated"
#define TW_DECISIONS_COLUMNS                                                                       \
    "trace_id, started_at, decided_at, tenant_id, agent_id, gate_id, api_key_id, end_user, "       \
    "session_key, action, status, http_status, policy_id, policy_ids, reason"
#define TW_DLP_COLUMNS                                                                             \
    "trace_id, started_at, ordinal, tenant_id, agent_id, detector, severity, location, action"
#define TW_TOOLS_COLUMNS                                                                           \
    "trace_id, started_at, ordinal, tenant_id, agent_id, session_key, name, call_id, phase, "      \
    "args_sha256"

/* Prepares an empty batch for cap (>= 1) items of kind, growing as needed up
 * to TW_BATCH_ITEMS_MAX; each rows
 * buffer may grow to rows_max bytes (0: 256 MiB). Allocates the item array.
 * RL_ERR_INVALID for cap 0, RL_ERR_NOMEM (b is then empty: tw_batch_free is a
 * no-op). Free with tw_batch_free. */
rl_status_t tw_batch_init(tw_batch_t *b, tw_kind_t kind, size_t cap, size_t rows_max);

/* Empties the batch, keeping its memory. */
void tw_batch_reset(tw_batch_t *b);

/* Frees what the batch holds. NULL or an already freed batch does nothing. */
void tw_batch_free(tw_batch_t *b);

/* Checks one trace or decision (len bytes of JSON, one line of a bus message,
 * borrowed until the batch is reset: items keep pointing at it) and appends
 * it as an item: TW_ITEM_ROWS with its
 * rows appended to the buffers, TW_ITEM_DEAD with a reason and detail, or
 * TW_ITEM_DROPPED. *out (optional) points at the new item, valid until the
 * next call on b. RL_ERR_TOO_LARGE when the batch has TW_BATCH_ITEMS_MAX items or a rows buffer
 * would pass its limit (nothing appended), RL_ERR_NOMEM. A poison message is
 * not an error: it is an item with state TW_ITEM_DEAD. */
rl_status_t tw_batch_add(tw_batch_t *b, const void *data, size_t len, const tw_limits_t *lim,
                         void *ref, tw_item_t **out);

/* Adds every line of a bus message (len bytes of data: one or more JSON
 * objects, one per line, docs/bus.md) with tw_batch_add, ref on each; a
 * message of no line at all is one dead item. *added (optional): the items
 * added. On an error nothing of the message stays in the batch. */
rl_status_t tw_batch_add_message(tw_batch_t *b, const void *data, size_t len,
                                 const tw_limits_t *lim, void *ref, size_t *added);

/* Marks item i dead with reason and a detail (copied, truncated); its rows
 * stay in the buffers until tw_batch_compact(). */
void tw_batch_kill(tw_batch_t *b, size_t i, tw_reason_t reason, const char *detail);

/* Removes the rows of items that are no longer TW_ITEM_ROWS from the buffers
 * and fixes every range. In place; no allocation. */
void tw_batch_compact(tw_batch_t *b);

/* Items in state. */
size_t tw_batch_count(const tw_batch_t *b, tw_item_state_t state);

/* The label name of a reason ("invalid_json", ...); "none" for TW_REASON_NONE. */
const char *tw_reason_name(tw_reason_t r);

/* Parses an RFC 3339 time ("2024-10-20T11:54:56.123456Z", fraction of 0..9
 * digits optional, "Z" or "+hh:mm"/"-hh:mm"; years 1970..9999) into Unix
 * microseconds (a finer fraction is truncated). RL_ERR_INVALID otherwise. */
rl_status_t tw_time_parse(const char *s, int64_t *out_us);

/* The UTC day of a Unix microsecond time, as days since 1970-01-01. */
int64_t tw_day_of(int64_t us);

/* Writes day (days since 1970-01-01, >= 0) as "YYYY-MM-DD" and a NUL. */
void tw_day_format(int64_t day, char out[11]);

#endif
