/* px_internal: the engine's private structures, shared by px_engine.c (the
 * worker loop), px_request.c (one request's life) and px_upstream.c (its
 * upstream transfers). Not for other modules. */
#ifndef PX_INTERNAL_H
#define PX_INTERNAL_H

#include <curl/curl.h>
#include <microhttpd.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "px_engine.h"
#include "px_protocol.h"
#include "px_trace.h"
#include "px_types.h"
#include "rl_buf.h"
#include "rl_crypto.h"
#include "rl_dlp.h"

typedef struct px_worker px_worker_t;
typedef struct px_request px_request_t;
typedef struct px_stream_guard px_stream_guard_t;

/* Metrics every worker updates (registered once; lock-free updates). */
typedef struct {
    rl_counter_t *by_status[600]; /* requests by HTTP status, registered lazily */
    rl_histogram_t *upstream_seconds;
    rl_histogram_t *overhead_us;
    rl_gauge_t *in_flight;
    rl_counter_t *upstream_errors;
    rl_counter_t *retries;
    rl_counter_t *client_aborts;
    rl_counter_t *denied;      /* renlayer_proxy_decisions_total{status="DENIED"} */
    rl_counter_t *flagged;     /* ...{status="FLAGGED"} */
    rl_counter_t *dlp_blocked; /* ...{status="DLP_BLOCKED"} (requests and responses) */
    rl_counter_t *dlp_warned;  /* ...{status="DLP_WARNED"} */
    rl_counter_t *policy_errors; /* evaluations that failed (denied, fail closed) */
    rl_counter_t *dlp_errors;    /* scans that hit a match limit or ran out of memory */
} px_metrics_t;

struct px_engine {
    px_engine_options_t opts;
    unsigned port;
    px_worker_t *workers;
    unsigned nworkers;
    px_metrics_t m;
    pthread_mutex_t metrics_lock; /* registration of per-status counters */
    _Atomic bool stopping;
    _Atomic uint64_t rr_counter;  /* round-robin spread across gates */
};

/* A retry waiting for its backoff to pass. */
typedef struct px_pending {
    px_request_t *req;
    int64_t due_ms;
    struct px_pending *next;
} px_pending_t;

/* A curl socket's place in the worker's epoll set. */
typedef struct {
    uint32_t events; /* registered in epfd (meaningful when in_set) */
    bool in_set;
    bool wanted; /* curl watches the socket now (a transfer uses it) */
} px_curl_fd_t;

struct px_worker {
    px_engine_t *engine;
    unsigned index;
    pthread_t thread;
    struct MHD_Daemon *daemon;
    int epfd;       /* the worker's epoll set: MHD's epoll fd, curl's sockets, the timer */
    int mhd_fd;     /* MHD's own epoll fd */
    int64_t curl_due_ms; /* when curl wants its timeout handled; -1: no timer */
    int wake_fd;    /* eventfd: stop requests */
    CURLM *multi;
    /* curl's sockets in epfd, by fd. An idle kept-alive upstream socket stays
     * in the set between transfers, so reusing a connection costs no
     * epoll_ctl; curl's close callback and an event nobody wants take it out. */
    px_curl_fd_t *curl_fds;
    size_t ncurl_fds;
    px_pending_t *pending; /* retries by due time */
    size_t in_flight;
    px_snapshot_t *snap;   /* the configuration this worker's new requests use */
    CURL *idle_easy[64];   /* easy handles kept for reuse, with their shared options */
    size_t nidle_easy;
    rl_buf_t scratch;      /* reusable buffer for error bodies */
    rl_hmac_t *key_hasher; /* HMAC under the engine's hash_key: presented API keys */
    px_request_t *free_requests; /* recycled px_request_t (px_request.c) */
    size_t nfree_requests;
    rl_dlp_scratch_t *dlp_scratch; /* PCRE2 state for this worker's scans; created lazily */
};

/* What a request is waiting for. */
typedef enum {
    PX_RS_READING,     /* the body is arriving */
    PX_RS_UPSTREAM,    /* suspended, an upstream attempt is in flight or pending */
    PX_RS_RESPONDING,  /* a response is queued (streaming or whole) */
    PX_RS_DONE,
} px_request_state_t;

struct px_request {
    px_worker_t *worker;
    struct MHD_Connection *conn;
    px_request_state_t state;
    bool suspended;          /* MHD connection is suspended by us */
    bool response_ready;     /* resume to queue a response */

    /* client request */
    char method[16];
    char *uri;               /* owned: the raw request target, path and query */
    const char *path;        /* into uri: the path forwarded (after a /gates/<name> prefix) */
    const char *query;       /* into uri (or query_owned): what follows '?', or "" */
    char *query_owned;       /* owned: the query with DLP's redactions, when it has some */
    rl_buf_t body;
    bool body_too_large;
    int64_t t_arrive_us;     /* monotonic */
    int64_t t_arrive_wall_us;

    /* resolution */
    char trace_id[PX_ID_LEN];
    px_snapshot_t *snap;     /* a reference held for the request's life */
    const px_key_t *key;
    const px_agent_t *agent;
    const px_gate_t *gate;   /* the gate asked for */
    px_proto_t proto;
    px_request_info_t info;
    rl_buf_t rewritten;      /* the forwarded body when it differs */
    const px_gate_t *prepared_for; /* the gate rewritten was made for (pin, defaults) */
    const char *user;        /* MHD-owned header values, valid for the request */
    const char *session;
    char mcp_id[64];         /* JSON-RPC id text of an MCP call, for its errors */

