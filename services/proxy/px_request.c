/* One request's life on its worker: read the body, resolve key -> agent ->
 * tenant -> gate, classify, publish the decision, hand over to the upstream
 * (px_upstream.c), send the response, publish the trace once it is sent.
 *
 * The pipeline's policy stages slot in at px_request_run: limits (request
 * path step 4), policies (5) and DLP on the request (6) each get one call
 * there, between classification and the decision. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "px_decode.h"
#include "px_internal.h"
#include "rl_apikey.h"
#include "rl_log.h"
#include "rl_uuid.h"

#define OUT_MAX (64u << 20)         /* a whole (not streamed) response held for the client */
#define TRACE_BODY_COPY (16u << 10) /* response bytes kept for the trace */
#define SESSION_ID_MAX 256

/* Requests are recycled per worker. A px_request_t is 22 KB, most of it
 * arrays their counts govern (tool calls, attempts, findings); zeroing all
 * of it with calloc on every request showed in profiles. Cleared here:
 * everything but info's arrays. */
#define POOL_MAX 64
/* A recycled request keeps buffers up to this size (the next request's
 * body, response and trace copies then need no malloc). */
#define POOL_KEEP_BUF (16 * 1024)

/* The request's buffers: recycled with it, not cleared. */
#define REQUEST_BUFS(req) \
    {&(req)->body, &(req)->rewritten, &(req)->out, &(req)->resp_copy, &(req)->trace_req, \
     &(req)->resp_header_text}

static void request_bufs_free(px_request_t *req)
{
    rl_buf_t *bufs[] = REQUEST_BUFS(req);
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        rl_buf_free(bufs[i]);
}

static void request_clear(px_request_t *req, bool recycled)
{
    rl_buf_t *bufs[] = REQUEST_BUFS(req);
    rl_buf_t kept[sizeof bufs / sizeof bufs[0]];
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        kept[i] = *bufs[i];
    memset(req, 0, offsetof(px_request_t, info));
    size_t after = offsetof(px_request_t, info) + sizeof req->info;
    memset((char *)req + after, 0, sizeof *req - after);
    px_request_info_reset(&req->info);
    if (recycled) /* emptied and given their limits by px_request_free */
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            *bufs[i] = kept[i];
}

void px_request_pool_free(px_worker_t *w)
{
    while (w->free_requests) {
        px_request_t *next = w->free_requests->next_free;
        request_bufs_free(w->free_requests);
        free(w->free_requests);
        w->free_requests = next;
    }
    w->nfree_requests = 0;
}

px_request_t *px_request_new(px_worker_t *w, const char *uri)
{
    px_request_t *req = w->free_requests;
    bool recycled = req != NULL;
    if (recycled) {
        w->free_requests = req->next_free;
        w->nfree_requests--;
    } else {
        req = malloc(sizeof *req);
        if (req == NULL)
            return NULL;
    }
    request_clear(req, recycled); /* a new request's buffers are zeroed: empty */
    req->uri = strdup(uri ? uri : "/");
    if (req->uri == NULL) {
        request_bufs_free(req);
        free(req);
        return NULL;
    }
    req->worker = w;
    req->t_arrive_us = px_now_us();
    req->t_arrive_wall_us = px_wall_us();
    size_t max_body = w->engine->opts.max_body;
    req->body.max = max_body;
    req->rewritten.max = max_body + 64 * 1024;
    req->out.max = OUT_MAX;
    req->resp_copy.max = TRACE_BODY_COPY;
    req->trace_req.max = max_body + 64 * 1024;
    req->resp_header_text.max = 64 * 1024;
    rl_uuid_t id;
    rl_uuid_v7(&id);
    rl_uuid_format(&id, req->trace_id);
    req->status = PX_STATUS_ALLOWED;
    w->in_flight++;
    rl_gauge_add(w->engine->m.in_flight, 1);
    return req;
}

void px_request_free(px_request_t *req)
{
    px_upstream_cancel(req);
    px_response_destroy(req->parser);
    px_guard_free(req);
    curl_slist_free_all(req->upstream_headers);
    px_snapshot_release(req->snap);
    px_worker_t *w = req->worker;
    bool pooled = w->nfree_requests < POOL_MAX;
    rl_buf_t *bufs[] = REQUEST_BUFS(req);
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        if (pooled)
            rl_buf_recycle(bufs[i], POOL_KEEP_BUF, bufs[i]->max);
        else
            rl_buf_free(bufs[i]);
    }
    w->in_flight--;
    rl_gauge_add(w->engine->m.in_flight, -1);
    free(req->uri);
    free(req->query_owned);
    if (pooled) {
        req->next_free = w->free_requests;
        w->free_requests = req;
        w->nfree_requests++;
    } else {
        free(req);
    }
}

