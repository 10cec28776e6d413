#include "rl_bus.h"
#include "rl_cond.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_PER_S 1000000000LL
#define NS_PER_MS 1000000LL

#define DEFAULT_NAME "renlayer"
#define DEFAULT_STREAM_MAX_AGE_S (7LL * 24 * 3600)
#define DEFAULT_DUPLICATE_WINDOW_S 600LL
#define DEFAULT_SESSION_STATE_TTL_S (24LL * 3600)
#define KV_DUPLICATE_WINDOW_S 120LL /* what the server gives a KV bucket's stream */
#define DEFAULT_MAX_PENDING_ACKS 4096
#define DEFAULT_ACK_TIMEOUT_MS 5000LL
#define DEFAULT_REQUEST_TIMEOUT_MS 5000LL
#define DEFAULT_RECONNECT_WAIT_MS 100LL
#define DEFAULT_RECONNECT_WAIT_MAX_MS 5000LL
#define DEFAULT_DRAIN_TIMEOUT_MS 2000LL
#define DEFAULT_WRITE_DEADLINE_MS 1000LL
#define TOPOLOGY_RETRY_MIN_MS 100LL
#define TOPOLOGY_RETRY_MAX_MS 5000LL
/* How long rl_bus_destroy() waits for libnats to stop calling into the bus
 * (its closed callback, an ack handler in progress) before it gives up and
 * leaks the bus rather than free memory a libnats thread may still touch. */
#define CALLBACK_QUIESCE_MS 10000LL

#define MSG_ID_HEADER "Nats-Msg-Id"

/* Subject roots of the bus contract: the stream table and the builders both
 * derive from these, so a subject and its stream cannot drift apart. */
#define SUBJ_DECISIONS "renlayer.decisions"
#define SUBJ_TRACES "renlayer.traces"
#define SUBJ_SESSIONS "renlayer.sessions"
#define SUBJ_SESSIONS_EVENTS SUBJ_SESSIONS ".events"
#define SUBJ_SESSIONS_CONTROL SUBJ_SESSIONS ".control"
#define SUBJ_INSIGHTS "renlayer.insights"
#define SUBJ_USAGE "renlayer.usage"

typedef enum { TOPO_STREAM, TOPO_KV } topo_kind_t;

typedef struct {
    topo_kind_t kind;
    const char *name;    /* stream name, or bucket name for a KV bucket */
    const char *subject; /* stream subject filter; NULL for KV ($KV.<bucket>.> by libnats) */
    const char *description;
} topo_def_t;

/* The one table of what rl_bus_ensure_topology() creates (docs/bus.md). Limits
 * come from the options: every stream shares max age, max bytes, dedupe window
 * and replicas; the bucket has its TTL and a history of 1. */
static const topo_def_t TOPOLOGY[] = {
    {TOPO_STREAM, RL_BUS_STREAM_DECISIONS, SUBJ_DECISIONS ".>", "RenLayer policy decisions"},
    {TOPO_STREAM, RL_BUS_STREAM_TRACES, SUBJ_TRACES ".>", "RenLayer request traces"},
    {TOPO_STREAM, RL_BUS_STREAM_SESSIONS, SUBJ_SESSIONS ".>",
     "RenLayer session events and control"},
    {TOPO_STREAM, RL_BUS_STREAM_INSIGHTS, SUBJ_INSIGHTS ".>", "RenLayer session insights"},
    {TOPO_KV, RL_BUS_KV_SESSION_STATE, NULL, "RenLayer session state for the proxy"},
};
#define TOPOLOGY_LEN (sizeof TOPOLOGY / sizeof TOPOLOGY[0])

struct rl_bus {
    /* NULL until the worker's first connection succeeds (first_connect), then
     * set once, js before nc, and unchanged until rl_bus_destroy: readers
     * test nc (rl_bus_is_connected) before they use js. */
    _Atomic(natsConnection *) nc;
    _Atomic(jsCtx *) js;
    natsOptions *opts;          /* for first_connect; the connection keeps a copy */
    int64_t request_timeout_ms; /* JetStream API requests */
    /* Set in rl_bus_create(), immutable afterwards. */
    char *name;
    int64_t max_age_ns;
    int64_t max_bytes;
    int64_t dup_window_ns;
    int64_t kv_ttl_ns;
    int64_t kv_dup_window_ns;
    int replicas;
    int max_pending;
    int64_t ack_timeout_ms;
    int64_t reconnect_wait_ms;
    int64_t reconnect_wait_max_ms;
    int64_t drain_timeout_ms;
    bool auto_topology;
    rl_bus_state_cb on_state;
    rl_bus_ack_failure_cb on_ack_failure;
    rl_bus_topology_cb on_topology;
    void *ctx;

    uint64_t jitter; /* PRNG state: only the connection's reconnect thread uses it */

    /* Connection events from libnats' callback thread, served by the worker. */
    pthread_mutex_t mu;
    pthread_cond_t cond; /* on CLOCK_MONOTONIC */
    bool connected;      /* latest event said connected */
    bool ever_connected;
    uint64_t state_events;   /* connects + disconnects seen */
    uint64_t state_reported; /* ... of which on_state has been told */
    bool reported_connected;
    uint64_t epoch;     /* bumped by every connect and disconnect */
    bool ready;         /* topology ensured within the current epoch */
    atomic_bool ready_seen; /* ready && connected, as of the latest event: read
                             * without a lock on every publish (see rl_bus_is_ready) */
    bool ensure_wanted; /* worker: run ensure at ensure_due_ms */
    int64_t ensure_due_ms;
    bool stopping;
    bool closed_seen; /* libnats' closed callback has run */
    bool worker_started;
    pthread_t worker;

