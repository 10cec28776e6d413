#include "px_engine.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "px_internal.h"
#include "rl_http.h"
#include "rl_log.h"
#include "rl_net.h"

/* epoll tags: MHD's fd, the curl timer and the wake fd are told apart from
 * curl sockets by these sentinel pointers in epoll_event.data.ptr. */
static char tag_mhd, tag_wake;

int64_t px_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t px_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void px_engine_count_status(px_engine_t *e, int status)
{
    if (status < 100 || status > 599)
        status = 599;
    rl_counter_t *c = e->m.by_status[status];
    if (c == NULL) {
        char labels[32];
        snprintf(labels, sizeof labels, "code=\"%d\"", status);
        pthread_mutex_lock(&e->metrics_lock);
        rl_metrics_counter(e->opts.metrics, "renlayer_proxy_requests_total",
                           "Requests answered by the proxy, by HTTP status", labels, &c);
        e->m.by_status[status] = c;
        pthread_mutex_unlock(&e->metrics_lock);
    }
    rl_counter_add(c, 1);
}

void px_worker_resume(px_request_t *req)
{
    if (req->suspended) {
        req->suspended = false;
        MHD_resume_connection(req->conn);
    }
}

/* ---- curl multi glue ------------------------------------------------------------------- */

/* The slot of fd, grown on demand when grow; NULL if fd has none. */
static px_curl_fd_t *curl_fd(px_worker_t *w, curl_socket_t fd, bool grow)
{
    if (fd < 0)
        return NULL;
    size_t i = (size_t)fd;
    if (i >= w->ncurl_fds) {
        if (!grow)
            return NULL;
        size_t n = w->ncurl_fds ? w->ncurl_fds : 256;
        while (n <= i)
            n *= 2;
        px_curl_fd_t *bigger = realloc(w->curl_fds, n * sizeof *bigger);
        if (bigger == NULL)
            return NULL;
        memset(bigger + w->ncurl_fds, 0, (n - w->ncurl_fds) * sizeof *bigger);
        w->curl_fds = bigger;
        w->ncurl_fds = n;
    }
    return &w->curl_fds[i];
}

/* Makes epfd watch fd for events: ADD or MOD as needed, nothing when it
 * already does. */
static int watch(px_worker_t *w, curl_socket_t fd, px_curl_fd_t *slot, uint32_t events)
{
    if (slot->in_set && slot->events == events)
        return 0;
    struct epoll_event ev = {.events = events};
    ev.data.fd = fd;
    int op = slot->in_set ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(w->epfd, op, fd, &ev) != 0) {
        /* the set disagrees with the slot (a socket closed behind our back) */
        op = errno == EEXIST ? EPOLL_CTL_MOD : errno == ENOENT ? EPOLL_CTL_ADD : -1;
        if (op < 0 || epoll_ctl(w->epfd, op, fd, &ev) != 0) {
            slot->in_set = false;
            return -1;
        }
    }
    slot->in_set = true;
    slot->events = events;
    return 0;
}

static void unwatch(px_worker_t *w, curl_socket_t fd, px_curl_fd_t *slot)
{
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, fd, NULL);
    if (slot)
        slot->in_set = slot->wanted = false;
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    (void)socketp;
    px_worker_t *w = userp;
    px_curl_fd_t *slot = curl_fd(w, fd, what != CURL_POLL_REMOVE);
    if (what == CURL_POLL_REMOVE) {
        /* Stays in the set: a kept-alive connection is likely reused soon. */
        if (slot)
            slot->wanted = false;
        else
            unwatch(w, fd, NULL);
        return 0;
    }
    uint32_t events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
    if (slot == NULL) { /* out of memory for the table: watched, not tracked */
        px_curl_fd_t untracked = {0};
        return watch(w, fd, &untracked, events);
    }
    slot->wanted = true;
    return watch(w, fd, slot, events);
}

int px_worker_close_socket(void *worker, curl_socket_t fd)
{
    px_curl_fd_t *slot = curl_fd(worker, fd, false);
    if (slot) /* closing takes the socket out of the epoll set */
        slot->in_set = slot->wanted = false;
    return close(fd);
}

/* An event on a socket no transfer watches (an idle kept-alive connection
 * the upstream closed, or bytes it should not have sent): out of the set;
 * curl checks the connection before it reuses it. True if so. */
static bool unwanted_event(px_worker_t *w, int fd)
{
    px_curl_fd_t *slot = curl_fd(w, fd, false);
    if (slot == NULL || slot->wanted)
        return false;
    unwatch(w, fd, slot);
    return true;
}

