/* rl_service: what every RenLayer binary does around its own work.
 *
 * rl_service_start() reads the common settings (and the service's own) from
 * the environment, starts JSON logging, connects to PostgreSQL and NATS in
 * the background (retrying forever while they are down), and serves
 * /healthz, /readyz (503 while a dependency is down) and /metrics plus the
 * service's routes. rl_service_run() blocks until SIGTERM or SIGINT;
 * rl_service_stop() drains and frees everything.
 *
 * Call rl_service_start() before creating any thread: it blocks SIGTERM and
 * SIGINT in the calling thread so every later thread inherits the mask and
 * only rl_service_run() receives them. */
#ifndef RL_SERVICE_H
#define RL_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rl_bus.h"
#include "rl_config.h"
#include "rl_http.h"
#include "rl_log.h"
#include "rl_metrics.h"
#include "rl_pg.h"

typedef struct rl_service rl_service_t;

/* A dependency check of the service's own, run by the readiness monitor:
 * returns true when healthy. Runs on the monitor thread. */
typedef bool (*rl_service_check_fn)(rl_service_t *svc, void *ctx);

typedef struct {
    const char *name;                  /* "api": logs, metrics, client names */
    const char *default_listen_addr;   /* "127.0.0.1:8081" */
    bool uses_db;                      /* connect to RENLAYER_DATABASE_URL */
    bool uses_bus;                     /* connect to RENLAYER_NATS_URL and ensure streams */
    const rl_config_option_t *options; /* the service's own settings; borrowed */
    size_t noptions;
    const rl_http_route_t *routes;     /* the service's routes; borrowed */
    size_t nroutes;
    void *ctx;                         /* passed to route handlers */
    size_t max_body;                   /* 0: 1 MiB */
    unsigned http_threads;             /* 0: 4 */
    bool own_listener;                 /* the service serves HTTP itself (the proxy): no
                                          rl_http server; it serves rl_service_readiness()
                                          and rl_metrics_render() on its own port */
    rl_bus_ack_failure_cb bus_ack_failure; /* optional: JetStream publishes never acked */
    void *bus_ack_ctx;                 /* passed to bus_ack_failure */
    const char *extra_check_name;      /* optional further readiness check */
    rl_service_check_fn extra_check;
    void *extra_check_ctx;
    /* optional: runs once the settings are read and the dependencies are
     * started, before the HTTP server takes its first request; what the
     * route handlers need (a connection pool) is made here. An error stops
     * the startup (rl_service_start returns it). */
    rl_status_t (*before_serve)(rl_service_t *svc, void *ctx);
} rl_service_spec_t;

/* Reads the configuration (printing every problem to stderr), starts logging,
 * the dependencies and the HTTP server. Handles `--help-config` (prints the
 * settings table and returns RL_ERR_NOT_FOUND so main exits 0).
 * On success *out is owned (rl_service_stop). RL_ERR_INVALID for bad settings,
 * RL_ERR_IO when the listen address cannot be bound. */
rl_status_t rl_service_start(const rl_service_spec_t *spec, int argc, char **argv,
                             rl_service_t **out);

/* Blocks until SIGTERM or SIGINT, then returns (the caller stops its own work
 * and calls rl_service_stop). */
void rl_service_run(rl_service_t *svc);

/* Asks rl_service_run() to return, from any thread. */
void rl_service_shutdown(rl_service_t *svc);

/* Stops the HTTP server (waiting for requests in flight) and the readiness
 * monitor: no route handler and no extra_check runs after it returns. The
 * bus, the metrics registry and the other accessors stay valid, so the
 * service can stop its own threads (which count into the registry) before
 * rl_service_stop frees them. Optional; NULL ok; idempotent. */
void rl_service_quiesce(rl_service_t *svc);

/* Quiesces if not yet done, then flushes and closes the bus (pending
 * publishes), the database connection and frees the metrics registry:
 * every thread that borrowed one of them must be stopped first. NULL ok. */
void rl_service_stop(rl_service_t *svc);

/* Borrowed accessors, valid until rl_service_stop(). */
rl_metrics_t *rl_service_metrics(rl_service_t *svc);
rl_bus_t *rl_service_bus(rl_service_t *svc);         /* NULL unless uses_bus */
const char *rl_service_database_url(rl_service_t *svc); /* NULL unless uses_db */
const char *rl_service_nats_url(rl_service_t *svc);
unsigned rl_service_port(rl_service_t *svc);

/* The configured RENLAYER_LISTEN_ADDR (borrowed). */
const char *rl_service_listen_addr(rl_service_t *svc);

/* Readiness as /readyz reports it: true when ready; one "name": "up"|"down"
 * entry per dependency added to checks. Cheap (cached state). */
bool rl_service_readiness(rl_service_t *svc, json_t *checks);

/* Latest readiness of each dependency, as seen by the monitor. */
bool rl_service_db_up(rl_service_t *svc);
bool rl_service_ready(rl_service_t *svc);

#endif