    pthread_mutex_t ack_cb_mu; /* on_ack_failure calls never overlap */

    atomic_bool closing;
    /* JetStream publishes accepted and not yet resolved by on_js_ack() or
     * sweep_pending(); decremented under mu so rl_bus_destroy() can wait for 0. */
    atomic_llong pending;

    struct {
        atomic_ullong js_published, js_acked, js_duplicates, js_ack_failures, js_refused;
        atomic_ullong core_published, core_refused, disconnects, reconnects;
        atomic_ullong topology_runs_ok, topology_runs_failed, topology_created, topology_updated;
    } st;
};

/* ---- small helpers ---- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / NS_PER_MS;
}

/* Waits on bus->cond (bus->mu held) until the monotonic time deadline_ms. */
static void cond_wait_until(rl_bus_t *bus, int64_t deadline_ms)
{
    struct timespec ts = {.tv_sec = deadline_ms / 1000,
                          .tv_nsec = (deadline_ms % 1000) * NS_PER_MS};
    pthread_cond_timedwait(&bus->cond, &bus->mu, &ts);
}

static void count(atomic_ullong *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static const char *nats_detail(void)
{
    const char *e = nats_GetLastError(NULL);
    return e ? e : "";
}

/* Maps a libnats status to ours; a failure of the bus itself is UNAVAILABLE. */
static rl_status_t from_nats(natsStatus s)
{
    switch (s) {
    case NATS_OK:
        return RL_OK;
    case NATS_NO_MEMORY:
        return RL_ERR_NOMEM;
    case NATS_INVALID_ARG:
    case NATS_INVALID_SUBJECT:
    case NATS_ADDRESS_MISSING:
        return RL_ERR_INVALID;
    case NATS_TIMEOUT:
        return RL_ERR_TIMEOUT;
    case NATS_NOT_FOUND:
        return RL_ERR_NOT_FOUND;
    case NATS_MAX_PAYLOAD:
        return RL_ERR_TOO_LARGE;
    default:
        return RL_ERR_UNAVAILABLE;
    }
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* A subject we publish to: 1..255 bytes of visible ASCII, no wildcard
 * characters, no empty token. */
static bool subject_valid(const char *s)
{
    if (!s || !*s || s[0] == '.')
        return false;
    size_t n = 0;
    for (const char *p = s; *p; p++, n++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c >= 0x7f || c == '*' || c == '>')
            return false;
        if (c == '.' && (p[1] == '.' || p[1] == '\0'))
            return false;
    }
    return n <= 255;
}

static bool msg_id_valid(const char *id)
{
    if (!id || !*id)
        return false;
    size_t n = 0;
    for (const char *p = id; *p; p++, n++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c >= 0x7f)
            return false;
    }
    return n <= RL_BUS_MSG_ID_MAX;
}

/* ---- connection events (libnats' process-wide callback thread) ----
 * These only record the event and wake the worker: that thread is shared by
 * every connection of the process, so nothing here may block or call out. */

static void note_connected(rl_bus_t *bus)
{
    pthread_mutex_lock(&bus->mu);
    if (bus->ever_connected)
        count(&bus->st.reconnects);
    bus->ever_connected = true;
    bus->connected = true;
    bus->state_events++;
    bus->epoch++;
    bus->ready = false;
    atomic_store(&bus->ready_seen, false);
    if (bus->auto_topology) {
        bus->ensure_wanted = true;
        bus->ensure_due_ms = now_ms();
    }
    pthread_cond_broadcast(&bus->cond);
    pthread_mutex_unlock(&bus->mu);
}

static void on_nats_connected(natsConnection *nc, void *closure)
{
    (void)nc;
    note_connected(closure);
}

static void on_nats_disconnected(natsConnection *nc, void *closure)
{
    rl_bus_t *bus = closure;
    (void)nc;
    pthread_mutex_lock(&bus->mu);
    count(&bus->st.disconnects);
    bus->connected = false;
    bus->state_events++;
    bus->epoch++;
    bus->ready = false;
    atomic_store(&bus->ready_seen, false);
    bus->ensure_wanted = false;
    pthread_cond_broadcast(&bus->cond);
    pthread_mutex_unlock(&bus->mu);
}

static void on_nats_closed(natsConnection *nc, void *closure)
{
    rl_bus_t *bus = closure;
    (void)nc;
    pthread_mutex_lock(&bus->mu);
    bus->closed_seen = true;
    atomic_store(&bus->ready_seen, false);
    pthread_cond_broadcast(&bus->cond);
    pthread_mutex_unlock(&bus->mu);
}

/* Runs on the connection's reconnect thread (joined by natsConnection_Close)
 * after every server of the list failed: exponential from reconnect_wait_ms,
 * bounded by reconnect_wait_max_ms, plus up to 20% jitter. */
