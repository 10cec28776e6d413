#include "rl_service.h"
#include "rl_cond.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_OPTIONS 64

struct rl_service {
    rl_service_spec_t spec;
    char name[64];

    /* common settings */
    rl_log_level_t log_level;
    const char *listen_addr;
    const char *database_url;
    const char *nats_url;
    long check_interval_ms;

    rl_metrics_t *metrics;
    rl_gauge_t *db_gauge, *bus_gauge, *extra_gauge;
    rl_pg_t *health_db;
    rl_bus_t *bus;
    rl_http_server_t *http;

    _Atomic bool db_up, extra_up, stopping;
    pthread_t monitor;
    bool monitor_started;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    sigset_t signals;
};

static bool dependencies_ready(void *ctx, json_t *checks)
{
    rl_service_t *svc = ctx;
    bool ok = true;
    if (svc->spec.uses_db) {
        bool up = atomic_load(&svc->db_up);
        json_object_set_new(checks, "database", json_string(up ? "up" : "down"));
        ok = ok && up;
    }
    if (svc->spec.uses_bus) {
        bool up = rl_bus_is_ready(svc->bus);
        json_object_set_new(checks, "bus", json_string(up ? "up" : "down"));
        ok = ok && up;
    }
    if (svc->spec.extra_check) {
        bool up = atomic_load(&svc->extra_up);
        json_object_set_new(checks, svc->spec.extra_check_name ? svc->spec.extra_check_name : "service",
                            json_string(up ? "up" : "down"));
        ok = ok && up;
    }
    return ok;
}

bool rl_service_readiness(rl_service_t *svc, json_t *checks)
{
    return dependencies_ready(svc, checks);
}

const char *rl_service_listen_addr(rl_service_t *svc)
{
    return svc->listen_addr;
}

bool rl_service_ready(rl_service_t *svc)
{
    json_t *checks = json_object();
    bool ok = dependencies_ready(svc, checks);
    json_decref(checks);
    return ok;
}

static void note_change(rl_service_t *svc, const char *dependency, bool was, bool now)
{
    if (was == now)
        return;
    if (now)
        rl_log(RL_LOG_INFO, "dependency up", "{s:s}", "dependency", dependency);
    else
        rl_log(RL_LOG_WARN, "dependency down", "{s:s,s:s}", "dependency", dependency, "detail",
               rl_error_last());
    (void)svc;
}

/* Checks the dependencies every check_interval_ms, reconnecting the database
 * as needed, and records the results for /readyz and /metrics. */
static void *monitor_main(void *arg)
{
    rl_service_t *svc = arg;
    pthread_setname_np(pthread_self(), "rl-monitor");
    bool bus_was = false;
    while (!atomic_load(&svc->stopping)) {
        if (svc->spec.uses_db) {
            bool was = atomic_load(&svc->db_up);
            bool now = rl_pg_ping(svc->health_db, (int)svc->check_interval_ms) == RL_OK;
            atomic_store(&svc->db_up, now);
            note_change(svc, "database", was, now);
            rl_gauge_set(svc->db_gauge, now ? 1 : 0);
        }
        if (svc->spec.uses_bus) {
            bool now = rl_bus_is_ready(svc->bus);
            note_change(svc, "bus", bus_was, now);
            bus_was = now;
            rl_gauge_set(svc->bus_gauge, now ? 1 : 0);
        }
        if (svc->spec.extra_check) {
            bool was = atomic_load(&svc->extra_up);
            bool now = svc->spec.extra_check(svc, svc->spec.extra_check_ctx);
            atomic_store(&svc->extra_up, now);
            note_change(svc, svc->spec.extra_check_name ? svc->spec.extra_check_name : "service", was,
                        now);
            rl_gauge_set(svc->extra_gauge, now ? 1 : 0);
        }
        struct timespec until = rl_cond_deadline(svc->check_interval_ms);
        pthread_mutex_lock(&svc->lock);
        if (!atomic_load(&svc->stopping))
            pthread_cond_timedwait(&svc->wake, &svc->lock, &until);
        pthread_mutex_unlock(&svc->lock);
    }
    return NULL;
}

static void on_bus_state(rl_bus_t *bus, bool connected, void *ctx)
{
    (void)bus;
    rl_service_t *svc = ctx;
    rl_log(connected ? RL_LOG_INFO : RL_LOG_WARN, connected ? "bus connected" : "bus disconnected",
           "{s:s}", "url", svc->nats_url);
}