/* ---- responses ------------------------------------------------------------------------- */

static void add_common_headers(px_request_t *req, struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "X-RenLayer-Trace-Id", req->trace_id);
}

static void queue(px_request_t *req, int status, struct MHD_Response *resp)
{
    add_common_headers(req, resp);
    MHD_queue_response(req->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    req->http_status = status;
    req->state = PX_RS_RESPONDING;
}

/* The protocol a request speaks before its gate is known: by path. */
static px_proto_t guess_proto(const char *path)
{
    const char *m = strstr(path, "/v1/messages");
    return m ? PX_PROTO_ANTHROPIC : PX_PROTO_OPENAI;
}

void px_request_respond_error(px_request_t *req, int http_status, const char *code,
                              const char *message)
{
    px_worker_t *w = req->worker;
    const char *ctype = "application/json";
    rl_buf_reset(&w->scratch);
    px_protocol_error(req->agent ? req->proto : guess_proto(req->path ? req->path : req->uri),
                      http_status, code, message, req->status ? req->status : "ERROR",
                      req->trace_id, req->mcp_id[0] ? req->mcp_id : NULL, &w->scratch, &ctype);
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        w->scratch.len, w->scratch.data ? w->scratch.data : "", MHD_RESPMEM_MUST_COPY);
    if (resp == NULL)
        return;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (http_status == 429 || http_status == 503)
        MHD_add_response_header(resp, "Retry-After", "1");
    if (req->error == NULL)
        req->error = code;
    queue(req, http_status, resp);
}

static void respond_text(px_request_t *req, int status, const char *ctype, const char *body,
                         size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (resp == NULL)
        return;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    queue(req, status, resp);
}

/* /healthz, /readyz, /metrics on the data port. True when answered. */
static bool serve_builtin(px_request_t *req)
{
    if (strcmp(req->method, "GET") != 0)
        return false;
    const px_engine_options_t *o = &req->worker->engine->opts;
    if (strcmp(req->path, "/healthz") == 0) {
        respond_text(req, 200, "application/json", "{\"status\":\"ok\"}", 15);
        return true;
    }
    if (strcmp(req->path, "/readyz") == 0) {
        /* Ready means able to serve: a loaded configuration. The database
         * and the bus are reported, but their loss only degrades the proxy
         * (fail open on cached config, traces spooled), so a load balancer
         * must not take every proxy out of service when PostgreSQL or NATS
         * restarts. */
        json_t *checks = json_object();
        bool deps = rl_service_readiness(o->service, checks);
        bool loaded = px_cache_loaded(o->cache);
        json_object_set_new(checks, "config", json_string(loaded ? "up" : "down"));
        json_t *body = json_pack("{s:s,s:b,s:o}", "status", loaded ? "ready" : "not_ready",
                                 "degraded", loaded && !deps, "checks", checks);
        char *text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(body);
        respond_text(req, loaded ? 200 : 503, "application/json", text ? text : "{}",
                     text ? strlen(text) : 2);
        free(text);
        return true;
    }
    if (strcmp(req->path, "/metrics") == 0) {
        char *text = NULL;
        size_t len = 0;
        if (rl_metrics_render(o->metrics, &text, &len) != RL_OK)
            return false;
        respond_text(req, 200, "text/plain; version=0.0.4", text, len);
        free(text);
        return true;
    }
    return false;
}

/* ---- resolution ------------------------------------------------------------------------ */

static const char *header(px_request_t *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

/* The agent's RenLayer key: Authorization: Bearer (OpenAI SDKs, Anthropic SDK
 * 1.x) or x-api-key (older Anthropic SDKs). */
static const char *presented_key(px_request_t *req)
{
    const char *auth = header(req, "Authorization");
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        auth += 7;
        while (*auth == ' ')
            auth++;
        return auth;
    }
    return header(req, "x-api-key");
}

