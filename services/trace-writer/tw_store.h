/* tw_store: writes batches to PostgreSQL. Each batch is one transaction: the
 * rows are COPYed into session temp tables (ON COMMIT DELETE ROWS), then
 * moved with INSERT ... SELECT ... ON CONFLICT DO NOTHING into the partitioned
 * tables, so a redelivered message changes nothing. When the database refuses
 * a batch for its data, the batch is halved until the refused messages stand
 * alone; those become dead items. A day without a partition is created, then
 * the batch retried. Dead letters go to renlayer.dead_letters under an id
 * derived from the message, so writing one twice writes it once.
 *
 * That staged path is the careful one. Every batch first tries a faster one:
 * a single transaction COPYing the rows straight into the partitioned tables,
 * which costs what a plain COPY costs. Only a batch that fails that way (a
 * redelivered message, a missing day, an unknown tenant, a refused row) takes
 * the staged path, and the next few batches then go the staged way directly.
 *
 * Threads: a store is used by one thread at a time (it owns one connection). */
#ifndef TW_STORE_H
#define TW_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "rl_metrics.h"
#include "rl_status.h"
#include "tw_batch.h"

typedef struct tw_store tw_store_t;

/* Options of tw_store_create(); borrowed during the call (strings copied). */
typedef struct {
    const char *database_url;
    const char *application_name;
    int retention_days;    /* days never (re)created on demand */
    rl_metrics_t *metrics; /* borrowed: rows inserted, database errors; NULL: none */
} tw_store_options_t;

/* What tw_store_write() did, for metrics and logs. */
typedef struct {
    uint64_t inserted[TW_TABLES]; /* new rows (duplicates of earlier writes excluded) */
    int transactions;             /* committed transactions (> 1 after a split) */
    int partitions_created;       /* days created on demand */
} tw_store_result_t;

/* A message for renlayer.dead_letters; every pointer borrowed for the call. */
typedef struct {
    const char *subject;   /* NATS subject (made printable ASCII if it is not) */
    const char *stream;    /* NULL if unknown */
    uint64_t stream_seq;   /* 0 if unknown */
    const char *msg_id;    /* Nats-Msg-Id, NULL if none */
    const uint8_t *tenant; /* 16 bytes, NULL if the message named none */
    const void *payload;   /* verbatim */
    size_t len;
    const char *reason; /* "<reason>: <detail>" */
} tw_dead_letter_t;

/* Creates a store with its own (lazy) connection. *out set only on success
 * (free with tw_store_destroy). RL_ERR_INVALID, RL_ERR_NOMEM. */
rl_status_t tw_store_create(const tw_store_options_t *o, tw_store_t **out);

/* Closes the connection and frees. NULL does nothing. */
void tw_store_destroy(tw_store_t *s);

/* Writes every TW_ITEM_ROWS item of b, directly or staged (see above). Items whose tenant does not
 * exist, or whose rows the database refuses even alone, are turned into dead items
 * (TW_REASON_UNKNOWN_TENANT, TW_REASON_DB_REJECTED) for the caller to
 * dead-letter. RL_OK: every item is settled (its rows committed, or it is dead
 * or dropped); the caller may ack them all. Otherwise the database is
 * unavailable or failed for a reason that is not the data's
 * (RL_ERR_UNAVAILABLE, RL_ERR_TIMEOUT, RL_ERR_CONFLICT, RL_ERR_IO, with the
 * context in rl_error_last()): retry the same batch later; what was committed
 * makes the retry a no-op. *res (optional) is filled either way. */
rl_status_t tw_store_write(tw_store_t *s, tw_batch_t *b, tw_store_result_t *res);

/* Inserts n dead letters in one transaction (ON CONFLICT (id) DO NOTHING, the
 * id a hash of stream, sequence and payload). Errors as tw_store_write. */
rl_status_t tw_store_dead_letters(tw_store_t *s, const tw_dead_letter_t *dl, size_t n);

/* Stamps api_keys.last_used_at for the keys of the stored traces of b (each
 * key at most once a minute per process; the latest started_at wins). Best
 * effort: the caller logs a failure and goes on. */
rl_status_t tw_store_touch_keys(tw_store_t *s, const tw_batch_t *b);

#endif
