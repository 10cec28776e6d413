/* tw_partitions: the daily partitions of the telemetry tables (migration
 * 0004). Thin calls of renlayer.ensure_trace_partitions() and
 * renlayer.drop_trace_partitions_before(), which serialise on an advisory
 * lock, so any number of writers may run them at once; and an upkeep thread
 * that runs both at start and then every interval (docs/trace-writer.md).
 * Days are UTC days, counted from 1970-01-01 as tw_day_of() does. */
#ifndef TW_PARTITIONS_H
#define TW_PARTITIONS_H

#include <stdint.h>

#include "rl_metrics.h"
#include "rl_pg.h"
#include "rl_status.h"

/* Creates the missing partitions of days [from_day, from_day + days) of every
 * daily-partitioned table; *created (optional) receives how many. days 1..400.
 * Errors as rl_pg_query (lock_timeout: RL_ERR_IO, SQLSTATE 55P03). */
rl_status_t tw_partitions_ensure(rl_pg_t *pg, int64_t from_day, int days, int *created);

/* Runs the upkeep once: ensures days [today - 1, today + days_ahead] and drops
 * every day before today - retention_days, "today" being the database's UTC
 * date. *created and *dropped (optional) receive the counts. */
rl_status_t tw_partitions_upkeep(rl_pg_t *pg, int days_ahead, int retention_days, int *created,
                                 int *dropped);

typedef struct tw_upkeep tw_upkeep_t;

/* Options of tw_upkeep_start(); borrowed during the call (strings copied). */
typedef struct {
    const char *database_url;
    const char *application_name;
    int days_ahead;        /* RENLAYER_TRACE_PARTITION_DAYS_AHEAD */
    int retention_days;    /* RENLAYER_TRACE_RETENTION_DAYS */
    long interval_ms;      /* between successful runs; a failed run is retried sooner */
    rl_metrics_t *metrics; /* borrowed: partitions created/dropped, upkeep failures */
} tw_upkeep_options_t;

/* Starts a thread with its own connection that runs tw_partitions_upkeep() at
 * once and then every interval_ms (after a failure: again in at most 30 s),
 * logging what it did. *out is set only on success (stop with
 * tw_upkeep_stop). RL_ERR_INVALID, RL_ERR_NOMEM, RL_ERR_IO (thread). */
rl_status_t tw_upkeep_start(const tw_upkeep_options_t *o, tw_upkeep_t **out);

/* Wakes the thread and waits until it ends (at most one statement in flight:
 * bounded by the 5 s lock_timeout of the functions), then frees. NULL ok. */
void tw_upkeep_stop(tw_upkeep_t *u);

#endif