static int64_t reconnect_delay(natsConnection *nc, int attempts, void *closure)
{
    rl_bus_t *bus = closure;
    (void)nc;
    int64_t d = bus->reconnect_wait_ms;
    for (int i = 1; i < attempts && d < bus->reconnect_wait_max_ms; i++)
        d *= 2;
    if (d > bus->reconnect_wait_max_ms)
        d = bus->reconnect_wait_max_ms;
    /* xorshift64 */
    uint64_t x = bus->jitter;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    bus->jitter = x;
    return d + (int64_t)(x % (uint64_t)(d / 5 + 1));
}

/* ---- JetStream acks (the bus's async-publish reply thread) ---- */

static rl_status_t nack_status(natsStatus s)
{
    return s == NATS_TIMEOUT ? RL_ERR_TIMEOUT : RL_ERR_UNAVAILABLE;
}

static void report_nack(rl_bus_t *bus, natsMsg *msg, rl_status_t status, int js_err,
                        const char *detail)
{
    count(&bus->st.js_ack_failures);
    if (!bus->on_ack_failure)
        return;
    const char *id = NULL;
    if (natsMsgHeader_Get(msg, MSG_ID_HEADER, &id) != NATS_OK || !id)
        id = "";
    int len = natsMsg_GetDataLength(msg);
    rl_bus_nack_t nack = {
        .subject = natsMsg_GetSubject(msg),
        .msg_id = id,
        .data = natsMsg_GetData(msg),
        .len = len > 0 ? (size_t)len : 0,
        .status = status,
        .js_err_code = js_err,
        .detail = detail ? detail : "",
    };
    pthread_mutex_lock(&bus->ack_cb_mu);
    bus->on_ack_failure(bus, &nack, bus->ctx);
    pthread_mutex_unlock(&bus->ack_cb_mu);
}

static void pending_done(rl_bus_t *bus)
{
    pthread_mutex_lock(&bus->mu);
    atomic_fetch_sub(&bus->pending, 1);
    /* Only rl_bus_destroy() waits for pending to drain: waking the worker
     * thread on every ack would cost a context switch per message. */
    if (bus->stopping)
        pthread_cond_broadcast(&bus->cond);
    pthread_mutex_unlock(&bus->mu);
}

/* libnats calls this exactly once per message it accepted, unless the message
 * was taken back with js_PublishAsyncGetPendingList() first; we own msg. */
static void on_js_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    rl_bus_t *bus = closure;
    (void)js;
    if (pae) {
        report_nack(bus, msg, nack_status(pae->Err), (int)pae->ErrCode,
                    pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err));
    } else {
        count(&bus->st.js_acked);
        if (pa && pa->Duplicate)
            count(&bus->st.js_duplicates);
    }
    natsMsg_Destroy(msg);
    /* The last touch of bus: after a sweep, rl_bus_destroy() frees it once
     * pending is 0. */
    pending_done(bus);
}

/* ---- topology ---- */

static const char *def_stream_name(const topo_def_t *def, char *buf, size_t cap)
{
    if (def->kind == TOPO_STREAM)
        return def->name;
    snprintf(buf, cap, "KV_%s", def->name);
    return buf;
}

/* True if the managed settings of have differ from what the bus wants. */
static bool config_differs(const rl_bus_t *bus, const topo_def_t *def, const jsStreamConfig *have)
{
    if (have->Storage != js_FileStorage || have->Replicas != bus->replicas)
        return true;
    if (def->kind == TOPO_KV)
        return have->MaxAge != bus->kv_ttl_ns || have->MaxMsgsPerSubject != 1 ||
               have->Duplicates != bus->kv_dup_window_ns;
    return have->SubjectsLen != 1 || !have->Subjects ||
           strcmp(have->Subjects[0], def->subject) != 0 || have->Retention != js_LimitsPolicy ||
           have->Discard != js_DiscardOld || have->MaxAge != bus->max_age_ns ||
           have->MaxBytes != bus->max_bytes || have->Duplicates != bus->dup_window_ns;
}

/* Writes the managed settings into cfg, leaving the others as they are. */
static void config_apply(const rl_bus_t *bus, const topo_def_t *def, jsStreamConfig *cfg,
                         const char **subjects)
{
    cfg->Storage = js_FileStorage;
    cfg->Replicas = bus->replicas;
    if (def->kind == TOPO_KV) {
        cfg->MaxAge = bus->kv_ttl_ns;
        cfg->MaxMsgsPerSubject = 1;
        cfg->Duplicates = bus->kv_dup_window_ns;
        return;
    }
    subjects[0] = def->subject;
    cfg->Subjects = subjects;
    cfg->SubjectsLen = 1;
    cfg->Retention = js_LimitsPolicy;
    cfg->Discard = js_DiscardOld;
    cfg->MaxAge = bus->max_age_ns;
    cfg->MaxBytes = bus->max_bytes;
    cfg->Duplicates = bus->dup_window_ns;
}

/* Creates def (an identical create is idempotent on the server, so racing
 * processes with the same options all succeed). */
