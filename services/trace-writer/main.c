/* renlayer-trace-writer: persists the traces and decisions of the bus to
 * PostgreSQL (docs/trace-writer.md). Two durable pull consumers, one per
 * stream, each on its own thread with its own connection (tw_consumer), and
 * the daily partition upkeep (tw_partitions), inside the service frame of
 * rl_service: configuration, logging, /healthz, /readyz, /metrics, SIGTERM. */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "rl_service.h"
#include "tw_consumer.h"
#include "tw_partitions.h"

typedef struct {
    long retention_days, days_ahead, batch_size, batch_wait_ms, ack_wait_ms, max_ack_pending;
    long upkeep_interval_s, drain_ms;
} settings_t;

/* What the readiness monitor looks at while main starts and stops the consumers. */
typedef struct {
    pthread_mutex_t lock;
    tw_consumer_t *consumers[2];
} app_t;

static bool consumers_bound(rl_service_t *svc, void *ctx)
{
    (void)svc;
    app_t *app = ctx;
    pthread_mutex_lock(&app->lock);
    bool ok = tw_consumer_bound(app->consumers[0]) && tw_consumer_bound(app->consumers[1]);
    pthread_mutex_unlock(&app->lock);
    return ok;
}

int main(int argc, char **argv)
{
    settings_t set = {0};
    const rl_config_option_t options[] = {
        {"RENLAYER_TRACE_RETENTION_DAYS", RL_CFG_INT, "30", false,
         "days of traces kept; older daily partitions are dropped", 1, 3650, NULL,
         &set.retention_days},
        {"RENLAYER_TRACE_PARTITION_DAYS_AHEAD", RL_CFG_INT, "7", false,
         "daily partitions created ahead of today", 1, 365, NULL, &set.days_ahead},
        {"RENLAYER_TRACE_BATCH_SIZE", RL_CFG_INT, "1000", false,
         "most messages written per transaction", 1, 10000, NULL, &set.batch_size},
        {"RENLAYER_TRACE_BATCH_WAIT_MS", RL_CFG_INT, "100", false,
         "when a stream had nothing, look again after this long (a quiet-time message waits "
         "at most this long to be fetched)",
         1, 10000, NULL, &set.batch_wait_ms},
        {"RENLAYER_TRACE_ACK_WAIT_MS", RL_CFG_INT, "30000", false,
         "AckWait of the durable consumers: an unacked message is redelivered after it", 1000,
         3600000, NULL, &set.ack_wait_ms},
        {"RENLAYER_TRACE_MAX_ACK_PENDING", RL_CFG_INT, "20000", false,
         "MaxAckPending of the durable consumers (shared by every replica)", 1, 1000000, NULL,
         &set.max_ack_pending},
        {"RENLAYER_TRACE_UPKEEP_INTERVAL_S", RL_CFG_INT, "3600", false,
         "seconds between partition upkeep runs (create ahead, drop past retention)", 1, 86400,
         NULL, &set.upkeep_interval_s},
        {"RENLAYER_TRACE_DRAIN_MS", RL_CFG_INT, "8000", false,
         "on SIGTERM, how long the batch in hand may still be retried", 0, 600000, NULL,
         &set.drain_ms},
    };
    app_t app = {.consumers = {NULL, NULL}};
    pthread_mutex_init(&app.lock, NULL);
    const rl_service_spec_t spec = {
        .name = "trace-writer",
        .default_listen_addr = "127.0.0.1:8082",
        .uses_db = true,
        .uses_bus = true,
        .options = options,
        .noptions = sizeof options / sizeof *options,
        .extra_check_name = "consumers",
        .extra_check = consumers_bound,
        .extra_check_ctx = &app,
    };
    rl_service_t *svc = NULL;
    rl_status_t st = rl_service_start(&spec, argc, argv, &svc);
    if (st == RL_ERR_NOT_FOUND)
        return EXIT_SUCCESS; /* --help-config */
    if (st != RL_OK)
        return EXIT_FAILURE;
    if (set.max_ack_pending < set.batch_size)
        set.max_ack_pending = set.batch_size;

    const char *db = rl_service_database_url(svc);
    rl_metrics_t *metrics = rl_service_metrics(svc);
    tw_upkeep_options_t uo = {.database_url = db,
                              .application_name = "renlayer-trace-writer",
                              .days_ahead = (int)set.days_ahead,
                              .retention_days = (int)set.retention_days,
                              .interval_ms = set.upkeep_interval_s * 1000,
                              .metrics = metrics};
    tw_upkeep_t *upkeep = NULL;
    st = tw_upkeep_start(&uo, &upkeep);
    for (int k = 0; st == RL_OK && k < 2; k++) {
        tw_consumer_options_t co = {.bus = rl_service_bus(svc),
                                    .kind = k == 0 ? TW_KIND_TRACE : TW_KIND_DECISION,
                                    .database_url = db,
                                    .application_name = "renlayer-trace-writer",
                                    .metrics = metrics,
                                    .batch_size = (int)set.batch_size,
                                    .batch_wait_ms = set.batch_wait_ms,
                                    .ack_wait_ms = set.ack_wait_ms,
                                    .max_ack_pending = set.max_ack_pending,
                                    .retention_days = (int)set.retention_days,
                                    .drain_ms = set.drain_ms};
        tw_consumer_t *c = NULL;
        st = tw_consumer_start(&co, &c);
        pthread_mutex_lock(&app.lock);
        app.consumers[k] = c;
        pthread_mutex_unlock(&app.lock);
    }
    if (st != RL_OK)
        rl_log(RL_LOG_ERROR, "cannot start the writer", "{s:s,s:s}", "status", rl_status_str(st),
               "detail", rl_error_last());
    else
        rl_service_run(svc);

    /* both finish their batch in hand at once, then go */
    tw_consumer_stop(app.consumers[0]);
    tw_consumer_stop(app.consumers[1]);
    pthread_mutex_lock(&app.lock);
    tw_consumer_t *c0 = app.consumers[0], *c1 = app.consumers[1];
    app.consumers[0] = app.consumers[1] = NULL;
    pthread_mutex_unlock(&app.lock);
    tw_consumer_destroy(c0);
    tw_consumer_destroy(c1);
    tw_upkeep_stop(upkeep);
    rl_service_stop(svc);
    pthread_mutex_destroy(&app.lock);
    return st == RL_OK ? EXIT_SUCCESS : EXIT_FAILURE;
}
