/* tw_consumer: one durable JetStream pull consumer and the three threads
 * that drain it into PostgreSQL. The fetcher creates (or updates) the durable
 * consumer idempotently and binds to it after every (re)connect of the bus,
 * and fetches batches bounded by count and bytes (what is there, at once;
 * when nothing is, it looks again after batch_wait_ms); the encoder turns each
 * batch into rows (tw_batch); the writer writes it through its own tw_store in
 * one transaction, dead-letters what cannot be stored and acks every message
 * of the batch only after the commit. At most three batches are in hand, one
 * per stage, so fetching, parsing and writing overlap and PostgreSQL does not
 * wait for the parsing. Several processes bind the same durable and share its
 * messages (work-queue style).
 *
 * While PostgreSQL is unavailable the same batch is retried with backoff
 * (100 ms doubling to 5 s) and every batch in hand is kept from redelivery
 * with in-progress acks; nothing is acked and nothing more is fetched until
 * it is written.
 *
 * Threads: start, bound and stop are called from the main thread; the
 * consumer's work runs on its own three threads. */
#ifndef TW_CONSUMER_H
#define TW_CONSUMER_H

#include <stdbool.h>

#include "rl_bus.h"
#include "rl_metrics.h"
#include "rl_status.h"
#include "tw_batch.h"

typedef struct tw_consumer tw_consumer_t;

/* Options of tw_consumer_start(); borrowed during the call (strings copied). */
typedef struct {
    rl_bus_t *bus;  /* borrowed until tw_consumer_destroy() */
    tw_kind_t kind; /* RENLAYER_TRACES or RENLAYER_DECISIONS */
    const char *database_url;
    const char *application_name;
    rl_metrics_t *metrics; /* borrowed */
    int batch_size;        /* messages per batch, 1..10000 */
    long batch_wait_ms;    /* after a fetch found nothing, look again this much later */
    long ack_wait_ms;      /* the consumer's AckWait */
    long max_ack_pending;  /* the consumer's MaxAckPending */
    int retention_days;
    long drain_ms; /* on stop, retry the batch in hand this long at most */
} tw_consumer_options_t;

/* Starts the consumer's thread (it binds in the background, waiting for the
 * bus to be ready). *out is set only on success (free with
 * tw_consumer_destroy). RL_ERR_INVALID, RL_ERR_NOMEM, RL_ERR_IO. */
rl_status_t tw_consumer_start(const tw_consumer_options_t *o, tw_consumer_t **out);

/* True while the thread is bound to its durable consumer (for /readyz). */
bool tw_consumer_bound(tw_consumer_t *c);

/* Asks the thread to stop: it finishes the batch in hand (writing and acking
 * it, retrying for at most drain_ms, else naking it for redelivery), flushes
 * its acks and ends. Returns at once. NULL does nothing. */
void tw_consumer_stop(tw_consumer_t *c);

/* Stops (if not yet asked), waits for the thread and frees. NULL ok. */
void tw_consumer_destroy(tw_consumer_t *c);

/* The durable consumer's name for kind: "trace-writer-traces" or
 * "trace-writer-decisions". */
const char *tw_consumer_durable(tw_kind_t kind);

#endif