static void on_bus_topology(rl_bus_t *bus, rl_status_t st, const char *detail, void *ctx)
{
    (void)bus;
    (void)ctx;
    if (st == RL_OK)
        rl_log(RL_LOG_INFO, "bus streams ready", NULL);
    else
        rl_log(RL_LOG_WARN, "bus streams not ready", "{s:s,s:s}", "status", rl_status_str(st),
               "detail", detail);
}

static void on_bus_ack_failure(rl_bus_t *bus, const rl_bus_nack_t *nack, void *ctx)
{
    rl_service_t *svc = ctx;
    if (svc->spec.bus_ack_failure)
        svc->spec.bus_ack_failure(bus, nack, svc->spec.bus_ack_ctx);
}

static void add_gauge(rl_service_t *svc, const char *dependency, rl_gauge_t **out)
{
    char labels[96];
    snprintf(labels, sizeof labels, "dependency=\"%s\"", dependency);
    rl_metrics_gauge(svc->metrics, "renlayer_dependency_up",
                     "1 when the dependency answers, 0 when it does not", labels, out);
}

/* Loads the common settings and the service's own in one table, so one run
 * reports every bad variable. Returns false when the process should exit. */
static rl_status_t load_config(rl_service_t *svc, int argc, char **argv)
{
    rl_config_option_t opts[MAX_OPTIONS] = {
        {"RENLAYER_LOG_LEVEL", RL_CFG_LOGLEVEL, "info", false,
         "error, warn, info, debug or trace", 0, 0, NULL, &svc->log_level},
        {"RENLAYER_LISTEN_ADDR", RL_CFG_ADDR, svc->spec.default_listen_addr, true,
         "host:port of the service's HTTP listener (health, metrics, API)", 0, 0, NULL,
         &svc->listen_addr},
        {"RENLAYER_DATABASE_URL", RL_CFG_URL, NULL, svc->spec.uses_db,
         "PostgreSQL connection URL", 0, 0, "postgres,postgresql", &svc->database_url},
        {"RENLAYER_NATS_URL", RL_CFG_URL, "nats://127.0.0.1:4222", false,
         "NATS server URL(s), comma-separated", 0, 0, "nats,tls", &svc->nats_url},
        {"RENLAYER_HEALTH_INTERVAL_MS", RL_CFG_INT, "1000", false,
         "how often dependencies are checked for /readyz", 50, 60000, NULL,
         &svc->check_interval_ms},
    };
    size_t n = 5;
    for (size_t i = 0; i < svc->spec.noptions && n < MAX_OPTIONS; i++)
        opts[n++] = svc->spec.options[i];

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help-config") == 0) {
            rl_config_print_table(opts, n, stdout);
            return RL_ERR_NOT_FOUND;
        }
    }
    char errors[4096];
    if (rl_config_load(opts, n, errors, sizeof errors) != RL_OK) {
        fprintf(stderr, "renlayer-%s: invalid configuration:\n%s\n", svc->spec.name, errors);
        return RL_ERR_INVALID;
    }
    return RL_OK;
}

static rl_status_t start_dependencies(rl_service_t *svc)
{
    if (svc->spec.uses_db) {
        rl_pg_options_t pgo = {.application_name = svc->name};
        rl_status_t st = rl_pg_create(svc->database_url, &pgo, &svc->health_db);
        if (st != RL_OK)
            return st;
        add_gauge(svc, "database", &svc->db_gauge);
    }
    if (svc->spec.uses_bus) {
        rl_bus_options_t bo = {
            .url = svc->nats_url,
            .name = svc->name,
            .ensure_topology = true,
            .on_state = on_bus_state,
            .on_topology = on_bus_topology,
            .on_ack_failure = on_bus_ack_failure,
            .ctx = svc,
        };
        rl_status_t st = rl_bus_create(&bo, &svc->bus);
        if (st != RL_OK)
            return st;
        add_gauge(svc, "bus", &svc->bus_gauge);
    }
    if (svc->spec.extra_check)
        add_gauge(svc, svc->spec.extra_check_name ? svc->spec.extra_check_name : "service",
                  &svc->extra_gauge);
    return RL_OK;
}

/* Logs why the startup stopped, undoes it and returns st. */
static rl_status_t startup_failed(rl_service_t *svc, rl_status_t st)
{
    rl_log(RL_LOG_ERROR, "startup failed", "{s:s,s:s}", "status", rl_status_str(st), "detail",
           rl_error_last());
    rl_service_stop(svc);
    return st;
}