static natsStatus topo_create(rl_bus_t *bus, const topo_def_t *def, jsErrCode *jerr)
{
    *jerr = 0;
    if (def->kind == TOPO_KV) {
        kvConfig kc;
        kvConfig_Init(&kc);
        kc.Bucket = def->name;
        kc.Description = def->description;
        kc.History = 1;
        kc.TTL = bus->kv_ttl_ns;
        kc.StorageType = js_FileStorage;
        kc.Replicas = bus->replicas;
        kvStore *kv = NULL;
        natsStatus s = js_CreateKeyValue(&kv, bus->js, &kc);
        kvStore_Destroy(kv);
        return s;
    }
    const char *subjects[1];
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = def->name;
    cfg.Description = def->description;
    config_apply(bus, def, &cfg, subjects);
    return js_AddStream(NULL, bus->js, &cfg, NULL, jerr);
}

static rl_status_t topo_ensure_one(rl_bus_t *bus, const topo_def_t *def)
{
    char kvname[96];
    const char *stream = def_stream_name(def, kvname, sizeof kvname);
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;

    natsStatus s = js_GetStreamInfo(&si, bus->js, stream, NULL, &jerr);
    if (s == NATS_NOT_FOUND || (s == NATS_ERR && jerr == JSStreamNotFoundErr)) {
        natsStatus cs = topo_create(bus, def, &jerr);
        if (cs == NATS_OK) {
            count(&bus->st.topology_created);
            return RL_OK;
        }
        /* Another process may have created it first with other options
         * ("stream name already in use"): then we update it like any other. */
        char why[256];
        snprintf(why, sizeof why, "%s: %s (js err %d)", natsStatus_GetText(cs), nats_detail(),
                 (int)jerr);
        s = js_GetStreamInfo(&si, bus->js, stream, NULL, NULL);
        if (s != NATS_OK) {
            rl_status_t st = from_nats(cs);
            if (cs == NATS_ERR)
                st = jerr == JSStreamReplicasNotSupportedErr ? RL_ERR_INVALID : RL_ERR_CONFLICT;
            return rl_error(st, "%s: create failed: %s", stream, why);
        }
    }
    if (s != NATS_OK)
        return rl_error(s == NATS_TIMEOUT ? RL_ERR_TIMEOUT : RL_ERR_UNAVAILABLE,
                        "%s: stream info failed: %s: %s", stream, natsStatus_GetText(s),
                        nats_detail());
    if (!config_differs(bus, def, si->Config)) {
        jsStreamInfo_Destroy(si);
        return RL_OK;
    }
    /* Start from the server's config so settings we do not manage survive. */
    const char *subjects[1];
    jsStreamConfig cfg = *si->Config;
    config_apply(bus, def, &cfg, subjects);
    jerr = 0;
    s = js_UpdateStream(NULL, bus->js, &cfg, NULL, &jerr);
    jsStreamInfo_Destroy(si);
    if (s != NATS_OK) {
        rl_status_t st = from_nats(s);
        if (s == NATS_ERR)
            st = jerr == JSStreamReplicasNotSupportedErr ? RL_ERR_INVALID : RL_ERR_CONFLICT;
        return rl_error(st, "%s: update failed: %s: %s (js err %d)", stream, natsStatus_GetText(s),
                        nats_detail(), (int)jerr);
    }
    count(&bus->st.topology_updated);
    return RL_OK;
}

rl_status_t rl_bus_ensure_topology(rl_bus_t *bus)
{
    if (!bus)
        return rl_error(RL_ERR_INVALID, "bus is NULL");
    if (!rl_bus_is_connected(bus))
        return rl_error(RL_ERR_UNAVAILABLE, "bus not connected");
    pthread_mutex_lock(&bus->mu);
    uint64_t epoch = bus->epoch;
    pthread_mutex_unlock(&bus->mu);

    rl_status_t st = RL_OK;
    for (size_t i = 0; i < TOPOLOGY_LEN && st == RL_OK; i++)
        st = topo_ensure_one(bus, &TOPOLOGY[i]);
    if (st != RL_OK) {
        count(&bus->st.topology_runs_failed);
        return st;
    }
    count(&bus->st.topology_runs_ok);
    pthread_mutex_lock(&bus->mu);
    /* A disconnect during the run moved the epoch: the next connect re-runs it. */
    if (bus->epoch == epoch) {
        bus->ready = true;
        atomic_store(&bus->ready_seen, true);
    }
    pthread_mutex_unlock(&bus->mu);
    return RL_OK;
}

/* ---- worker: connects, tells on_state and runs the automatic topology ---- */

static bool is_stopping(rl_bus_t *bus)
{
    pthread_mutex_lock(&bus->mu);
    bool stop = bus->stopping;
    pthread_mutex_unlock(&bus->mu);
    return stop;
}

/* The first connection, retried with reconnect_delay's backoff until it
 * succeeds or the bus stops; from then on libnats reconnects by itself
 * (MaxReconnect -1). An attempt blocks for at most libnats' connect timeout
 * (2 s) against a server that accepts and never answers. */