static bool authenticate(px_request_t *req)
{
    px_engine_t *e = req->worker->engine;
    const char *key = presented_key(req);
    if (key == NULL || *key == '\0') {
        px_request_respond_error(req, 401, "missing_api_key",
                                 "No RenLayer API key: send it as Authorization: Bearer <key> "
                                 "or x-api-key.");
        return false;
    }
    req->snap = px_snapshot_retain(req->worker->snap);
    if (req->snap == NULL) {
        px_request_respond_error(req, 503, "not_ready",
                                 "The proxy has not loaded its configuration yet.");
        return false;
    }
    const px_key_t *k = NULL;
    if (rl_apikey_well_formed(RL_APIKEY_AGENT, key)) {
        uint8_t hash[RL_APIKEY_HASH_LEN];
        if (rl_apikey_hash_with(req->worker->key_hasher, key, hash) == RL_OK)
            k = px_snapshot_find_key(req->snap, hash);
    }
    if (k && k->expires_at_ms > 0 && k->expires_at_ms <= px_wall_us() / 1000)
        k = NULL;
    if (k == NULL) {
        px_request_respond_error(req, 401, "invalid_api_key",
                                 "Invalid, expired or revoked RenLayer API key.");
        return false;
    }
    req->key = k;
    req->agent = k->agent;
    if (req->agent->tenant->fail_closed && !px_cache_db_up(e->opts.cache)) {
        px_request_respond_error(req, 503, "config_unavailable",
                                 "The RenLayer database is unreachable and this tenant fails "
                                 "closed; try again shortly.");
        return false;
    }
    return true;
}

/* Gate by X-RenLayer-Gate / X-Layer-Gate-Id, or by a /gates/<name>/ path
 * prefix (clients that cannot add headers), else the agent's default. */
static bool select_gate(px_request_t *req)
{
    const char *name = header(req, "X-RenLayer-Gate");
    if (name == NULL)
        name = header(req, "X-Layer-Gate-Id");
    char from_path[PX_NAME_MAX];
    if (name == NULL && strncmp(req->path, "/gates/", 7) == 0) {
        const char *start = req->path + 7;
        const char *slash = strchr(start, '/');
        size_t n = slash ? (size_t)(slash - start) : strlen(start);
        if (n > 0 && n < sizeof from_path) {
            memcpy(from_path, start, n);
            from_path[n] = '\0';
            name = from_path;
            req->path = slash ? slash : "/";
        }
    }
    req->gate = name ? px_snapshot_find_gate(req->agent, name) : req->agent->default_gate;
    if (req->gate == NULL) {
        char msg[320];
        if (name)
            snprintf(msg, sizeof msg, "This agent has no gate named '%.200s'.", name);
        else
            snprintf(msg, sizeof msg, "This agent has no default gate; name one with X-RenLayer-Gate.");
        req->proto = guess_proto(req->path);
        px_request_respond_error(req, 404, "gate_not_found", msg);
        return false;
    }
    req->proto = px_protocol_of(req->gate->kind, req->path);
    return true;
}

static bool read_context(px_request_t *req)
{
    req->user = header(req, "X-RenLayer-User");
    req->session = header(req, "X-RenLayer-Session");
    if (req->session == NULL)
        req->session = header(req, "X-Layer-Session-Id");
    if (req->session && strlen(req->session) > SESSION_ID_MAX) {
        px_request_respond_error(req, 400, "invalid_session",
                                 "X-RenLayer-Session is longer than 256 characters.");
        return false;
    }
    return true;
}

/* Answers a request whose body could not be read (decoded, parsed, prepared):
 * 400 for a body that is not what it says, 413 past a limit, 500 otherwise. */
static void respond_body_error(px_request_t *req, rl_status_t st, const char *msg)
{
    if (st == RL_ERR_INVALID)
        px_request_respond_error(req, 400, "invalid_request", msg);
    else if (st == RL_ERR_TOO_LARGE)
        px_request_respond_error(req, 413, "request_too_large", msg);
    else
        px_request_respond_error(req, 500, "internal_error", msg);
}

/* A body the agent compressed is decoded before anything reads it (px_decode.h):
 * the upstream gets the decoded body, without Content-Encoding. */
