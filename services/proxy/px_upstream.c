/* A request's upstream attempts on its worker's curl multi: the upstream
 * URL and headers (the agent's RenLayer key and X-RenLayer-* / X-Layer-*
 * headers consumed, the gate's injected headers added), streaming the
 * answer into the request's out buffer through the protocol parser, and
 * falling back along the gate's chain on connect errors, timeouts, 429 and
 * 5xx with a bounded backoff — while nothing has reached the client yet. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "px_internal.h"
#include "rl_log.h"

#define STREAM_BACKLOG_MAX (1u << 20) /* pause the upstream past this unsent backlog */

/* Request headers never forwarded: hop-by-hop ones, those curl sets itself,
 * the agent's RenLayer key, and RenLayer's own. */
static bool consumed_request_header(const char *name)
{
    static const char *const drop[] = {
        "host", "connection", "keep-alive", "proxy-connection", "proxy-authorization",
        "proxy-authenticate", "te", "trailer", "transfer-encoding", "upgrade", "content-length",
        "authorization", "x-api-key", "accept-encoding", "expect",
        "content-encoding", /* the body is decoded before it is read (px_decode.h) */
        NULL};
    for (size_t i = 0; drop[i]; i++) {
        if (strcasecmp(name, drop[i]) == 0)
            return true;
    }
    return strncasecmp(name, "x-renlayer-", 11) == 0 || strncasecmp(name, "x-layer-", 8) == 0;
}

/* Response headers never passed back: hop-by-hop, and those that no longer
 * hold once curl has decoded the body (length, encoding). */
static bool dropped_response_header(const char *name, size_t n)
{
    static const char *const drop[] = {"connection", "keep-alive", "transfer-encoding",
                                       "content-length", "content-encoding", "te", "trailer",
                                       "upgrade", "proxy-connection", NULL};
    for (size_t i = 0; drop[i]; i++) {
        if (strlen(drop[i]) == n && strncasecmp(name, drop[i], n) == 0)
            return true;
    }
    return false;
}

typedef struct {
    struct curl_slist *list;
    const px_gate_t *gate;
    bool failed;
} header_walk_t;

static bool injected(const px_gate_t *g, const char *name)
{
    for (size_t i = 0; i < g->nheaders; i++) {
        if (strcasecmp(g->headers[i].name, name) == 0)
            return true;
    }
    return false;
}

static enum MHD_Result add_client_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                         const char *value)
{
    (void)kind;
    header_walk_t *hw = cls;
    if (consumed_request_header(key) || injected(hw->gate, key))
        return MHD_YES;
    char line[8192];
    int n = snprintf(line, sizeof line, "%s: %s", key, value ? value : "");
    if (n < 0 || (size_t)n >= sizeof line)
        return MHD_YES; /* longer than MHD's own header limit allows anyway */
    struct curl_slist *next = curl_slist_append(hw->list, line);
    if (next == NULL) {
        hw->failed = true;
        return MHD_NO;
    }
    hw->list = next;
    return MHD_YES;
}

static struct curl_slist *build_headers(px_request_t *req, const px_gate_t *g)
{
    header_walk_t hw = {.gate = g};
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, add_client_header, &hw);
    for (size_t i = 0; i < g->nheaders && !hw.failed; i++) {
        size_t need = strlen(g->headers[i].name) + strlen(g->headers[i].value) + 3;
        char *line = malloc(need);
        if (line == NULL) {
            hw.failed = true;
            break;
        }
        snprintf(line, need, "%s: %s", g->headers[i].name, g->headers[i].value);
        struct curl_slist *next = curl_slist_append(hw.list, line);
        free(line);
        if (next == NULL)
            hw.failed = true;
        else
            hw.list = next;
    }
    struct curl_slist *next = hw.failed ? NULL : curl_slist_append(hw.list, "Expect:");
    if (next == NULL) {
        curl_slist_free_all(hw.list);
        return NULL;
    }
    return next;
}

static const char *base_url(px_request_t *req, const px_gate_t *g)
{
    const px_engine_options_t *o = &req->worker->engine->opts;
    if (g->upstream_url)
        return g->upstream_url;
    if (o->default_upstream && *o->default_upstream)
        return o->default_upstream;
    if (g->kind == PX_KIND_OPENAI)
        return o->openai_url;
    if (g->kind == PX_KIND_ANTHROPIC)
        return o->anthropic_url;
    return NULL;
}