static void first_connect(rl_bus_t *bus)
{
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = bus->request_timeout_ms;
    /* Our own window (bus->pending) refuses without blocking; libnats counts a
     * message until our ack handler has returned, so give it one more slot and
     * its blocking stall never triggers. */
    jo.PublishAsync.MaxPending = (int64_t)bus->max_pending + 1;
    jo.PublishAsync.StallWait = 1;
    jo.PublishAsync.AckHandler = on_js_ack;
    jo.PublishAsync.AckHandlerClosure = bus;
    for (int attempts = 1; !is_stopping(bus); attempts++) {
        natsConnection *nc = NULL;
        jsCtx *js = NULL;
        natsStatus s = natsConnection_Connect(&nc, bus->opts);
        if (s == NATS_OK)
            s = natsConnection_JetStream(&js, nc, &jo);
        if (s == NATS_OK) {
            /* published even when stopping: rl_bus_destroy closes it */
            pthread_mutex_lock(&bus->mu);
            atomic_store(&bus->js, js);
            atomic_store(&bus->nc, nc);
            pthread_mutex_unlock(&bus->mu);
            note_connected(bus);
            return;
        }
        jsCtx_Destroy(js);
        natsConnection_Destroy(nc);
        int64_t until = now_ms() + reconnect_delay(NULL, attempts, bus);
        pthread_mutex_lock(&bus->mu);
        while (!bus->stopping && now_ms() < until)
            cond_wait_until(bus, until);
        pthread_mutex_unlock(&bus->mu);
    }
}

static void *worker_main(void *arg)
{
    rl_bus_t *bus = arg;
    pthread_setname_np(pthread_self(), "rl-bus");
    int64_t retry_ms = TOPOLOGY_RETRY_MIN_MS;
    first_connect(bus);

    pthread_mutex_lock(&bus->mu);
    while (!bus->stopping) {
        if (bus->state_events != bus->state_reported) {
            /* Events strictly alternate; if some were missed in between,
             * report the blip as a down-up (or up-down) pair. */
            uint64_t n = bus->state_events - bus->state_reported;
            bool now = bus->connected;
            bool blip = (now == bus->reported_connected);
            bus->state_reported = bus->state_events;
            bus->reported_connected = now;
            if (n >= 2 || !blip) {
                pthread_mutex_unlock(&bus->mu);
                if (bus->on_state) {
                    if (blip)
                        bus->on_state(bus, !now, bus->ctx);
                    bus->on_state(bus, now, bus->ctx);
                }
                pthread_mutex_lock(&bus->mu);
            }
            continue;
        }
        if (bus->ensure_wanted && now_ms() >= bus->ensure_due_ms) {
            uint64_t epoch = bus->epoch;
            bus->ensure_wanted = false;
            pthread_mutex_unlock(&bus->mu);

            rl_error_clear();
            rl_status_t st = rl_bus_ensure_topology(bus);
            pthread_mutex_lock(&bus->mu);
            bool stopping = bus->stopping;
            pthread_mutex_unlock(&bus->mu);
            if (bus->on_topology && !stopping)
                bus->on_topology(bus, st, st == RL_OK ? "" : rl_error_last(), bus->ctx);

            pthread_mutex_lock(&bus->mu);
            if (st == RL_OK) {
                retry_ms = TOPOLOGY_RETRY_MIN_MS;
            } else if (bus->epoch == epoch && !bus->ensure_wanted) {
                bus->ensure_wanted = true;
                bus->ensure_due_ms = now_ms() + retry_ms;
                retry_ms =
                    retry_ms * 2 > TOPOLOGY_RETRY_MAX_MS ? TOPOLOGY_RETRY_MAX_MS : retry_ms * 2;
            }
            continue;
        }
        if (bus->ensure_wanted)
            cond_wait_until(bus, bus->ensure_due_ms);
        else
            pthread_cond_wait(&bus->cond, &bus->mu);
    }
    pthread_mutex_unlock(&bus->mu);
    return NULL;
}

/* ---- create / destroy ---- */

static int64_t or_default(int64_t v, int64_t def)
{
    return v ? v : def;
}