rl_status_t rl_service_start(const rl_service_spec_t *spec, int argc, char **argv,
                             rl_service_t **out)
{
    rl_service_t *svc = calloc(1, sizeof *svc);
    if (svc == NULL)
        return rl_error(RL_ERR_NOMEM, "service");
    svc->spec = *spec;
    snprintf(svc->name, sizeof svc->name, "renlayer-%s", spec->name);
    pthread_mutex_init(&svc->lock, NULL);
    rl_cond_init(&svc->wake);

    /* Before any thread exists: route SIGTERM/SIGINT to rl_service_run only,
     * and never die of a peer closing a socket. */
    sigemptyset(&svc->signals);
    sigaddset(&svc->signals, SIGTERM);
    sigaddset(&svc->signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &svc->signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    rl_status_t st = load_config(svc, argc, argv);
    if (st != RL_OK) {
        rl_service_stop(svc);
        return st;
    }
    rl_log_init(svc->name, svc->log_level);

    st = rl_metrics_create(&svc->metrics);
    if (st == RL_OK)
        st = start_dependencies(svc);
    if (st != RL_OK)
        return startup_failed(svc, st);
    if (pthread_create(&svc->monitor, NULL, monitor_main, svc) != 0) {
        rl_service_stop(svc);
        return rl_error(RL_ERR_IO, "monitor thread");
    }
    svc->monitor_started = true;
    if (spec->before_serve && (st = spec->before_serve(svc, spec->ctx)) != RL_OK)
        return startup_failed(svc, st);
    if (spec->own_listener) {
        *out = svc;
        return RL_OK;
    }

    rl_http_options_t ho = {
        .service = svc->name,
        .listen_addr = svc->listen_addr,
        .routes = spec->routes,
        .nroutes = spec->nroutes,
        .ready = dependencies_ready,
        .ready_ctx = svc,
        .ctx = spec->ctx,
        .metrics = svc->metrics,
        .max_body = spec->max_body,
        .threads = spec->http_threads,
    };
    st = rl_http_server_start(&ho, &svc->http);
    if (st != RL_OK) {
        rl_log(RL_LOG_ERROR, "cannot listen", "{s:s,s:s}", "addr", svc->listen_addr, "detail",
               rl_error_last());
        rl_service_stop(svc);
        return st;
    }
    rl_log(RL_LOG_INFO, "listening", "{s:s,s:i}", "addr", svc->listen_addr, "port",
           (int)rl_http_server_port(svc->http));
    *out = svc;
    return RL_OK;
}

void rl_service_run(rl_service_t *svc)
{
    for (;;) {
        int sig = 0;
        if (sigwait(&svc->signals, &sig) == 0 && (sig == SIGTERM || sig == SIGINT)) {
            rl_log(RL_LOG_INFO, "shutting down", "{s:s}", "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            return;
        }
    }
}

void rl_service_shutdown(rl_service_t *svc)
{
    (void)svc;
    kill(getpid(), SIGTERM);
}

void rl_service_quiesce(rl_service_t *svc)
{
    if (svc == NULL)
        return;
    rl_http_server_stop(svc->http);
    svc->http = NULL;
    pthread_mutex_lock(&svc->lock);
    atomic_store(&svc->stopping, true);
    pthread_cond_broadcast(&svc->wake);
    pthread_mutex_unlock(&svc->lock);
    if (svc->monitor_started)
        pthread_join(svc->monitor, NULL);
    svc->monitor_started = false;
}

void rl_service_stop(rl_service_t *svc)
{
    if (svc == NULL)
        return;
    rl_service_quiesce(svc);
    rl_bus_destroy(svc->bus);
    rl_pg_destroy(svc->health_db);
    rl_metrics_destroy(svc->metrics);
    pthread_cond_destroy(&svc->wake);
    pthread_mutex_destroy(&svc->lock);
    free(svc);
}

rl_metrics_t *rl_service_metrics(rl_service_t *svc)
{
    return svc->metrics;
}

rl_bus_t *rl_service_bus(rl_service_t *svc)
{
    return svc->bus;
}

const char *rl_service_database_url(rl_service_t *svc)
{
    return svc->spec.uses_db ? svc->database_url : NULL;
}

const char *rl_service_nats_url(rl_service_t *svc)
{
    return svc->nats_url;
}

unsigned rl_service_port(rl_service_t *svc)
{
    return svc->http ? rl_http_server_port(svc->http) : 0;
}

bool rl_service_db_up(rl_service_t *svc)
{
    return atomic_load(&svc->db_up);
}
