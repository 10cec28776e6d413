#include "rl_http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "rl_buf.h"
#include "rl_json.h"
#include "rl_log.h"
#include "rl_net.h"
#include "rl_uuid.h"

#define MAX_PARAMS 8
#define MAX_RESP_HEADERS 16
#define MAX_PATH 2048

struct rl_http_server {
    struct MHD_Daemon *daemon;
    rl_http_options_t opts;
    unsigned port;
    rl_counter_t *body_too_large;
    rl_histogram_t *duration;
    pthread_mutex_t metrics_lock; /* guards lazy registration of per-status counters */
};

typedef struct {
    char *name;
    char *value;
} header_t;

struct rl_http_request {
    rl_http_server_t *srv;
    struct MHD_Connection *conn;
    const char *method; /* borrowed from MHD, valid for the connection's request */
    char path[MAX_PATH];
    char request_id[64];
    char client_addr[INET6_ADDRSTRLEN];
    rl_buf_t body;
    bool body_too_large;
    json_t *json;
    char param_names[MAX_PARAMS][32];
    char *param_values[MAX_PARAMS];
    size_t nparams;
    char *path_copy; /* owns the storage param_values point into */
    header_t headers[MAX_RESP_HEADERS];
    size_t nheaders;
    unsigned status; /* 0 until a response is queued */
    const char *route; /* matched pattern, for metrics and logs */
    struct timespec started;
};

/* ---- request accessors ---------------------------------------------------------------- */

const char *rl_http_method(const rl_http_request_t *req)
{
    return req->method;
}

const char *rl_http_path(const rl_http_request_t *req)
{
    return req->path;
}

const char *rl_http_request_id(const rl_http_request_t *req)
{
    return req->request_id;
}

const char *rl_http_client_addr(const rl_http_request_t *req)
{
    return req->client_addr;
}

const char *rl_http_param(const rl_http_request_t *req, const char *name)
{
    for (size_t i = 0; i < req->nparams; i++) {
        if (strcmp(req->param_names[i], name) == 0)
            return req->param_values[i];
    }
    return NULL;
}