/* ---- curl callbacks -------------------------------------------------------------------- */

bool px_resp_header_add(px_request_t *req, const char *name, size_t nlen, const char *value,
                        size_t vlen)
{
    rl_buf_t *t = &req->resp_header_text;
    size_t at = t->len;
    if (req->nresp_headers >= sizeof req->resp_headers / sizeof req->resp_headers[0] ||
        at + nlen + vlen + 2 > UINT32_MAX)
        return false;
    if (rl_buf_append(t, name, nlen) != RL_OK || rl_buf_append(t, "", 1) != RL_OK ||
        rl_buf_append(t, value, vlen) != RL_OK || rl_buf_append(t, "", 1) != RL_OK) {
        t->len = at; /* nothing half-added */
        return false;
    }
    req->resp_headers[req->nresp_headers].name = (uint32_t)at;
    req->resp_headers[req->nresp_headers].value = (uint32_t)(at + nlen + 1);
    req->nresp_headers++;
    return true;
}

const char *px_resp_header_name(const px_request_t *req, size_t i)
{
    return req->resp_header_text.data + req->resp_headers[i].name;
}

const char *px_resp_header_value(const px_request_t *req, size_t i)
{
    return req->resp_header_text.data + req->resp_headers[i].value;
}

void px_resp_headers_reset(px_request_t *req)
{
    req->nresp_headers = 0;
    rl_buf_reset(&req->resp_header_text);
}

static bool retryable(int status)
{
    return status == 429 || status >= 500;
}

static void on_headers_done(px_request_t *req)
{
    req->up_headers_done = true;
    if (retryable(req->up_status) && req->attempt + 1 < req->nchain) {
        req->discard = true; /* the next gate gets a chance: nothing of this one is sent */
        return;
    }
    const char *ctype = NULL;
    for (size_t i = 0; i < req->nresp_headers; i++) {
        if (strcasecmp(px_resp_header_name(req, i), "content-type") == 0)
            ctype = px_resp_header_value(req, i);
    }
    req->up_sse = ctype && strncasecmp(ctype, "text/event-stream", 17) == 0;
    px_response_destroy(req->parser);
    req->parser = NULL;
    if (px_response_create(&req->info, req->up_status, req->up_sse, &req->parser) != RL_OK)
        req->parser = NULL;
    px_guard_response_start(req);
    if (req->up_sse) {
        /* a stream: the client gets the status and headers now, the events as they come */
        req->response_ready = true;
        px_worker_resume(req);
    }
}

/* The 3-digit code of a status line ("HTTP/1.1 200 OK"; curl's buffer is not
 * NUL-terminated); 0 when there is none. */
static int status_code(const char *line, size_t len)
{
    const char *sp = memchr(line, ' ', len);
    if (sp == NULL || (size_t)(line + len - sp) < 4)
        return 0;
    int code = 0;
    for (int i = 1; i <= 3; i++) {
        if (sp[i] < '0' || sp[i] > '9')
            return 0;
        code = code * 10 + (sp[i] - '0');
    }
    return code;
}

static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    px_request_t *req = ud;
    size_t len = size * n;
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        /* a status line: a new response (after 100 Continue or a redirect) */
        req->up_status = status_code(data, len);
        px_resp_headers_reset(req);
        req->up_headers_done = false;
        return len;
    }
    if (len <= 2) {
        if (req->up_status >= 200 && !req->up_headers_done)
            on_headers_done(req);
        return len;
    }
    const char *colon = memchr(data, ':', len);
    if (colon == NULL)
        return len;
    size_t nlen = (size_t)(colon - data);
    const char *v = colon + 1;
    size_t vlen = len - nlen - 1;
    while (vlen > 0 && (*v == ' ' || *v == '\t'))
        v++, vlen--;
    while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
        vlen--;
    if (!dropped_response_header(data, nlen))
        (void)px_resp_header_add(req, data, nlen, v, vlen); /* beyond 32: not passed on */
    return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    px_request_t *req = ud;
    size_t len = size * n;
    if (req->discard)
        return len;
    if (req->up_sse && req->out.len - req->out_sent > STREAM_BACKLOG_MAX) {
        req->paused = true; /* the client reads slower than the upstream writes */
        return CURL_WRITEFUNC_PAUSE;
    }
    size_t before = req->out.len;
    rl_status_t st = req->parser ? px_response_feed(req->parser, data, len, &req->out)
                                 : rl_buf_append(&req->out, data, len);
    if (st != RL_OK)
        return 0; /* the response exceeds what we hold: abort the transfer */
    bool go_on = !req->up_sse || px_guard_stream(req, before);
    size_t added = req->out.len - before;
    if (added > 0 && req->resp_copy.len < req->resp_copy.max) {
        size_t room = req->resp_copy.max - req->resp_copy.len;
        rl_buf_append(&req->resp_copy, req->out.data + before, added < room ? added : room);
    }
    if (req->up_sse && added > 0 && req->state == PX_RS_RESPONDING)
        px_worker_resume(req);
    return go_on ? len : 0; /* cut by DLP: ends the transfer (px_upstream_done knows) */
}