static bool decode_body(px_request_t *req)
{
    const char *encoding = header(req, "Content-Encoding");
    if (!px_decode_needed(encoding))
        return true;
    rl_buf_t decoded;
    rl_buf_init(&decoded, req->body.max);
    rl_status_t st = px_decode_body(encoding, req->body.data, req->body.len, &decoded);
    if (st == RL_OK) {
        rl_buf_move(&req->body, &decoded);
        return true;
    }
    char msg[400];
    snprintf(msg, sizeof msg, "The request body could not be decoded: %.300s", rl_error_message());
    rl_buf_free(&decoded);
    rl_log(RL_LOG_WARN, "request body not decoded", "{s:s,s:s,s:s}", "trace_id", req->trace_id,
           "content_encoding", encoding, "detail", rl_error_last());
    if (st == RL_ERR_NOT_FOUND)
        px_request_respond_error(req, 415, "unsupported_content_encoding", msg);
    else
        respond_body_error(req, st, msg);
    return false;
}

static bool classify(px_request_t *req)
{
    size_t len = req->body.len;
    rl_status_t st = px_protocol_prepare(req->method, req->path, req->body.data, len, req->gate,
                                         req->gate->kind, &req->info, &req->rewritten);
    snprintf(req->mcp_id, sizeof req->mcp_id, "%s", req->info.mcp_id);
    req->prepared_for = req->gate;
    if (st == RL_OK)
        return true;
    char msg[300] = "The request could not be prepared for the upstream.";
    if (st == RL_ERR_INVALID)
        snprintf(msg, sizeof msg, "The request body is not valid: %.200s", rl_error_message());
    respond_body_error(req, st, msg);
    return false;
}

/* Builds the attempt chain from the gate's strategy. */
static void plan_attempts(px_request_t *req)
{
    const px_gate_t *g = req->gate;
    int max = req->worker->engine->opts.max_attempts;
    if (max < 1)
        max = 1;
    if (max > PX_MAX_ATTEMPTS)
        max = PX_MAX_ATTEMPTS;
    const px_gate_t *ring[PX_MAX_ATTEMPTS + 1];
    size_t n = 0;
    ring[n++] = g;
    for (size_t i = 0; i < g->nfallbacks && n < PX_MAX_ATTEMPTS; i++)
        ring[n++] = g->fallbacks[i];
    size_t start = 0;
    if (g->strategy == PX_STRATEGY_ROUND_ROBIN && n > 1)
        start = atomic_fetch_add(&req->worker->engine->rr_counter, 1) % n;
    size_t limit = g->strategy == PX_STRATEGY_SINGLE ? 1 : n;
    if ((size_t)max < limit)
        limit = (size_t)max;
    req->nchain = 0;
    for (size_t i = 0; i < limit; i++)
        req->chain[req->nchain++] = ring[(start + i) % n];
}


/* The pipeline once the body is in. Answers, or suspends the connection with
 * an upstream attempt under way. */
static enum MHD_Result run(px_request_t *req)
{
    char *q = strchr(req->uri, '?');
    if (q) {
        *q = '\0';
        req->query = q + 1;
    } else {
        req->query = "";
    }
    req->path = req->uri;
    if (serve_builtin(req))
        return MHD_YES;
    if (req->body_too_large) {
        char msg[128];
        snprintf(msg, sizeof msg, "The request body exceeds the limit of %zu bytes.",
                 req->worker->engine->opts.max_body);
        px_request_respond_error(req, 413, "request_too_large", msg);
        return MHD_YES;
    }
    if (!authenticate(req) || !select_gate(req) || !read_context(req) || !decode_body(req) ||
        !classify(req))
        return MHD_YES;
    /* Request path step 4 goes here: rate limits and the session gate.
     * Steps 5-6, policies and DLP on the request, are one call: the scan runs
     * first because policies may test its detectors (px_guard.c). */
    req->status = PX_STATUS_ALLOWED;
    if (!px_guard_request(req))
        return MHD_YES;
    if (req->worker->engine->opts.decisions_for_allowed)
        px_request_publish_decision(req);
    plan_attempts(req);
    req->state = PX_RS_UPSTREAM;
    MHD_suspend_connection(req->conn);
    req->suspended = true;
    if (px_upstream_start(req) != RL_OK) {
        /* nothing in flight: answer now */
        px_worker_resume(req);
        req->response_ready = true;
    }
    return MHD_YES;
}

/* ---- MHD access handler ---------------------------------------------------------------- */

static ssize_t read_stream(void *cls, uint64_t pos, char *buf, size_t max);