const char *rl_http_query(const rl_http_request_t *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *rl_http_header(const rl_http_request_t *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *rl_http_body(const rl_http_request_t *req, size_t *len)
{
    if (len)
        *len = req->body.len;
    return req->body.data ? req->body.data : "";
}

json_t *rl_http_json_body(rl_http_request_t *req)
{
    if (req->json)
        return req->json;
    rl_status_t st = rl_json_parse_object(req->body.data ? req->body.data : "", req->body.len,
                                          req->body.max, &req->json);
    if (st == RL_ERR_TOO_LARGE) {
        rl_http_respond_error(req, 413, "body_too_large", rl_error_last(), NULL);
        return NULL;
    }
    if (st != RL_OK) {
        char msg[600];
        const char *why = rl_error_last();
        const char *colon = strstr(why, ": ");
        snprintf(msg, sizeof msg, "request body is not a valid JSON object: %s",
                 colon ? colon + 2 : why);
        rl_http_respond_error(req, 400, "invalid_json", msg, NULL);
        return NULL;
    }
    return req->json;
}

/* ---- responses ------------------------------------------------------------------------ */

void rl_http_set_header(rl_http_request_t *req, const char *name, const char *value)
{
    if (req->nheaders >= MAX_RESP_HEADERS)
        return;
    char *n = strdup(name), *v = strdup(value);
    if (n == NULL || v == NULL) {
        free(n);
        free(v);
        return;
    }
    req->headers[req->nheaders++] = (header_t){n, v};
}

static bool has_response_header(const rl_http_request_t *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++) {
        if (strcasecmp(req->headers[i].name, name) == 0)
            return true;
    }
    return false;
}

void rl_http_respond(rl_http_request_t *req, unsigned status, const char *content_type,
                     const void *body, size_t len)
{
    if (req->status != 0) {
        rl_log(RL_LOG_ERROR, "second response ignored", "{s:s,s:s,s:i}", "request_id",
               req->request_id, "path", req->path, "status", (int)status);
        return;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (resp == NULL)
        return;
    if (content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(resp, "X-Request-Id", req->request_id);
    if (!has_response_header(req, "Cache-Control"))
        MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    for (size_t i = 0; i < req->nheaders; i++)
        MHD_add_response_header(resp, req->headers[i].name, req->headers[i].value);
    if (MHD_queue_response(req->conn, status, resp) == MHD_YES)
        req->status = status;
    MHD_destroy_response(resp);
}

void rl_http_respond_json(rl_http_request_t *req, unsigned status, json_t *body)
{
    if (body == NULL) {
        rl_http_respond(req, status, NULL, "", 0);
        return;
    }
    char *text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    json_decref(body);
    if (text == NULL) {
        rl_http_respond(req, 500, "application/json",
                        "{\"error\":{\"code\":\"internal\",\"message\":\"encoding failed\"}}", 58);
        return;
    }
    rl_http_respond(req, status, "application/json", text, strlen(text));
    free(text);
}

void rl_http_respond_error(rl_http_request_t *req, unsigned status, const char *code,
                           const char *message, json_t *fields)
{
    json_t *err = json_pack("{s:s,s:s,s:s}", "code", code, "message", message ? message : code,
                            "request_id", req->request_id);
    if (err && fields)
        json_object_set(err, "fields", fields);
    json_decref(fields);
    rl_http_respond_json(req, status, json_pack("{s:o*}", "error", err));
}

/* ---- routing -------------------------------------------------------------------------- */

/* Splits a path ("/a/b") in place into its segments; false when it does not
 * start with '/' or has more than max segments. */
static bool split_path(char *s, char **segs, size_t max, size_t *n)
{
    *n = 0;
    if (*s != '/')
        return false;
    while (*s == '/') {
        if (*n >= max)
            return false;
        *s++ = '\0';
        segs[(*n)++] = s;
        s += strcspn(s, "/");
    }
    return true;
}

/* Matches req->path against pattern segment by segment; on a match fills the
 * request's parameters (values point into req->path_copy). */
static bool route_matches(rl_http_request_t *req, const char *pattern)
{
    char pat[256];
    char *psegs[16], *qsegs[16];
    size_t np, nq;
    if (snprintf(pat, sizeof pat, "%s", pattern) >= (int)sizeof pat)
        return false;
    free(req->path_copy);
    req->path_copy = strdup(req->path);
    req->nparams = 0;
    if (req->path_copy == NULL || !split_path(req->path_copy, psegs, 16, &np) ||
        !split_path(pat, qsegs, 16, &nq) || np != nq)
        return false;
    for (size_t i = 0; i < nq; i++) {
        size_t ql = strlen(qsegs[i]);
        if (ql > 2 && qsegs[i][0] == '{' && qsegs[i][ql - 1] == '}') {
            if (psegs[i][0] == '\0' || req->nparams >= MAX_PARAMS)
                return false;
            snprintf(req->param_names[req->nparams], sizeof req->param_names[0], "%.*s",
                     (int)(ql - 2), qsegs[i] + 1);
            req->param_values[req->nparams++] = psegs[i];
        } else if (strcmp(qsegs[i], psegs[i]) != 0) {
            return false;
        }
    }
    return true;
}

static const rl_http_route_t *find_route(rl_http_request_t *req, bool *method_mismatch)
{
    *method_mismatch = false;
    const rl_http_route_t *found = NULL;
    for (size_t i = 0; i < req->srv->opts.nroutes && found == NULL; i++) {
        const rl_http_route_t *r = &req->srv->opts.routes[i];
        if (!route_matches(req, r->pattern))
            continue;
        if (strcmp(r->method, req->method) == 0)
            found = r;
        else
            *method_mismatch = true;
    }
    return found; /* the last match computed was found's: its parameters are set */
}

/* ---- built-in endpoints --------------------------------------------------------------- */

static void serve_healthz(rl_http_request_t *req)
{
    rl_http_respond_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

static void serve_readyz(rl_http_request_t *req)
{
    json_t *checks = json_object();
    bool ready = true;
    if (req->srv->opts.ready)
        ready = req->srv->opts.ready(req->srv->opts.ready_ctx, checks);
    rl_http_respond_json(req, ready ? 200 : 503,
                         json_pack("{s:s,s:o}", "status", ready ? "ready" : "not_ready", "checks",
                                   checks));
}

static void serve_metrics(rl_http_request_t *req)
{
    char *text = NULL;
    size_t len = 0;
    if (rl_metrics_render(req->srv->opts.metrics, &text, &len) != RL_OK) {
        rl_http_respond_error(req, 500, "internal", "metrics rendering failed", NULL);
        return;
    }
    rl_http_respond(req, 200, "text/plain; version=0.0.4", text, len);
    free(text);
}

static void dispatch(rl_http_request_t *req)
{
    const char *m = req->method;
    if (strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0) {
        if (strcmp(req->path, "/healthz") == 0)
            return (void)(req->route = "/healthz", serve_healthz(req));
        if (strcmp(req->path, "/readyz") == 0)
            return (void)(req->route = "/readyz", serve_readyz(req));
        if (strcmp(req->path, "/metrics") == 0)
            return (void)(req->route = "/metrics", serve_metrics(req));
    }
    if (req->body_too_large) {
        char msg[128];
        snprintf(msg, sizeof msg, "request body exceeds the limit of %zu bytes", req->body.max);
        rl_http_respond_error(req, 413, "body_too_large", msg, NULL);
        return;
    }
    bool method_mismatch;
    const rl_http_route_t *r = find_route(req, &method_mismatch);
    if (r == NULL) {
        req->nparams = 0;
        if (method_mismatch)
            rl_http_respond_error(req, 405, "method_not_allowed", "method not allowed on this path", NULL);
        else
            rl_http_respond_error(req, 404, "not_found", "no such route", NULL);
        return;
    }
    req->route = r->pattern;
    r->handler(req, req->srv->opts.ctx);
    if (req->status == 0) {
        rl_log(RL_LOG_ERROR, "handler sent no response", "{s:s,s:s}", "route", r->pattern,
               "request_id", req->request_id);
        rl_http_respond_error(req, 500, "internal", "internal error", NULL);
    }
}

/* ---- MHD glue ------------------------------------------------------------------------- */

static bool valid_request_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

static rl_http_request_t *request_new(rl_http_server_t *srv, struct MHD_Connection *conn,
                                      const char *url, const char *method)
{
    rl_http_request_t *req = calloc(1, sizeof *req);
    if (req == NULL)
        return NULL;
    req->srv = srv;
    req->conn = conn;
    req->method = method;
    clock_gettime(CLOCK_MONOTONIC, &req->started);
    snprintf(req->path, sizeof req->path, "%s", url);
    rl_buf_init(&req->body, srv->opts.max_body);
    const char *rid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
    if (rid && valid_request_id(rid)) {
        snprintf(req->request_id, sizeof req->request_id, "%s", rid);
    } else {
        rl_uuid_t id;
        rl_uuid_v7(&id);
        rl_uuid_format(&id, req->request_id);
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, req->client_addr,
                      sizeof req->client_addr);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, req->client_addr,
                      sizeof req->client_addr);
    }
    return req;
}

static void request_free(rl_http_request_t *req)
{
    rl_buf_free(&req->body);
    json_decref(req->json);
    free(req->path_copy);
    for (size_t i = 0; i < req->nheaders; i++) {
        free(req->headers[i].name);
        free(req->headers[i].value);
    }
    free(req);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    rl_http_server_t *srv = cls;
    rl_http_request_t *req = *con_cls;
    if (req == NULL) {
        req = request_new(srv, conn, url, method);
        if (req == NULL)
            return MHD_NO;
        *con_cls = req;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            char *end;
            unsigned long long n = strtoull(cl, &end, 10);
            if (*end == '\0' && n > srv->opts.max_body)
                req->body_too_large = true;
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        if (!req->body_too_large &&
            rl_buf_append(&req->body, upload_data, *upload_data_size) != RL_OK)
            req->body_too_large = true;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (req->status == 0)
        dispatch(req);
    return MHD_YES;
}

static rl_counter_t *status_counter(rl_http_server_t *srv, unsigned status)
{
    char labels[32];
    snprintf(labels, sizeof labels, "code=\"%u\"", status);
    rl_counter_t *c = NULL;
    pthread_mutex_lock(&srv->metrics_lock);
    rl_metrics_counter(srv->opts.metrics, "http_requests_total", "HTTP requests by status code",
                       labels, &c);
    pthread_mutex_unlock(&srv->metrics_lock);
    return c;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    rl_http_server_t *srv = cls;
    rl_http_request_t *req = *con_cls;
    if (req == NULL)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double secs = (double)(now.tv_sec - req->started.tv_sec) +
                  (double)(now.tv_nsec - req->started.tv_nsec) / 1e9;
    rl_counter_t *c = status_counter(srv, req->status);
    if (c)
        rl_counter_add(c, 1);
    if (srv->duration)
        rl_histogram_observe(srv->duration, secs);
    if (req->body_too_large && srv->body_too_large)
        rl_counter_add(srv->body_too_large, 1);
    bool probe = req->route && (strcmp(req->route, "/healthz") == 0 ||
                                strcmp(req->route, "/readyz") == 0 ||
                                strcmp(req->route, "/metrics") == 0);
    rl_log(probe ? RL_LOG_DEBUG : RL_LOG_INFO, "http request",
           "{s:s,s:s,s:s,s:i,s:f,s:s,s:s,s:b}", "request_id", req->request_id, "method",
           req->method, "path", req->path, "status", (int)req->status, "duration_ms",
           secs * 1000.0, "route", req->route ? req->route : "", "client", req->client_addr,
           "completed", toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
    request_free(req);
    *con_cls = NULL;
}

/* What MHD reports about the API's connections is worth a warning. */
static rl_log_level_t warn_level = RL_LOG_WARN;

void rl_http_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = '\0';
    rl_log(*(const rl_log_level_t *)cls, "http server", "{s:s}", "detail", msg);
}

rl_status_t rl_http_server_start(const rl_http_options_t *opts, rl_http_server_t **out)
{
    if (opts == NULL || opts->metrics == NULL || opts->listen_addr == NULL)
        return rl_error(RL_ERR_INVALID, "http server needs a listen address and a metrics registry");
    struct sockaddr_storage ss;
    rl_status_t st = rl_net_parse_listen(opts->listen_addr, &ss);
    if (st != RL_OK)
        return st;
    rl_http_server_t *srv = calloc(1, sizeof *srv);
    if (srv == NULL)
        return rl_error(RL_ERR_NOMEM, "http server");
    srv->opts = *opts;
    if (srv->opts.max_body == 0)
        srv->opts.max_body = 1024 * 1024;
    if (srv->opts.threads == 0)
        srv->opts.threads = 4;
    if (srv->opts.connection_limit == 0)
        srv->opts.connection_limit = 1024;
    pthread_mutex_init(&srv->metrics_lock, NULL);
    rl_metrics_histogram(opts->metrics, "http_request_duration_seconds",
                         "Time from request start to response completion", NULL,
                         RL_BUCKETS_LATENCY_SECONDS, RL_BUCKETS_LATENCY_SECONDS_N,
                         &srv->duration);
    rl_metrics_counter(opts->metrics, "http_body_too_large_total",
                       "Requests refused because their body exceeded the limit", NULL,
                       &srv->body_too_large);

    srv->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL,
        on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, rl_http_mhd_log, &warn_level,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)srv->opts.threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)srv->opts.connection_limit,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)60, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, srv,
        MHD_OPTION_END);
    if (srv->daemon == NULL) {
        pthread_mutex_destroy(&srv->metrics_lock);
        free(srv);
        return rl_error(RL_ERR_IO, "cannot listen on %s", opts->listen_addr);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = di ? di->port : 0;
    *out = srv;
    return RL_OK;
}

unsigned rl_http_server_port(const rl_http_server_t *srv)
{
    return srv->port;
}

void rl_http_server_stop(rl_http_server_t *srv)
{
    if (srv == NULL)
        return;
    MHD_stop_daemon(srv->daemon);
    pthread_mutex_destroy(&srv->metrics_lock);
    free(srv);
}