/* curl's timer is a deadline the loop waits for: no system call per update. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    px_worker_t *w = userp;
    w->curl_due_ms = timeout_ms < 0 ? -1 : px_now_us() / 1000 + timeout_ms;
    return 0;
}

CURL *px_worker_easy(px_worker_t *w)
{
    if (w->nidle_easy > 0)
        return w->idle_easy[--w->nidle_easy];
    CURL *e = curl_easy_init();
    if (e)
        px_upstream_easy_setup(e, w);
    return e;
}

/* An idle handle keeps the options every transfer shares (curl_easy_reset
 * and setting them again cost 1.5 % of the proxy's CPU); the pointers into
 * the finished request are cleared so that none dangles. */
void px_worker_easy_done(px_worker_t *w, CURL *easy)
{
    if (easy == NULL)
        return;
    if (w->nidle_easy < sizeof w->idle_easy / sizeof w->idle_easy[0]) {
        curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        curl_easy_setopt(easy, CURLOPT_HTTPHEADER, NULL);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, NULL);
        curl_easy_setopt(easy, CURLOPT_HEADERDATA, NULL);
        curl_easy_setopt(easy, CURLOPT_WRITEDATA, NULL);
        curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, NULL);
        w->idle_easy[w->nidle_easy++] = easy;
    } else {
        curl_easy_cleanup(easy);
    }
}

static void check_finished(px_worker_t *w)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(w->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        px_request_t *req = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&req);
        CURLcode result = msg->data.result;
        if (req)
            px_upstream_done(req, result);
    }
}

/* ---- MHD callbacks --------------------------------------------------------------------- */

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)conn;
    return px_request_new(cls, uri);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)url;
    (void)version;
    px_request_t *req = *con_cls;
    if (req == NULL)
        return MHD_NO;
    return px_request_handle(req, conn, method, upload, upload_size);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    px_request_t *req = *con_cls;
    if (req) {
        px_request_completed(req, toe);
        *con_cls = NULL;
    }
}

/* MHD's reports about agents' connections (resets, bad requests) are routine
 * on a proxy: debug level. */
static rl_log_level_t mhd_log_level = RL_LOG_DEBUG;

/* ---- the worker loop ------------------------------------------------------------------- */

static int64_t now_ms(void)
{
    return px_now_us() / 1000;
}

static int loop_timeout_ms(px_worker_t *w)
{
    long timeout = 1000;
    if (w->curl_due_ms >= 0) {
        int64_t wait = w->curl_due_ms - now_ms();
        if (wait < timeout)
            timeout = wait < 0 ? 0 : (long)wait;
    }
    MHD_UNSIGNED_LONG_LONG mhd_to;
    if (MHD_get_timeout(w->daemon, &mhd_to) == MHD_YES && (long)mhd_to < timeout)
        timeout = (long)mhd_to;
    if (w->pending) {
        int64_t wait = w->pending->due_ms - now_ms();
        if (wait < timeout)
            timeout = wait < 0 ? 0 : (long)wait;
    }
    return (int)timeout;
}

/* Picks up a newer configuration snapshot: one atomic read per loop, the
 * cache's lock only when the generation changed. */
static void refresh_snapshot(px_worker_t *w)
{
    px_cache_t *cache = w->engine->opts.cache;
    if (w->snap && px_snapshot_generation(w->snap) == px_cache_generation(cache))
        return;
    px_snapshot_t *fresh = px_cache_acquire(cache);
    if (fresh) {
        px_snapshot_release(w->snap);
        w->snap = fresh;
    }
}