static rl_status_t nats_opts_build(rl_bus_t *bus, const rl_bus_options_t *o, natsOptions **out)
{
    natsOptions *no = NULL;
    natsStatus s = natsOptions_Create(&no);
    if (s == NATS_OK)
        s = natsOptions_SetURL(no, o->url);
    if (s == NATS_OK)
        s = natsOptions_SetName(no, bus->name);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(no, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(no, bus->reconnect_wait_ms);
    if (s == NATS_OK)
        s = natsOptions_SetCustomReconnectDelay(no, reconnect_delay, bus);
    /* Publishes write to the socket under the connection lock: without a
     * deadline a server that stops reading blocks the caller for good. */
    if (s == NATS_OK)
        s = natsOptions_SetWriteDeadline(
            no, or_default(o->write_deadline_ms, DEFAULT_WRITE_DEADLINE_MS));
    /* No RetryOnFailedConnect: the worker makes the first connection itself
     * (first_connect); libnats 3.4.1 closes a connection for good when its
     * first attempt reached a server that never answered (a hung server). */
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(no, on_nats_connected, bus);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(no, on_nats_disconnected, bus);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(no, on_nats_closed, bus);
    /* Callers batch already (the proxy sends one message per subject per
     * 3 ms): write at once instead of waking the flusher thread. */
    if (s == NATS_OK)
        s = natsOptions_SetSendAsap(no, true);
    if (s != NATS_OK) {
        rl_status_t st = rl_error(from_nats(s) == RL_ERR_NOMEM ? RL_ERR_NOMEM : RL_ERR_INVALID,
                                  "nats options: %s: %s", natsStatus_GetText(s), nats_detail());
        natsOptions_Destroy(no);
        return st;
    }
    *out = no;
    return RL_OK;
}

/* Frees what rl_bus_create() built, in reverse; for a bus no libnats thread
 * references any more. */
static void bus_free(rl_bus_t *bus)
{
    natsOptions_Destroy(bus->opts);
    pthread_mutex_destroy(&bus->ack_cb_mu);
    pthread_cond_destroy(&bus->cond);
    pthread_mutex_destroy(&bus->mu);
    free(bus->name);
    free(bus);
}

rl_status_t rl_bus_create(const rl_bus_options_t *o, rl_bus_t **out)
{
    if (!o || !out || !o->url || !*o->url)
        return rl_error(RL_ERR_INVALID, "bus options: url is required");
    if (o->stream_max_age_s < 0 || o->stream_max_bytes < 0 || o->duplicate_window_s < 0 ||
        o->replicas < 0 || o->session_state_ttl_s < 0 || o->max_pending_acks < 0 ||
        o->ack_timeout_ms < 0 || o->request_timeout_ms < 0 || o->reconnect_wait_ms < 0 ||
        o->reconnect_wait_max_ms < 0 || o->drain_timeout_ms < 0 || o->write_deadline_ms < 0)
        return rl_error(RL_ERR_INVALID, "bus options: negative value");
    if (o->stream_max_age_s > INT64_MAX / NS_PER_S ||
        o->duplicate_window_s > INT64_MAX / NS_PER_S ||
        o->session_state_ttl_s > INT64_MAX / NS_PER_S || o->max_pending_acks == INT_MAX)
        return rl_error(RL_ERR_INVALID, "bus options: value out of range");

    rl_bus_t *bus = calloc(1, sizeof *bus);
    if (!bus)
        return rl_error(RL_ERR_NOMEM, "bus: out of memory");
    bus->name = dup_str(o->name && *o->name ? o->name : DEFAULT_NAME);
    if (!bus->name) {
        free(bus);
        return rl_error(RL_ERR_NOMEM, "bus: out of memory");
    }
    bus->max_age_ns = or_default(o->stream_max_age_s, DEFAULT_STREAM_MAX_AGE_S) * NS_PER_S;
    bus->max_bytes = o->stream_max_bytes ? o->stream_max_bytes : -1;
    bus->dup_window_ns = or_default(o->duplicate_window_s, DEFAULT_DUPLICATE_WINDOW_S) * NS_PER_S;
    if (bus->dup_window_ns > bus->max_age_ns)
        bus->dup_window_ns = bus->max_age_ns; /* the server refuses a window above max age */
    bus->kv_ttl_ns = or_default(o->session_state_ttl_s, DEFAULT_SESSION_STATE_TTL_S) * NS_PER_S;
    bus->kv_dup_window_ns = KV_DUPLICATE_WINDOW_S * NS_PER_S;
    if (bus->kv_dup_window_ns > bus->kv_ttl_ns)
        bus->kv_dup_window_ns = bus->kv_ttl_ns;
    bus->replicas = o->replicas ? o->replicas : 1;
    bus->max_pending = o->max_pending_acks ? o->max_pending_acks : DEFAULT_MAX_PENDING_ACKS;
    bus->ack_timeout_ms = or_default(o->ack_timeout_ms, DEFAULT_ACK_TIMEOUT_MS);
    bus->reconnect_wait_ms = or_default(o->reconnect_wait_ms, DEFAULT_RECONNECT_WAIT_MS);
    bus->reconnect_wait_max_ms =
        or_default(o->reconnect_wait_max_ms, DEFAULT_RECONNECT_WAIT_MAX_MS);
    if (bus->reconnect_wait_max_ms < bus->reconnect_wait_ms)
        bus->reconnect_wait_max_ms = bus->reconnect_wait_ms;
    bus->drain_timeout_ms = or_default(o->drain_timeout_ms, DEFAULT_DRAIN_TIMEOUT_MS);
    bus->auto_topology = o->ensure_topology;
    bus->on_state = o->on_state;
    bus->on_ack_failure = o->on_ack_failure;
    bus->on_topology = o->on_topology;
    bus->ctx = o->ctx;
    bus->jitter = ((uint64_t)now_ms() << 20) ^ (uint64_t)(uintptr_t)bus ^ 0x9e3779b97f4a7c15ULL;
    atomic_init(&bus->closing, false);
    atomic_init(&bus->ready_seen, false);
    atomic_init(&bus->pending, 0);

    if (rl_cond_init(&bus->cond) != 0) {
        free(bus->name);
        free(bus);
        return rl_error(RL_ERR_NOMEM, "bus: cannot create condition variable");
    }
    pthread_mutex_init(&bus->mu, NULL);
    pthread_mutex_init(&bus->ack_cb_mu, NULL);

    bus->request_timeout_ms = or_default(o->request_timeout_ms, DEFAULT_REQUEST_TIMEOUT_MS);
    rl_status_t st = nats_opts_build(bus, o, &bus->opts);
    if (st != RL_OK) {
        bus_free(bus);
        return st;
    }
    if (pthread_create(&bus->worker, NULL, worker_main, bus) != 0) {
        bus_free(bus);
        return rl_error(RL_ERR_NOMEM, "bus: cannot start worker thread");
    }
    bus->worker_started = true;
    *out = bus;
    return RL_OK;
}

/* Takes back every message still awaiting an ack and reports it: after this,
 * libnats has no message of ours, so it will not call on_js_ack again. */
static void sweep_pending(rl_bus_t *bus)
{
    natsMsgList list = {0};
    /* libnats 3.4.1 crashes here if no async publish ever set up its table. */
    if (!bus->js || atomic_load(&bus->st.js_published) == 0 ||
        js_PublishAsyncGetPendingList(&list, bus->js) != NATS_OK)
        return;
    for (int i = 0; i < list.Count; i++) {
        report_nack(bus, list.Msgs[i], RL_ERR_UNAVAILABLE, 0, "bus closed before the ack");
        pending_done(bus);
    }
    natsMsgList_Destroy(&list);
}

void rl_bus_destroy(rl_bus_t *bus)
{
    if (!bus)
        return;
    atomic_store(&bus->closing, true);

    int64_t deadline = now_ms() + bus->drain_timeout_ms;
    if (bus->js && rl_bus_is_connected(bus)) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = bus->drain_timeout_ms;
        (void)js_PublishAsyncComplete(bus->js, &po);
        int64_t left = deadline - now_ms();
        if (left > 0 && rl_bus_is_connected(bus))
            (void)natsConnection_FlushTimeout(bus->nc, left);
    }
    sweep_pending(bus);

    pthread_mutex_lock(&bus->mu);
    bus->stopping = true;
    pthread_cond_broadcast(&bus->cond);
    natsConnection *nc = atomic_load(&bus->nc);
    pthread_mutex_unlock(&bus->mu);

    /* Close fails the worker's JetStream requests at once, joins the reconnect
     * thread (reconnect_delay) and queues the closed callback behind any other
     * callback of this connection. A worker still making its first
     * connection (at most libnats' connect timeout) publishes it before it
     * ends: closed after the join. */
    if (nc)
        natsConnection_Close(nc);
    if (bus->worker_started)
        pthread_join(bus->worker, NULL);
    if (!nc && (nc = atomic_load(&bus->nc)) != NULL)
        natsConnection_Close(nc);

    int64_t limit = now_ms() + CALLBACK_QUIESCE_MS;
    pthread_mutex_lock(&bus->mu);
    while (((nc && !bus->closed_seen) || atomic_load(&bus->pending) > 0) && now_ms() < limit)
        cond_wait_until(bus, limit);
    bool quiet = (!nc || bus->closed_seen) && atomic_load(&bus->pending) == 0;
    pthread_mutex_unlock(&bus->mu);

    jsCtx_Destroy(bus->js);
    natsConnection_Destroy(bus->nc);
    if (quiet)
        bus_free(bus);
    /* else: a libnats thread may still hold a pointer to bus; leaking it is the
     * only safe choice. */
}