/* ---- attempts -------------------------------------------------------------------------- */

void px_upstream_easy_setup(CURL *e, px_worker_t *w)
{
    const px_engine_options_t *o = &w->engine->opts;
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, px_worker_close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, w);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, ""); /* curl decodes: usage and DLP read plain bytes */
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, o->upstream_timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
}

rl_status_t px_upstream_start(px_request_t *req)
{
    px_worker_t *w = req->worker;
    const px_gate_t *g = req->chain[req->attempt];
    if (g != req->prepared_for) {
        /* a fallback gate applies its own pin and defaults */
        rl_buf_reset(&req->rewritten);
        px_protocol_prepare(req->method, req->path, req->body.data, req->body.len, g, g->kind,
                            &req->info, &req->rewritten);
        req->prepared_for = g;
    }
    const char *base = base_url(req, g);
    if (base == NULL) {
        snprintf(req->up_error, sizeof req->up_error, "gate '%s' has no upstream URL", g->name);
        req->up_result = CURLE_URL_MALFORMAT;
        return rl_error(RL_ERR_INVALID, "no upstream");
    }
    snprintf(req->upstream_base, sizeof req->upstream_base, "%s", base);
    int n = snprintf(req->upstream_url, sizeof req->upstream_url, "%s%s%s%s", base, req->path,
                     req->query[0] ? "?" : "", req->query);
    if (n < 0 || (size_t)n >= sizeof req->upstream_url) {
        snprintf(req->up_error, sizeof req->up_error, "upstream URL too long");
        req->up_result = CURLE_URL_MALFORMAT;
        return rl_error(RL_ERR_TOO_LARGE, "url");
    }
    curl_slist_free_all(req->upstream_headers);
    req->upstream_headers = build_headers(req, g);
    CURL *e = px_worker_easy(w);
    if (e == NULL || req->upstream_headers == NULL) {
        px_worker_easy_done(w, e);
        req->up_result = CURLE_OUT_OF_MEMORY;
        return rl_error(RL_ERR_NOMEM, "upstream");
    }
    const rl_buf_t *body = req->rewritten.len ? &req->rewritten : &req->body;
    curl_easy_setopt(e, CURLOPT_URL, req->upstream_url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)req);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->upstream_headers);
    /* A pooled handle remembers the last transfer's method: each branch sets
     * it whole (NOBODY 0 undoes a HEAD; HTTPGET undoes a POST and a HEAD). */
    if (body->len > 0 || strcmp(req->method, "POST") == 0 || strcmp(req->method, "PUT") == 0 ||
        strcmp(req->method, "PATCH") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body->data ? body->data : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body->len);
    } else if (strcmp(req->method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    }
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, req);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, req);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->up_error);
    req->up_error[0] = '\0';
    req->up_status = 0;
    req->up_headers_done = false;
    req->discard = false;
    req->t_up_start_us = px_now_us();
    req->easy = e;
    if (curl_multi_add_handle(w->multi, e) != CURLM_OK) {
        px_worker_easy_done(w, e);
        req->easy = NULL;
        req->up_result = CURLE_FAILED_INIT;
        return rl_error(RL_ERR_IO, "curl_multi_add_handle");
    }
    return RL_OK;
}