static void queue_upstream_response(px_request_t *req)
{
    if (req->up_status == 0) {
        /* every attempt failed before a response */
        bool timeout = req->up_result == CURLE_OPERATION_TIMEDOUT;
        char msg[400];
        snprintf(msg, sizeof msg, "The upstream %s: %.300s",
                 timeout ? "did not answer in time" : "could not be reached",
                 req->up_error[0] ? req->up_error : curl_easy_strerror(req->up_result));
        req->error = timeout ? "upstream_timeout" : "upstream_unreachable";
        px_request_respond_error(req, timeout ? 504 : 502, req->error, msg);
        return;
    }
    struct MHD_Response *resp;
    if (req->up_sse) {
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 32 * 1024, read_stream, req,
                                                 NULL);
    } else {
        resp = MHD_create_response_from_buffer(req->out.len, req->out.data ? req->out.data : "",
                                               MHD_RESPMEM_MUST_COPY);
    }
    if (resp == NULL)
        return;
    for (size_t i = 0; i < req->nresp_headers; i++)
        MHD_add_response_header(resp, px_resp_header_name(req, i), px_resp_header_value(req, i));
    queue(req, req->up_status, resp);
}

enum MHD_Result px_request_handle(px_request_t *req, struct MHD_Connection *conn,
                                  const char *method, const char *upload, size_t *upload_size)
{
    if (req->conn == NULL) {
        req->conn = conn;
        snprintf(req->method, sizeof req->method, "%s", method);
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            char *end;
            unsigned long long n = strtoull(cl, &end, 10);
            if (*end == '\0' && n > req->worker->engine->opts.max_body)
                req->body_too_large = true;
        }
        return MHD_YES;
    }
    switch (req->state) {
    case PX_RS_READING:
        if (*upload_size > 0) {
            if (!req->body_too_large && rl_buf_append(&req->body, upload, *upload_size) != RL_OK)
                req->body_too_large = true;
            *upload_size = 0;
            return MHD_YES;
        }
        return run(req);
    case PX_RS_UPSTREAM:
        if (*upload_size > 0) {
            *upload_size = 0; /* a body after we answered (413): drop it */
            return MHD_YES;
        }
        if (req->response_ready) {
            req->response_ready = false;
            queue_upstream_response(req);
        }
        return MHD_YES;
    case PX_RS_RESPONDING:
    case PX_RS_DONE:
        *upload_size = 0;
        return MHD_YES;
    }
    return MHD_YES;
}

/* Streams what the upstream has sent; suspends the connection while there is
 * nothing new, and lets a paused upstream go on once the backlog drains. */
static ssize_t read_stream(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    px_request_t *req = cls;
    size_t avail = req->out.len - req->out_sent;
    if (avail > 0) {
        size_t n = avail < max ? avail : max;
        memcpy(buf, req->out.data + req->out_sent, n);
        req->out_sent += n;
        if (req->out_sent == req->out.len) {
            rl_buf_reset(&req->out);
            req->out_sent = 0;
        }
        if (req->paused && req->out.len - req->out_sent < (256u << 10)) {
            req->paused = false;
            curl_easy_pause(req->easy, CURLPAUSE_CONT);
        }
        return (ssize_t)n;
    }
    if (req->up_done)
        return req->up_failed ? MHD_CONTENT_READER_END_WITH_ERROR
                              : MHD_CONTENT_READER_END_OF_STREAM;
    MHD_suspend_connection(req->conn);
    req->suspended = true;
    return 0;
}

/* ---- traces ----------------------------------------------------------------------------- */