static void *worker_main(void *arg)
{
    px_worker_t *w = arg;
    char name[16];
    snprintf(name, sizeof name, "px-worker-%u", w->index % 1000);
    pthread_setname_np(pthread_self(), name);
    struct epoll_event events[64];
    for (;;) {
        int n = epoll_wait(w->epfd, events, 64, loop_timeout_ms(w));
        if (n < 0 && errno != EINTR)
            break;
        refresh_snapshot(w);
        bool stop = false;
        for (int i = 0; i < n; i++) {
            void *tag = events[i].data.ptr;
            if (tag == &tag_mhd)
                continue; /* MHD_run below */
            if (tag == &tag_wake) {
                uint64_t v;
                if (read(w->wake_fd, &v, sizeof v) < 0) {
                    /* nothing to do: the eventfd is non-blocking */
                }
                stop = atomic_load(&w->engine->stopping);
                continue;
            }
            int fd = events[i].data.fd;
            if (unwanted_event(w, fd))
                continue;
            int mask = (events[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                       (events[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                       (events[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
            int running;
            curl_multi_socket_action(w->multi, fd, mask, &running);
        }
        if (w->curl_due_ms >= 0 && w->curl_due_ms <= now_ms()) {
            w->curl_due_ms = -1;
            int running;
            curl_multi_socket_action(w->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        check_finished(w);
        if (w->pending)
            px_upstream_run_pending(w, now_ms());
        MHD_run(w->daemon);
        if (stop && w->in_flight == 0)
            break;
    }
    return NULL;
}

/* ---- setup ----------------------------------------------------------------------------- */

static rl_status_t worker_init(px_engine_t *e, px_worker_t *w, struct sockaddr_storage *ss)
{
    w->engine = e;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->curl_due_ms = -1;
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    rl_buf_init(&w->scratch, 64 * 1024);
    if (w->epfd < 0 || w->wake_fd < 0)
        return rl_error(RL_ERR_IO, "epoll/eventfd: %s", strerror(errno));
    rl_status_t st = rl_hmac_new(e->opts.hash_key, 32, &w->key_hasher);
    if (st != RL_OK)
        return st;

    unsigned per_worker = e->opts.max_connections / e->nworkers;
    if (per_worker < 16)
        per_worker = 16;
    w->daemon = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO | MHD_USE_ERROR_LOG, 0, NULL,
        NULL, on_access, w,
        MHD_OPTION_EXTERNAL_LOGGER, rl_http_mhd_log, &mhd_log_level, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)ss, MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned int)1,
        MHD_OPTION_CONNECTION_LIMIT, per_worker, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)e->opts.max_header_bytes, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)e->opts.client_idle_timeout_s, MHD_OPTION_URI_LOG_CALLBACK, on_uri, w,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, w, MHD_OPTION_LISTEN_BACKLOG_SIZE,
        (unsigned int)1024, MHD_OPTION_END);
    if (w->daemon == NULL)
        return rl_error(RL_ERR_IO, "cannot listen on %s", e->opts.listen_addr);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(w->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    w->mhd_fd = di ? di->epoll_fd : -1;
    if (w->mhd_fd < 0)
        return rl_error(RL_ERR_IO, "no epoll fd from libmicrohttpd");

    w->multi = curl_multi_init();
    if (w->multi == NULL)
        return rl_error(RL_ERR_NOMEM, "curl multi");
    curl_multi_setopt(w->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(w->multi, CURLMOPT_SOCKETDATA, w);
    curl_multi_setopt(w->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(w->multi, CURLMOPT_TIMERDATA, w);
    curl_multi_setopt(w->multi, CURLMOPT_MAXCONNECTS, (long)(per_worker + 64));

    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.ptr = &tag_mhd;
    epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->mhd_fd, &ev);
    ev.data.ptr = &tag_wake;
    epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wake_fd, &ev);
    return RL_OK;
}

static void worker_free(px_worker_t *w)
{
    if (w->daemon)
        MHD_stop_daemon(w->daemon);
    px_snapshot_release(w->snap);
    while (w->nidle_easy > 0)
        curl_easy_cleanup(w->idle_easy[--w->nidle_easy]);
    if (w->multi)
        curl_multi_cleanup(w->multi); /* closes through px_worker_close_socket */
    free(w->curl_fds);
    rl_buf_free(&w->scratch);
    rl_hmac_free(w->key_hasher);
    px_request_pool_free(w);
    rl_dlp_scratch_destroy(w->dlp_scratch);
    if (w->epfd >= 0)
        close(w->epfd);
    if (w->wake_fd >= 0)
        close(w->wake_fd);
}

static void register_metrics(px_engine_t *e)
{
    rl_metrics_t *m = e->opts.metrics;
    rl_metrics_histogram(m, "renlayer_proxy_upstream_seconds",
                         "Upstream time of forwarded requests, first byte sent to last received",
                         NULL, RL_BUCKETS_LATENCY_SECONDS, RL_BUCKETS_LATENCY_SECONDS_N,
                         &e->m.upstream_seconds);
    rl_metrics_histogram(m, "renlayer_proxy_overhead_microseconds",
                         "Time the proxy itself adds to a request (total minus upstream)", NULL,
                         RL_BUCKETS_MICROSECONDS, RL_BUCKETS_MICROSECONDS_N, &e->m.overhead_us);
    rl_metrics_gauge(m, "renlayer_proxy_requests_in_flight", "Requests being handled now", NULL,
                     &e->m.in_flight);
    rl_metrics_counter(m, "renlayer_proxy_upstream_errors_total",
                       "Upstream attempts that failed (connect, timeout, 429, 5xx)", NULL,
                       &e->m.upstream_errors);
    rl_metrics_counter(m, "renlayer_proxy_retries_total",
                       "Upstream attempts after the first (fallbacks and retries)", NULL,
                       &e->m.retries);
    rl_metrics_counter(m, "renlayer_proxy_client_aborts_total",
                       "Requests whose client went away before the response ended", NULL,
                       &e->m.client_aborts);
    static const char *const help =
        "Requests decided other than ALLOWED, by trace status (policies and DLP)";
    rl_metrics_counter(m, "renlayer_proxy_decisions_total", help, "status=\"DENIED\"",
                       &e->m.denied);
    rl_metrics_counter(m, "renlayer_proxy_decisions_total", help, "status=\"FLAGGED\"",
                       &e->m.flagged);
    rl_metrics_counter(m, "renlayer_proxy_decisions_total", help, "status=\"DLP_BLOCKED\"",
                       &e->m.dlp_blocked);
    rl_metrics_counter(m, "renlayer_proxy_decisions_total", help, "status=\"DLP_WARNED\"",
                       &e->m.dlp_warned);
    rl_metrics_counter(m, "renlayer_proxy_policy_errors_total",
                       "Policy evaluations that failed and denied (fail closed)", NULL,
                       &e->m.policy_errors);
    rl_metrics_counter(m, "renlayer_proxy_dlp_errors_total",
                       "DLP scans that could not finish (a pattern's match limit, memory)", NULL,
                       &e->m.dlp_errors);
}

rl_status_t px_engine_start(const px_engine_options_t *opts, px_engine_t **out)
{
    struct sockaddr_storage ss;
    rl_status_t st = rl_net_parse_listen(opts->listen_addr, &ss);
    if (st != RL_OK)
        return st;
    px_engine_t *e = calloc(1, sizeof *e);
    if (e == NULL)
        return rl_error(RL_ERR_NOMEM, "engine");
    e->opts = *opts;
    if (e->opts.workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        e->opts.workers = n > 0 ? (unsigned)n : 1;
    }
    e->nworkers = e->opts.workers;
    pthread_mutex_init(&e->metrics_lock, NULL);
    register_metrics(e);
    e->workers = calloc(e->nworkers, sizeof *e->workers);
    if (e->workers == NULL) {
        free(e);
        return rl_error(RL_ERR_NOMEM, "workers");
    }
    for (unsigned i = 0; i < e->nworkers; i++) {
        e->workers[i].epfd = e->workers[i].wake_fd = -1;
        e->workers[i].index = i;
    }
    for (unsigned i = 0; i < e->nworkers && st == RL_OK; i++) {
        st = worker_init(e, &e->workers[i], &ss);
        if (st == RL_OK && i == 0) {
            /* port 0: the others join the port the first one got */
            const union MHD_DaemonInfo *di =
                MHD_get_daemon_info(e->workers[0].daemon, MHD_DAEMON_INFO_BIND_PORT);
            e->port = di ? di->port : 0;
            rl_net_set_port(&ss, e->port);
        }
    }
    for (unsigned i = 0; i < e->nworkers && st == RL_OK; i++) {
        if (pthread_create(&e->workers[i].thread, NULL, worker_main, &e->workers[i]) != 0)
            st = rl_error(RL_ERR_IO, "worker thread");
        else
            e->workers[i].engine = e;
    }
    if (st != RL_OK) {
        atomic_store(&e->stopping, true);
        for (unsigned i = 0; i < e->nworkers; i++) {
            if (e->workers[i].thread) {
                uint64_t one = 1;
                if (write(e->workers[i].wake_fd, &one, sizeof one) < 0) {
                    /* the worker wakes at its next timeout anyway */
                }
                pthread_join(e->workers[i].thread, NULL);
            }
            worker_free(&e->workers[i]);
        }
        free(e->workers);
        pthread_mutex_destroy(&e->metrics_lock);
        free(e);
        return st;
    }
    *out = e;
    return RL_OK;
}

unsigned px_engine_port(const px_engine_t *engine)
{
    return engine->port;
}

void px_engine_stop(px_engine_t *e, long drain_timeout_ms)
{
    if (e == NULL)
        return;
    /* stop accepting: every worker's listen socket closes, connections stay */
    for (unsigned i = 0; i < e->nworkers; i++)
        MHD_quiesce_daemon(e->workers[i].daemon);
    int64_t deadline = px_now_us() / 1000 + drain_timeout_ms;
    for (;;) {
        size_t busy = 0;
        for (unsigned i = 0; i < e->nworkers; i++)
            busy += e->workers[i].in_flight;
        if (busy == 0 || px_now_us() / 1000 >= deadline)
            break;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    atomic_store(&e->stopping, true);
    for (unsigned i = 0; i < e->nworkers; i++) {
        uint64_t one = 1;
        if (write(e->workers[i].wake_fd, &one, sizeof one) < 0) {
            /* the worker wakes at its next timeout anyway */
        }
    }
    for (unsigned i = 0; i < e->nworkers; i++) {
        pthread_join(e->workers[i].thread, NULL);
        worker_free(&e->workers[i]);
    }
    free(e->workers);
    pthread_mutex_destroy(&e->metrics_lock);
    free(e);
}