/* ---- state and publishing ---- */

bool rl_bus_is_connected(rl_bus_t *bus)
{
    return bus && bus->nc && natsConnection_Status(bus->nc) == NATS_CONN_STATUS_CONNECTED;
}

bool rl_bus_is_ready(rl_bus_t *bus)
{
    return rl_bus_is_connected(bus) && rl_bus_ready_hint(bus);
}

bool rl_bus_ready_hint(rl_bus_t *bus)
{
    return bus && atomic_load_explicit(&bus->ready_seen, memory_order_acquire);
}

rl_status_t rl_bus_publish_js(rl_bus_t *bus, const char *subject, const char *msg_id,
                              const void *data, size_t len)
{
    if (!bus)
        return rl_error(RL_ERR_INVALID, "bus is NULL");
    if (!subject_valid(subject))
        return rl_error(RL_ERR_INVALID, "invalid subject");
    if (!msg_id_valid(msg_id))
        return rl_error(RL_ERR_INVALID, "invalid msg id");
    if (len > 0 && !data)
        return rl_error(RL_ERR_INVALID, "data is NULL");
    if (len > INT_MAX)
        return rl_error(RL_ERR_TOO_LARGE, "%zu bytes", len);
    if (atomic_load(&bus->closing) || !rl_bus_is_connected(bus)) {
        count(&bus->st.js_refused);
        return rl_error(RL_ERR_UNAVAILABLE, "bus not connected");
    }
    if (atomic_fetch_add(&bus->pending, 1) >= bus->max_pending) {
        atomic_fetch_sub(&bus->pending, 1);
        count(&bus->st.js_refused);
        return rl_error(RL_ERR_UNAVAILABLE, "%d publishes awaiting acks", bus->max_pending);
    }

    natsMsg *msg = NULL;
    natsStatus s = natsMsg_Create(&msg, subject, NULL, data, (int)len);
    if (s == NATS_OK) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = msg_id;
        po.MaxWait = bus->ack_timeout_ms;
        s = js_PublishMsgAsync(bus->js, &msg, &po);
    }
    if (s == NATS_OK) {
        count(&bus->st.js_published);
        return RL_OK;
    }
    natsMsg_Destroy(msg); /* NULL if libnats took it */
    atomic_fetch_sub(&bus->pending, 1);
    rl_status_t st = from_nats(s);
    if (st == RL_ERR_UNAVAILABLE || st == RL_ERR_TIMEOUT) {
        count(&bus->st.js_refused);
        st = RL_ERR_UNAVAILABLE;
    }
    return rl_error(st, "publish %s: %s: %s", subject, natsStatus_GetText(s), nats_detail());
}

