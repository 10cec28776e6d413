/* rl_http: the HTTP server every service but the proxy's data path uses,
 * over libmicrohttpd with an internal thread pool.
 *
 * A service passes a route table; rl_http reads the body (bounded), matches
 * the route ("/v1/agents/{id}/keys"), calls the handler on a pool thread and
 * sends exactly one response. It also serves /healthz, /readyz and /metrics,
 * gives each request an id (X-Request-Id, echoed), writes one access-log line
 * per request and counts requests and latency in the service's registry.
 *
 * Handlers run synchronously and may block (database calls); they must call
 * one rl_http_respond*() before returning, or rl_http answers 500. */
#ifndef RL_HTTP_H
#define RL_HTTP_H

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "rl_metrics.h"
#include "rl_status.h"

typedef struct rl_http_server rl_http_server_t;
typedef struct rl_http_request rl_http_request_t;

/* A route handler; ctx is rl_http_options_t.ctx. */
typedef void (*rl_http_handler_fn)(rl_http_request_t *req, void *ctx);

typedef struct {
    const char *method;  /* "GET", "POST", ... */
    const char *pattern; /* "/v1/agents/{id}": {name} matches one non-empty segment */
    rl_http_handler_fn handler;
} rl_http_route_t;

/* Readiness probe: returns true when the service can do its work, and adds
 * one "name": "up"|"down" entry per dependency to checks (an object). Called
 * on a pool thread for every /readyz: keep it cheap (read cached state). */
typedef bool (*rl_http_ready_fn)(void *ctx, json_t *checks);

typedef struct {
    const char *service;            /* name used in logs and metrics */
    const char *listen_addr;        /* "127.0.0.1:8080"; port 0 picks a free one */
    const rl_http_route_t *routes;  /* borrowed for the server's life */
    size_t nroutes;
    rl_http_ready_fn ready;         /* NULL: always ready */
    void *ready_ctx;                /* passed to ready */
    void *ctx;                      /* passed to handlers */
    rl_metrics_t *metrics;          /* borrowed; required (served on /metrics) */
    size_t max_body;                /* bytes; 0 means 1 MiB. Larger bodies get 413 */
    unsigned threads;               /* pool size; 0 means 4 */
    unsigned connection_limit;      /* 0 means 1024 */
} rl_http_options_t;

/* Binds and starts serving. On success *out is owned (stop with
 * rl_http_server_stop); on failure nothing is left running. RL_ERR_IO when
 * the address cannot be bound, RL_ERR_INVALID for a bad listen_addr. */
rl_status_t rl_http_server_start(const rl_http_options_t *opts, rl_http_server_t **out);

/* The bound TCP port (useful with port 0). */
unsigned rl_http_server_port(const rl_http_server_t *srv);

/* Stops accepting, waits for handlers in flight to finish, frees. NULL ok. */
void rl_http_server_stop(rl_http_server_t *srv);

/* A libmicrohttpd MHD_OPTION_EXTERNAL_LOGGER callback: one rl_log line
 * ("http server", {"detail"}) at the level *(const rl_log_level_t *)cls.
 * For every MHD daemon in the project, rl_http's own and the proxy's. */
void rl_http_mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* Request accessors. Returned strings are borrowed and valid until the
 * handler returns. */
const char *rl_http_method(const rl_http_request_t *req);
const char *rl_http_path(const rl_http_request_t *req);
const char *rl_http_request_id(const rl_http_request_t *req);
const char *rl_http_client_addr(const rl_http_request_t *req);
/* Path parameter by name ("id" for {id}); NULL when the route has none. */
const char *rl_http_param(const rl_http_request_t *req, const char *name);
/* Query argument (decoded) or request header (case-insensitive); NULL if absent. */
const char *rl_http_query(const rl_http_request_t *req, const char *name);
const char *rl_http_header(const rl_http_request_t *req, const char *name);
/* The raw body (NUL-terminated for convenience) and its length. */
const char *rl_http_body(const rl_http_request_t *req, size_t *len);

/* Parses the body as a JSON object. On failure it has already answered 400
 * (or 413) with a uniform error and returns NULL; the handler just returns.
 * The object is owned by the request (do not decref). */
json_t *rl_http_json_body(rl_http_request_t *req);

/* Adds a response header (copied). Call before responding. */
void rl_http_set_header(rl_http_request_t *req, const char *name, const char *value);

/* Sends body with the given status and content type (copied). */
void rl_http_respond(rl_http_request_t *req, unsigned status, const char *content_type,
                     const void *body, size_t len);

/* Sends a JSON value (takes ownership of body; NULL sends no body). */
void rl_http_respond_json(rl_http_request_t *req, unsigned status, json_t *body);

/* Sends {"error":{"code","message","fields"?,"request_id"}} (takes ownership
 * of fields, an object mapping field names to messages, or NULL). */
void rl_http_respond_error(rl_http_request_t *req, unsigned status, const char *code,
                           const char *message, json_t *fields);

#endif