static void fill_trace(px_request_t *req, px_trace_t *t)
{
    memset(t, 0, sizeof *t);
    snprintf(t->trace_id, sizeof t->trace_id, "%s", req->trace_id);
    snprintf(t->tenant_id, sizeof t->tenant_id, "%s", req->agent->tenant->id);
    snprintf(t->agent_id, sizeof t->agent_id, "%s", req->agent->id);
    if (req->gate)
        snprintf(t->gate_id, sizeof t->gate_id, "%s", req->gate->id);
    snprintf(t->api_key_id, sizeof t->api_key_id, "%s", req->key->id);
    t->user = req->user;
    t->session_id = req->session;
    t->action = req->info.action;
    t->method = req->method;
    t->path = req->path;
    const char *model = req->info.model;
    if (model[0] == '\0' && req->parser)
        model = px_response_model(req->parser);
    snprintf(t->model, sizeof t->model, "%s", model);
    t->upstream = req->upstream_base[0] ? req->upstream_base : NULL;
    t->status = req->status;
    if (req->policy_id && t->npolicy_ids < PX_MAX_POLICY_IDS)
        t->policy_ids[t->npolicy_ids++] = req->policy_id;
    memcpy(t->findings, req->findings, req->nfindings * sizeof req->findings[0]);
    t->nfindings = req->nfindings;
    t->reason = req->reason[0] ? req->reason : NULL;
    t->http_status = req->http_status;
    t->stream = req->info.stream;
    t->error = req->error;
    t->started_at_us = req->t_arrive_wall_us;
    t->tool_calls = req->info.tool_calls;
    t->ntool_calls = req->info.ntool_calls;
    memcpy(t->attempts, req->attempts, sizeof t->attempts);
    t->nattempts = req->nattempts;
    /* no detected value reaches a trace: with findings, the copies with every
     * finding redacted (empty when that was not possible) */
    const rl_buf_t *fwd = req->trace_req_redacted ? &req->trace_req
                          : req->rewritten.len   ? &req->rewritten
                                                 : &req->body;
    t->request_body = fwd->data;
    t->request_body_len = fwd->len;
    bool drop_resp = req->resp_findings && req->up_sse; /* a stream's copy is not redacted */
    t->response_body = drop_resp ? NULL : req->resp_copy.data;
    t->response_body_len = drop_resp ? 0 : req->resp_copy.len;
}

void px_request_publish_decision(px_request_t *req)
{
    px_trace_t t;
    fill_trace(req, &t);
    t.http_status = 0;
    t.ended_at_us = px_wall_us();
    px_publisher_decision(req->worker->engine->opts.publisher, &t);
    req->decision_published = true;
}

/* Merges the tool calls the agent sent (request) and the model asked for
 * (response) into one list for the trace. */
static size_t merge_tool_calls(px_request_t *req, px_tool_call_t *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < req->info.ntool_calls && n < cap; i++)
        out[n++] = req->info.tool_calls[i];
    if (req->parser) {
        const px_tool_call_t *calls = NULL;
        size_t m = px_response_tool_calls(req->parser, &calls);
        for (size_t i = 0; i < m && n < cap; i++)
            out[n++] = calls[i];
    }
    return n;
}

static void publish_trace(px_request_t *req, int64_t now_us)
{
    px_engine_t *e = req->worker->engine;
    px_trace_t t;
    fill_trace(req, &t);
    px_tool_call_t calls[PX_MAX_TOOL_CALLS * 2 + 1];
    t.ntool_calls = merge_tool_calls(req, calls, sizeof calls / sizeof calls[0]);
    t.tool_calls = calls;
    if (req->parser)
        px_response_usage(req->parser, &t.usage);
    const px_price_t *price = t.model[0] && req->snap
                                  ? px_snapshot_price(req->snap, t.tenant_id, t.model)
                                  : NULL;
    t.cost_usd = price ? px_price_cost(price, &t.usage) : -1; /* unpriced: null */
    t.ended_at_us = px_wall_us();
    t.latency_ms = (double)(now_us - req->t_arrive_us) / 1000.0;
    t.upstream_ms = req->upstream_ms_total;
    int64_t total_us = now_us - req->t_arrive_us;
    t.overhead_us = total_us - (int64_t)(req->upstream_ms_total * 1000.0);
    if (t.overhead_us < 0)
        t.overhead_us = 0;
    px_publisher_trace(e->opts.publisher, &t);
    rl_histogram_observe(e->m.overhead_us, (double)t.overhead_us);
}

void px_request_completed(px_request_t *req, enum MHD_RequestTerminationCode toe)
{
    px_engine_t *e = req->worker->engine;
    int64_t now = px_now_us();
    bool aborted = toe != MHD_REQUEST_TERMINATED_COMPLETED_OK;
    if (aborted && req->easy) {
        rl_counter_add(e->m.client_aborts, 1);
        if (req->error == NULL)
            req->error = "client_disconnected";
    }
    px_upstream_cancel(req); /* a client that left cancels its upstream transfer */
    if (req->http_status)
        px_engine_count_status(e, req->http_status);
    if (req->agent && req->key)
        publish_trace(req, now);
    req->state = PX_RS_DONE;
    px_request_free(req);
}