rl_status_t rl_bus_publish(rl_bus_t *bus, const char *subject, const void *data, size_t len)
{
    if (!bus)
        return rl_error(RL_ERR_INVALID, "bus is NULL");
    if (!subject_valid(subject))
        return rl_error(RL_ERR_INVALID, "invalid subject");
    if (len > 0 && !data)
        return rl_error(RL_ERR_INVALID, "data is NULL");
    if (len > INT_MAX)
        return rl_error(RL_ERR_TOO_LARGE, "%zu bytes", len);
    if (atomic_load(&bus->closing) || !rl_bus_is_connected(bus)) {
        count(&bus->st.core_refused);
        return rl_error(RL_ERR_UNAVAILABLE, "bus not connected");
    }
    natsStatus s = natsConnection_Publish(bus->nc, subject, data, (int)len);
    if (s == NATS_OK) {
        count(&bus->st.core_published);
        return RL_OK;
    }
    rl_status_t st = from_nats(s);
    if (st == RL_ERR_UNAVAILABLE)
        count(&bus->st.core_refused);
    return rl_error(st, "publish %s: %s: %s", subject, natsStatus_GetText(s), nats_detail());
}

void rl_bus_stats(rl_bus_t *bus, rl_bus_stats_t *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!bus)
        return;
    out->js_published = atomic_load(&bus->st.js_published);
    out->js_acked = atomic_load(&bus->st.js_acked);
    out->js_duplicates = atomic_load(&bus->st.js_duplicates);
    out->js_ack_failures = atomic_load(&bus->st.js_ack_failures);
    out->js_refused = atomic_load(&bus->st.js_refused);
    long long pending = atomic_load(&bus->pending);
    out->js_pending = pending > 0 ? (uint64_t)pending : 0;
    out->core_published = atomic_load(&bus->st.core_published);
    out->core_refused = atomic_load(&bus->st.core_refused);
    out->disconnects = atomic_load(&bus->st.disconnects);
    out->reconnects = atomic_load(&bus->st.reconnects);
    out->topology_runs_ok = atomic_load(&bus->st.topology_runs_ok);
    out->topology_runs_failed = atomic_load(&bus->st.topology_runs_failed);
    out->topology_created = atomic_load(&bus->st.topology_created);
    out->topology_updated = atomic_load(&bus->st.topology_updated);
}

natsConnection *rl_bus_conn(rl_bus_t *bus)
{
    return bus ? bus->nc : NULL;
}

jsCtx *rl_bus_js(rl_bus_t *bus)
{
    return bus ? bus->js : NULL;
}

/* ---- subjects ---- */

bool rl_bus_token_valid(const char *tok)
{
    if (!tok || !*tok)
        return false;
    size_t n = 0;
    for (const char *p = tok; *p; p++, n++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok || n >= RL_BUS_TOKEN_MAX)
            return false;
    }
    return true;
}

/* Writes root.tok[0](.tok[1]) into out. */
static rl_status_t build_subject(const char *root, const char *t0, const char *t1, bool two,
                                 char *out, size_t cap)
{
    if (!out || cap == 0)
        return rl_error(RL_ERR_INVALID, "subject buffer is NULL or empty");
    out[0] = '\0';
    if (!rl_bus_token_valid(t0) || (two && !rl_bus_token_valid(t1)))
        return rl_error(RL_ERR_INVALID, "subject token must be 1-%d bytes of [A-Za-z0-9_-]",
                        RL_BUS_TOKEN_MAX);
    int n =
        two ? snprintf(out, cap, "%s.%s.%s", root, t0, t1) : snprintf(out, cap, "%s.%s", root, t0);
    if (n < 0 || (size_t)n >= cap) {
        out[0] = '\0';
        return rl_error(RL_ERR_TOO_LARGE, "subject needs %d bytes, buffer has %zu", n + 1, cap);
    }
    return RL_OK;
}

rl_status_t rl_bus_subject_traces(const char *tenant, const char *agent, char *out, size_t cap)
{
    return build_subject(SUBJ_TRACES, tenant, agent, true, out, cap);
}

rl_status_t rl_bus_subject_decisions(const char *tenant, const char *agent, char *out, size_t cap)
{
    return build_subject(SUBJ_DECISIONS, tenant, agent, true, out, cap);
}

rl_status_t rl_bus_subject_sessions_events(const char *tenant, char *out, size_t cap)
{
    return build_subject(SUBJ_SESSIONS_EVENTS, tenant, NULL, false, out, cap);
}

rl_status_t rl_bus_subject_sessions_control(const char *tenant, char *out, size_t cap)
{
    return build_subject(SUBJ_SESSIONS_CONTROL, tenant, NULL, false, out, cap);
}

rl_status_t rl_bus_subject_insights(const char *tenant, char *out, size_t cap)
{
    return build_subject(SUBJ_INSIGHTS, tenant, NULL, false, out, cap);
}

rl_status_t rl_bus_subject_usage(const char *tenant, char *out, size_t cap)
{
    return build_subject(SUBJ_USAGE, tenant, NULL, false, out, cap);
}
