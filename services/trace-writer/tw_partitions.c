#include "tw_partitions.h"

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rl_log.h"
#include "tw_batch.h"
#include "rl_cond.h"

#define RETRY_MAX_MS 30000
/* A statement that waits longer than this is given up and retried later. */
#define QUERY_TIMEOUT_MS 60000

static rl_status_t scalar_int(rl_pg_t *pg, const char *sql, int n, const char *const *vals,
                              int *out)
{
    PGresult *r = NULL;
    rl_status_t st = rl_pg_query(pg, sql, n, vals, &r);
    if (st != RL_OK)
        return st;
    int64_t v = 0;
    if (out)
        *out = PQntuples(r) == 1 && rl_pg_get_i64(r, 0, 0, &v) && v >= INT_MIN && v <= INT_MAX
                   ? (int)v
                   : 0;
    PQclear(r);
    return RL_OK;
}

rl_status_t tw_partitions_ensure(rl_pg_t *pg, int64_t from_day, int days, int *created)
{
    if (from_day < 0 || days < 1 || days > 400)
        return rl_error(RL_ERR_INVALID, "tw_partitions_ensure: bad range");
    char day[11], count[12];
    tw_day_format(from_day, day);
    snprintf(count, sizeof count, "%d", days);
    const char *vals[] = {day, count};
    return scalar_int(pg, "SELECT renlayer.ensure_trace_partitions($1::date, $2::int)", 2, vals,
                      created);
}

rl_status_t tw_partitions_upkeep(rl_pg_t *pg, int days_ahead, int retention_days, int *created,
                                 int *dropped)
{
    char ahead[12], keep[12];
    snprintf(ahead, sizeof ahead, "%d", days_ahead + 2);
    snprintf(keep, sizeof keep, "%d", retention_days);
    /* UTC days, whatever the session's TimeZone: partitions are UTC days */
    const char *v1[] = {ahead};
    rl_status_t st = scalar_int(
        pg,
        "SELECT renlayer.ensure_trace_partitions((now() AT TIME ZONE 'UTC')::date - 1, $1::int)", 1,
        v1, created);
    if (st != RL_OK)
        return st;
    const char *v2[] = {keep};
    return scalar_int(
        pg,
        "SELECT renlayer.drop_trace_partitions_before((now() AT TIME ZONE 'UTC')::date - $1::int)",
        1, v2, dropped);
}

/* ---- the upkeep thread ------------------------------------------------------------------------
 */

struct tw_upkeep {
    rl_pg_t *pg;
    int days_ahead, retention_days;
    long interval_ms;
    rl_counter_t *created, *dropped, *failures;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stopping;
};

/* Waits ms or until stopped; true when stopping. */
static bool pause_ms(tw_upkeep_t *u, long ms)
{
    struct timespec until = rl_cond_deadline(ms);
    pthread_mutex_lock(&u->lock);
    while (!u->stopping && pthread_cond_timedwait(&u->wake, &u->lock, &until) == 0)
        ;
    bool stop = u->stopping;
    pthread_mutex_unlock(&u->lock);
    return stop;
}

static void *upkeep_main(void *arg)
{
    tw_upkeep_t *u = arg;
    long retry_ms = 1000;
    for (;;) {
        int created = 0, dropped = 0;
        rl_status_t st =
            tw_partitions_upkeep(u->pg, u->days_ahead, u->retention_days, &created, &dropped);
        long wait = u->interval_ms;
        if (st == RL_OK) {
            rl_counter_add(u->created, (uint64_t)created);
            rl_counter_add(u->dropped, (uint64_t)dropped);
            rl_log(created || dropped ? RL_LOG_INFO : RL_LOG_DEBUG, "partition upkeep",
                   "{s:i,s:i,s:i,s:i}", "created", created, "dropped", dropped, "days_ahead",
                   u->days_ahead, "retention_days", u->retention_days);
            retry_ms = 1000;
        } else {
            rl_counter_add(u->failures, 1);
            rl_log(RL_LOG_WARN, "partition upkeep failed", "{s:s,s:s,s:i}", "status",
                   rl_status_str(st), "detail", rl_error_last(), "retry_ms", (int)retry_ms);
            wait = retry_ms < wait ? retry_ms : wait;
            retry_ms = retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : retry_ms * 2;
        }
        if (pause_ms(u, wait))
            return NULL;
    }
}

rl_status_t tw_upkeep_start(const tw_upkeep_options_t *o, tw_upkeep_t **out)
{
    if (!o || !o->database_url || o->interval_ms <= 0 || o->days_ahead < 0 ||
        o->retention_days < 1 || !out)
        return rl_error(RL_ERR_INVALID, "tw_upkeep_start: bad options");
    tw_upkeep_t *u = calloc(1, sizeof *u);
    if (!u)
        return rl_error(RL_ERR_NOMEM, "tw_upkeep_start");
    rl_pg_options_t po = {.application_name = o->application_name,
                          .query_timeout_ms = QUERY_TIMEOUT_MS};
    rl_status_t st = rl_pg_create(o->database_url, &po, &u->pg);
    if (st != RL_OK) {
        free(u);
        return st;
    }
    u->days_ahead = o->days_ahead;
    u->retention_days = o->retention_days;
    u->interval_ms = o->interval_ms;
    if (o->metrics) {
        rl_metrics_counter(o->metrics, "renlayer_trace_writer_partitions_created_total",
                           "Daily partitions created by this process's upkeep", NULL, &u->created);
        rl_metrics_counter(o->metrics, "renlayer_trace_writer_partitions_dropped_total",
                           "Daily partitions dropped past retention by this process's upkeep", NULL,
                           &u->dropped);
        rl_metrics_counter(o->metrics, "renlayer_trace_writer_upkeep_failures_total",
                           "Partition upkeep runs that failed (retried)", NULL, &u->failures);
    }
    pthread_mutex_init(&u->lock, NULL);
    rl_cond_init(&u->wake);
    if (pthread_create(&u->thread, NULL, upkeep_main, u) != 0) {
        pthread_cond_destroy(&u->wake);
        pthread_mutex_destroy(&u->lock);
        rl_pg_destroy(u->pg);
        free(u);
        return rl_error(RL_ERR_IO, "tw_upkeep_start: thread");
    }
    *out = u;
    return RL_OK;
}

void tw_upkeep_stop(tw_upkeep_t *u)
{
    if (!u)
        return;
    pthread_mutex_lock(&u->lock);
    u->stopping = true;
    pthread_cond_broadcast(&u->wake);
    pthread_mutex_unlock(&u->lock);
    pthread_join(u->thread, NULL);
    pthread_cond_destroy(&u->wake);
    pthread_mutex_destroy(&u->lock);
    rl_pg_destroy(u->pg);
    free(u);
}