static void record_attempt(px_request_t *req, CURLcode result, double ms)
{
    if (req->nattempts >= PX_MAX_ATTEMPTS)
        return;
    px_attempt_t *a = &req->attempts[req->nattempts++];
    memset(a, 0, sizeof *a);
    snprintf(a->gate_id, sizeof a->gate_id, "%s", req->chain[req->attempt]->id);
    snprintf(a->upstream, sizeof a->upstream, "%.255s", req->upstream_base);
    a->http_status = result == CURLE_OK ? req->up_status : 0;
    if (result != CURLE_OK)
        snprintf(a->error, sizeof a->error, "%.95s",
                 req->up_error[0] ? req->up_error : curl_easy_strerror(result));
    else if (retryable(req->up_status))
        snprintf(a->error, sizeof a->error, "HTTP %d", req->up_status);
    a->ms = ms;
}

static void schedule_retry(px_request_t *req)
{
    px_worker_t *w = req->worker;
    long backoff = w->engine->opts.retry_backoff_ms << (req->attempt > 4 ? 4 : req->attempt);
    px_pending_t *p = malloc(sizeof *p);
    if (p == NULL) {
        px_upstream_start(req); /* no memory for a timer: try at once */
        return;
    }
    p->req = req;
    p->due_ms = px_now_us() / 1000 + backoff;
    px_pending_t **at = &w->pending;
    while (*at && (*at)->due_ms <= p->due_ms)
        at = &(*at)->next;
    p->next = *at;
    *at = p;
    rl_counter_add(w->engine->m.retries, 1);
}

void px_upstream_done(px_request_t *req, CURLcode result)
{
    px_worker_t *w = req->worker;
    int64_t now = px_now_us();
    double ms = (double)(now - req->t_up_start_us) / 1000.0;
    if (req->dlp_cut)
        result = CURLE_OK; /* DLP stopped the transfer on purpose: not an upstream error */
    curl_multi_remove_handle(w->multi, req->easy);
    px_worker_easy_done(w, req->easy);
    req->easy = NULL;
    req->upstream_ms_total += ms;
    req->up_result = result;
    record_attempt(req, result, ms);
    rl_histogram_observe(w->engine->m.upstream_seconds, ms / 1000.0);

    bool failed_before_response = result != CURLE_OK && req->state != PX_RS_RESPONDING &&
                                  !req->response_ready;
    if (result != CURLE_OK || retryable(req->up_status))
        rl_counter_add(w->engine->m.upstream_errors, 1);
    if ((req->discard || failed_before_response) && req->attempt + 1 < req->nchain) {
        req->attempt++;
        rl_buf_reset(&req->out);
        req->out_sent = 0;
        px_resp_headers_reset(req);
        schedule_retry(req);
        return;
    }
    if (req->dlp_cut) {
        /* DLP ended the stream with its error event: nothing more to add */
    } else if (result != CURLE_OK && !req->response_ready && req->state != PX_RS_RESPONDING) {
        req->up_status = 0; /* no usable response: the client gets 502/504 */
    } else {
        size_t before = req->out.len;
        if (req->parser)
            px_response_finish(req->parser, &req->out);
        if (result == CURLE_OK || req->up_sse)
            px_guard_response_end(req, before);
    }
    if (result != CURLE_OK)
        req->up_failed = true;
    req->up_done = true;
    if (req->state == PX_RS_UPSTREAM)
        req->response_ready = true;
    px_worker_resume(req);
}

void px_upstream_cancel(px_request_t *req)
{
    px_worker_t *w = req->worker;
    if (req->easy) {
        curl_multi_remove_handle(w->multi, req->easy);
        px_worker_easy_done(w, req->easy);
        req->easy = NULL;
    }
    for (px_pending_t **at = &w->pending; *at;) {
        if ((*at)->req == req) {
            px_pending_t *gone = *at;
            *at = gone->next;
            free(gone);
        } else {
            at = &(*at)->next;
        }
    }
}

void px_upstream_run_pending(px_worker_t *w, int64_t now_ms)
{
    while (w->pending && w->pending->due_ms <= now_ms) {
        px_pending_t *p = w->pending;
        w->pending = p->next;
        px_request_t *req = p->req;
        free(p);
        if (px_upstream_start(req) != RL_OK) {
            req->up_status = 0;
            req->up_done = true;
            req->response_ready = true;
            px_worker_resume(req);
        }
    }
}