    /* upstream */
    CURL *easy;
    struct curl_slist *upstream_headers;
    const px_gate_t *chain[PX_MAX_ATTEMPTS]; /* gates to try, in order */
    size_t nchain;
    size_t attempt;          /* index into chain of the current attempt */
    char upstream_url[2048];
    char upstream_base[512];
    int up_status;
    bool up_headers_done;
    bool up_sse;
    bool discard;            /* a retryable failure: drop this attempt's body */
    bool up_done;
    bool up_failed;          /* the upstream failed mid-response */
    CURLcode up_result;
    char up_error[CURL_ERROR_SIZE];
    /* the upstream's response headers passed on: offsets of "name\0value\0"
     * in resp_header_text (px_resp_header_*) */
    struct {
        uint32_t name, value;
    } resp_headers[32];
    size_t nresp_headers;
    rl_buf_t resp_header_text;
    px_response_t *parser;
    rl_buf_t out;            /* bytes for the client not yet sent */
    size_t out_sent;         /* of out, already copied to MHD */
    bool paused;             /* curl paused because out is full */
    rl_buf_t resp_copy;      /* the first bytes of the response, for the trace */
    int64_t t_up_start_us, t_up_end_us;
    double upstream_ms_total;
    px_attempt_t attempts[PX_MAX_ATTEMPTS];
    size_t nattempts;

    /* outcome */
    int http_status;
    const char *status;      /* PX_STATUS_* */
    const char *error;       /* static text or NULL */
    bool decision_published;

    /* policies and DLP (px_guard.c) */
    px_finding_t findings[PX_MAX_FINDINGS]; /* request and response findings, for the trace */
    size_t nfindings;
    const char *policy_id;   /* the deciding policy (borrowed from the snapshot's set) or NULL */
    char reason[256];        /* the decision's reason (policy message, detectors) */
    rl_buf_t trace_req;      /* the request body with every finding redacted, for the trace */
    bool trace_req_redacted; /* the trace shows trace_req (findings in the request) */
    bool resp_findings;      /* the response had findings: its trace copy is redacted or dropped */
    px_stream_guard_t *guard; /* DLP over a streamed response; NULL when none */
    bool dlp_cut;            /* the response was cut by DLP: the transfer ended on purpose */

    px_request_t *next_free; /* in the worker's pool of recycled requests */
};

/* px_request.c */
px_request_t *px_request_new(px_worker_t *w, const char *uri);
void px_request_free(px_request_t *req);
/* Frees the worker's pool of recycled requests. */
void px_request_pool_free(px_worker_t *w);
enum MHD_Result px_request_handle(px_request_t *req, struct MHD_Connection *conn,
                                  const char *method, const char *upload, size_t *upload_size);
void px_request_completed(px_request_t *req, enum MHD_RequestTerminationCode toe);
void px_request_respond_error(px_request_t *req, int http_status, const char *code,
                              const char *message);
/* Publishes the decision message of req as it stands (status, policy, findings). */
void px_request_publish_decision(px_request_t *req);

/* px_guard.c and px_guard_response.c: policies and DLP on the request path (steps 5-6,
 * see docs/proxy.md) and DLP on the response (step 8). */

/* Scans the request, evaluates the agent's policy set, applies the verdict.
 * Returns false when the request was answered (403 DENIED or DLP_BLOCKED,
 * decision published); true to forward it (req->status set, a redacted
 * body in req->body / req->rewritten when a rule redacts). */
bool px_guard_request(px_request_t *req);

/* The upstream's headers are in: prepares the response scan (a stream guard
 * for SSE). Called once per final response. */
void px_guard_response_start(px_request_t *req);

/* Moves the bytes the parser appended to req->out from `from` on through
 * the stream guard: what is safe stays in out (redacted), what may still be
 * part of a finding is held, a blocking finding cuts the stream with an
 * error event. Returns false when the stream was cut (stop the transfer). */
bool px_guard_stream(px_request_t *req, size_t from);

/* The upstream ended and the parser appended its last bytes to req->out from
 * `from` on: flushes the stream guard, or scans a whole response body in
 * req->out (a block replaces it with a structured 403, a redaction rewrites
 * it). */
void px_guard_response_end(px_request_t *req, size_t from);

/* Frees the guard state of req. */
void px_guard_free(px_request_t *req);

/* px_upstream.c */

/* The response headers kept for the client: add (false when out of room or
 * memory), read back, forget. */
bool px_resp_header_add(px_request_t *req, const char *name, size_t nlen, const char *value,
                        size_t vlen);
const char *px_resp_header_name(const px_request_t *req, size_t i);
const char *px_resp_header_value(const px_request_t *req, size_t i);
void px_resp_headers_reset(px_request_t *req);
/* Sets the options every transfer of w shares on a new easy handle, which
 * keeps them while it waits in the worker's pool. */
void px_upstream_easy_setup(CURL *e, px_worker_t *w);
rl_status_t px_upstream_start(px_request_t *req);
void px_upstream_done(px_request_t *req, CURLcode result);
void px_upstream_cancel(px_request_t *req);
void px_upstream_run_pending(px_worker_t *w, int64_t now_ms);

/* px_engine.c */
/* An easy handle from the worker's pool, with the options every transfer
 * shares (px_upstream_easy_setup), or NULL. */
CURL *px_worker_easy(px_worker_t *w);
/* CURLOPT_CLOSESOCKETFUNCTION of the worker's transfers (data: the worker). */
int px_worker_close_socket(void *worker, curl_socket_t fd);
void px_worker_easy_done(px_worker_t *w, CURL *easy);
void px_worker_resume(px_request_t *req);
void px_engine_count_status(px_engine_t *e, int status);
int64_t px_now_us(void);
int64_t px_wall_us(void);

#endif
