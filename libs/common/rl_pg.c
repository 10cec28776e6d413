#include "rl_pg.h"
#include "rl_cond.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_BACKOFF_MIN_MS 100
#define DEFAULT_BACKOFF_MAX_MS 5000
#define DEFAULT_PING_TIMEOUT_MS 2000
#define DEFAULT_KEEPALIVE_IDLE_S 30
/* The listener's socket wait: the wake pipe makes destroy immediate, this
 * bound is a second line of defence. */
#define LISTENER_POLL_MS 500
/* A listener connection that lived this long was healthy: reconnect at once
 * after losing it instead of backing off. */
#define LISTENER_STABLE_MS 10000
#define ERRBUF 256

/* ---- time and randomness -------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static uint64_t rng_seed(const void *p)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t s = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)p;
    return s ? s : 0x2545F4914F6CDD1Dull;
}

/* xorshift64: jitter only, not cryptographic. */
static uint32_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return (uint32_t)(x >> 32);
}

/* A pause of 50..100% of backoff_ms, so that many clients losing the same
 * server do not come back in lockstep. */
static int jitter(uint64_t *rng, int backoff_ms)
{
    int half = backoff_ms / 2;
    return half + (int)(rng_next(rng) % (uint32_t)(backoff_ms - half + 1));
}

static int next_backoff(int backoff_ms, int max_ms)
{
    return backoff_ms > max_ms / 2 ? max_ms : backoff_ms * 2;
}

/* Length of s up to its first line break, for one-line error contexts. */
static int line_len(const char *s)
{
    if (!s)
        return 0;
    size_t n = strcspn(s, "\r\n");
    return n > INT_MAX ? INT_MAX : (int)n;
}

/* ---- waiting on sockets ----------------------------------------------------- */

enum { W_READY, W_TIMEOUT, W_WOKEN, W_ERROR };

/* Waits until fd has events, the absolute deadline (now_ms() clock; < 0: none)
 * passes, or wake_fd (-1: none) is readable. */
static int wait_fd(int fd, short events, int64_t deadline, int wake_fd)
{
    if (fd < 0)
        return W_ERROR;
    for (;;) {
        int timeout = -1;
        if (deadline >= 0) {
            int64_t left = deadline - now_ms();
            timeout = left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
        }
        struct pollfd p[2] = {{.fd = fd, .events = events}, {.fd = wake_fd, .events = POLLIN}};
        int n = poll(p, wake_fd >= 0 ? 2 : 1, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return W_ERROR;
        }
        if (wake_fd >= 0 && (p[1].revents & POLLIN))
            return W_WOKEN;
        if (n > 0 && p[0].revents)
            return W_READY;
        if (timeout == 0 || n == 0)
            return W_TIMEOUT;
    }
}

/* ---- connection parameters --------------------------------------------------- */

enum { CFG_MAX_PARAMS = 10 };

/* What a connection attempt needs; kw/val point into the struct itself, so it
 * never moves once initialised. */
typedef struct {
    rl_pg_options_t opts; /* every default resolved; application_name -> app_name */
    char *conninfo;
    char *app_name;
    char connect_timeout_s[16];
    char keepalives_idle_s[16];
    const char *kw[CFG_MAX_PARAMS + 1];
    const char *val[CFG_MAX_PARAMS + 1];
} conn_cfg_t;

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static rl_status_t resolve_opts(const rl_pg_options_t *in, rl_pg_options_t *out)
{
    rl_pg_options_t o = in ? *in : (rl_pg_options_t){0};
    if (o.connect_timeout_ms < 0 || o.backoff_min_ms < 0 || o.backoff_max_ms < 0 ||
        o.query_timeout_ms < 0 || o.ping_timeout_ms < 0 || o.keepalive_idle_s < 0)
        return rl_error(RL_ERR_INVALID, "rl_pg options must not be negative");
    if (!o.connect_timeout_ms)
        o.connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    if (!o.backoff_min_ms)
        o.backoff_min_ms = DEFAULT_BACKOFF_MIN_MS;
    if (!o.backoff_max_ms)
        o.backoff_max_ms =
            o.backoff_min_ms > DEFAULT_BACKOFF_MAX_MS ? o.backoff_min_ms : DEFAULT_BACKOFF_MAX_MS;
    if (!o.ping_timeout_ms)
        o.ping_timeout_ms = DEFAULT_PING_TIMEOUT_MS;
    if (!o.keepalive_idle_s)
        o.keepalive_idle_s = DEFAULT_KEEPALIVE_IDLE_S;
    if (o.backoff_min_ms > o.backoff_max_ms)
        return rl_error(RL_ERR_INVALID, "rl_pg backoff_min_ms %d exceeds backoff_max_ms %d",
                        o.backoff_min_ms, o.backoff_max_ms);
    *out = o;
    return RL_OK;
}

static bool conninfo_sets(const PQconninfoOption *o, const char *key)
{
    for (; o && o->keyword; o++)
        if (strcmp(o->keyword, key) == 0)
            return o->val && o->val[0];
    return false;
}

static void cfg_add(conn_cfg_t *c, size_t *n, const char *k, const char *v)
{
    c->kw[*n] = k;
    c->val[*n] = v;
    (*n)++;
}

static void cfg_free(conn_cfg_t *c)
{
    free(c->conninfo);
    free(c->app_name);
    memset(c, 0, sizeof *c);
}

/* Validates conninfo (without echoing it: it may hold a password) and builds
 * the parameter arrays: the conninfo first, expanded, then ours, which libpq
 * lets override it. Keepalive settings of the conninfo are kept. */
static rl_status_t cfg_init(conn_cfg_t *c, const char *conninfo, const rl_pg_options_t *opts)
{
    memset(c, 0, sizeof *c);
    if (!conninfo)
        return rl_error(RL_ERR_INVALID, "conninfo is NULL");
    rl_status_t s = resolve_opts(opts, &c->opts);
    if (s != RL_OK)
        return s;
    char *perr = NULL;
    PQconninfoOption *parsed = PQconninfoParse(conninfo, &perr);
    if (!parsed) {
        s = perr ? rl_error(RL_ERR_INVALID, "malformed conninfo: %.*s", line_len(perr), perr)
                 : rl_error(RL_ERR_NOMEM, "out of memory parsing conninfo");
        PQfreemem(perr);
        return s;
    }
    c->conninfo = dup_str(conninfo);
    c->app_name = c->opts.application_name ? dup_str(c->opts.application_name) : NULL;
    if (!c->conninfo || (c->opts.application_name && !c->app_name)) {
        PQconninfoFree(parsed);
        cfg_free(c);
        return rl_error(RL_ERR_NOMEM, "out of memory copying conninfo");
    }
    c->opts.application_name = c->app_name;
    int secs = (int)(((int64_t)c->opts.connect_timeout_ms + 999) / 1000);
    snprintf(c->connect_timeout_s, sizeof c->connect_timeout_s, "%d", secs < 2 ? 2 : secs);
    snprintf(c->keepalives_idle_s, sizeof c->keepalives_idle_s, "%d", c->opts.keepalive_idle_s);

    size_t n = 0;
    cfg_add(c, &n, "dbname", c->conninfo);
    cfg_add(c, &n, "connect_timeout", c->connect_timeout_s);
    cfg_add(c, &n, "fallback_application_name", "renlayer");
    if (c->app_name)
        cfg_add(c, &n, "application_name", c->app_name);
    if (!conninfo_sets(parsed, "keepalives"))
        cfg_add(c, &n, "keepalives", "1");
    if (!conninfo_sets(parsed, "keepalives_idle"))
        cfg_add(c, &n, "keepalives_idle", c->keepalives_idle_s);
    if (!conninfo_sets(parsed, "keepalives_interval"))
        cfg_add(c, &n, "keepalives_interval", "10");
    if (!conninfo_sets(parsed, "keepalives_count"))
        cfg_add(c, &n, "keepalives_count", "3");
    c->kw[n] = NULL;
    c->val[n] = NULL;
    PQconninfoFree(parsed);
    return RL_OK;
}

/* ---- libpq plumbing (no rl_error here: reasons go to the caller) ------------------ */

static void on_notice(void *arg, const PGresult *res);

/* One connection attempt bounded by timeout_ms, driven with PQconnectPoll so
 * that the bound holds whatever connect_timeout says and a readable wake_fd
 * (-1: none) abandons it. notice_arg is the rl_pg_t owning the connection, or
 * NULL. On failure the reason is written to err. */
static rl_status_t connect_once(const conn_cfg_t *c, int timeout_ms, int wake_fd, void *notice_arg,
                                PGconn **out, char *err, size_t errlen)
{
    PGconn *conn = PQconnectStartParams(c->kw, c->val, 1);
    if (!conn) {
        snprintf(err, errlen, "out of memory");
        return RL_ERR_NOMEM;
    }
    /* libpq's default prints notices to stderr; library code stays quiet */
    PQsetNoticeReceiver(conn, on_notice, notice_arg);
    int64_t deadline = now_ms() + timeout_ms;
    PostgresPollingStatusType st =
        PQstatus(conn) == CONNECTION_BAD ? PGRES_POLLING_FAILED : PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK) {
        if (st == PGRES_POLLING_FAILED) {
            const char *m = PQerrorMessage(conn);
            snprintf(err, errlen, "%.*s", line_len(m), m);
            PQfinish(conn);
            return RL_ERR_UNAVAILABLE;
        }
        if (st != PGRES_POLLING_ACTIVE) {
            int w = wait_fd(PQsocket(conn), st == PGRES_POLLING_READING ? POLLIN : POLLOUT,
                            deadline, wake_fd);
            if (w != W_READY) {
                if (w == W_TIMEOUT)
                    snprintf(err, errlen, "no connection within %d ms", timeout_ms);
                else if (w == W_WOKEN)
                    snprintf(err, errlen, "connection attempt abandoned");
                else
                    snprintf(err, errlen, "poll failed (errno %d)", errno);
                PQfinish(conn);
                return RL_ERR_UNAVAILABLE;
            }
        }
        st = PQconnectPoll(conn);
    }
    *out = conn;
    return RL_OK;
}

enum { RUN_DONE, RUN_NOT_SENT, RUN_TIMEOUT, RUN_WOKEN, RUN_COPY };

static bool result_ok(const PGresult *r)
{
    ExecStatusType s = PQresultStatus(r);
    return s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK || s == PGRES_EMPTY_QUERY;
}

/* Sends one statement (simple: the simple query protocol, several statements
 * allowed; else extended with text parameters) and collects every result
 * without ever blocking past deadline (< 0: none) or a readable wake_fd.
 * RUN_DONE leaves in *res (owned) the first error result, else the last
 * result, or NULL; the connection is then idle or broken. Other outcomes leave
 * the connection busy: the caller closes it. */
static int run_statement(PGconn *c, const char *sql, int nparams, const char *const *values,
                         bool simple, int64_t deadline, int wake_fd, PGresult **res)
{
    *res = NULL;
    int sent = simple ? PQsendQuery(c, sql)
                      : PQsendQueryParams(c, sql, nparams, NULL, values, NULL, NULL, 0);
    if (!sent)
        return RUN_NOT_SENT;
    PGresult *keep = NULL;
    for (;;) {
        while (PQisBusy(c)) {
            int w = wait_fd(PQsocket(c), POLLIN, deadline, wake_fd);
            if (w == W_TIMEOUT || w == W_WOKEN) {
                PQclear(keep);
                return w == W_TIMEOUT ? RUN_TIMEOUT : RUN_WOKEN;
            }
            /* on a read failure PQgetResult reports the broken connection at once */
            if (w == W_ERROR || !PQconsumeInput(c))
                break;
        }
        PGresult *r = PQgetResult(c);
        if (!r)
            break;
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            PQclear(r);
            PQclear(keep);
            return RUN_COPY;
        }
        if (keep && !result_ok(keep)) {
            PQclear(r);
        } else {
            PQclear(keep);
            keep = r;
        }
    }
    *res = keep;
    return RUN_DONE;
}

/* ---- the connection object --------------------------------------------------------- */

enum { LOST_TX = 1u, LOST_LOCKS = 2u };

struct rl_pg {
    conn_cfg_t cfg;
    PGconn *conn;                    /* NULL: connect on next use */
    PGTransactionStatusType last_tx; /* before the statement in flight, else after the last */
    bool goodbye;                    /* the server sent FATAL while we were idle */
    unsigned lost;                   /* LOST_*: session state that went with a connection */
    bool lost_in_flight;             /* the latest loss happened after a statement was sent */
    int locks_held;                  /* session advisory locks taken through rl_pg */
    uint64_t rng;
    char sqlstate[6];
};

/* Notices (warnings, and a FATAL that arrives while the connection is idle,
 * e.g. from pg_terminate_backend or a shutdown) come here instead of stderr.
 * The FATAL marks the connection as ending before its EOF is read. */
static void on_notice(void *arg, const PGresult *res)
{
    rl_pg_t *pg = arg;
    if (!pg)
        return;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (sev && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0))
        pg->goodbye = true;
}

/* Closes the connection, remembering which session state it took along. */
static void drop_conn(rl_pg_t *pg)
{
    if (!pg->conn)
        return;
    PGTransactionStatusType tx = PQtransactionStatus(pg->conn);
    if (tx == PQTRANS_UNKNOWN || tx == PQTRANS_ACTIVE)
        tx = pg->last_tx;
    if (tx == PQTRANS_INTRANS || tx == PQTRANS_INERROR)
        pg->lost |= LOST_TX;
    if (pg->locks_held > 0)
        pg->lost |= LOST_LOCKS;
    PQfinish(pg->conn);
    pg->conn = NULL;
    pg->goodbye = false;
    pg->last_tx = PQTRANS_IDLE;
}

/* A cheap liveness check before using the connection: reads (without
 * blocking) whatever the server sent while we were idle. */
static bool conn_alive(rl_pg_t *pg)
{
    if (PQstatus(pg->conn) != CONNECTION_OK || pg->goodbye)
        return false;
    if (PQtransactionStatus(pg->conn) == PQTRANS_ACTIVE)
        return true; /* a rl_pg_conn() user is mid-command: not ours to read */
    if (!PQconsumeInput(pg->conn))
        return false;
    (void)PQisBusy(pg->conn); /* parses what was read: a FATAL reaches on_notice */
    return PQstatus(pg->conn) == CONNECTION_OK && !pg->goodbye;
}

static rl_status_t lost_error(const rl_pg_t *pg)
{
    if (pg->lost & LOST_TX)
        return rl_error(RL_ERR_UNAVAILABLE, "the database connection was lost inside a "
                                            "transaction; call rl_pg_rollback before going on");
    return rl_error(RL_ERR_UNAVAILABLE,
                    "the database connection was lost while holding %d advisory lock(s); "
                    "call rl_pg_advisory_unlock for each, or rl_pg_reset",
                    pg->locks_held);
}

static rl_status_t install_conn(rl_pg_t *pg, PGconn *c)
{
    pg->conn = c;
    pg->goodbye = false;
    pg->last_tx = PQTRANS_IDLE;
    return RL_OK;
}

/* Leaves pg with a connection believed alive: drops a dead one, then makes
 * one attempt if none. Refuses while session state is lost unless
 * allow_lost (connecting runs no statement, so ping may). */
static rl_status_t ensure_ready(rl_pg_t *pg, int attempt_ms, bool allow_lost)
{
    if (pg->conn && !conn_alive(pg))
        drop_conn(pg);
    if (pg->lost && !allow_lost)
        return lost_error(pg);
    if (pg->conn)
        return RL_OK;
    char err[ERRBUF];
    PGconn *c = NULL;
    rl_status_t s = connect_once(&pg->cfg, attempt_ms, -1, pg, &c, err, sizeof err);
    if (s != RL_OK)
        return rl_error(s, "cannot connect to the database: %s", err);
    return install_conn(pg, c);
}

static bool sqlstate_is(const char *st, const char *want)
{
    return st && strncmp(st, want, strlen(want)) == 0;
}

/* The server ended the session: the statement did not commit. */
static bool server_goodbye(const char *st)
{
    return sqlstate_is(st, "08") || sqlstate_is(st, "57P01") || sqlstate_is(st, "57P02") ||
           sqlstate_is(st, "57P03");
}

static rl_status_t map_sqlstate(const char *st)
{
    if (server_goodbye(st))
        return RL_ERR_UNAVAILABLE;
    if (sqlstate_is(st, "23505") || sqlstate_is(st, "40001") || sqlstate_is(st, "40P01"))
        return RL_ERR_CONFLICT;
    if (sqlstate_is(st, "57014"))
        return RL_ERR_TIMEOUT;
    if (sqlstate_is(st, "22") || sqlstate_is(st, "23"))
        return RL_ERR_INVALID;
    return RL_ERR_IO;
}

/* Runs one statement on the current (live) connection and classifies the
 * outcome; *retry tells whether it provably did not take effect because the
 * connection went away. */
static rl_status_t exec_once(rl_pg_t *pg, const char *sql, int nparams, const char *const *values,
                             bool simple, int timeout_ms, PGresult **out, bool *retry)
{
    *retry = false;
    pg->lost_in_flight = false;
    pg->last_tx = PQtransactionStatus(pg->conn);
    PGresult *res = NULL;
    int64_t deadline = timeout_ms > 0 ? now_ms() + timeout_ms : -1;
    int r = run_statement(pg->conn, sql, nparams, values, simple, deadline, -1, &res);
    if (r == RUN_TIMEOUT || r == RUN_WOKEN) {
        drop_conn(pg);
        pg->lost_in_flight = true;
        return rl_error(RL_ERR_TIMEOUT,
                        "statement did not complete within %d ms; connection closed", timeout_ms);
    }
    if (r == RUN_COPY) {
        drop_conn(pg);
        return rl_error(RL_ERR_INVALID, "COPY is not supported here: use rl_pg_conn");
    }
    if (r == RUN_NOT_SENT) {
        char msg[ERRBUF];
        const char *m = PQerrorMessage(pg->conn);
        snprintf(msg, sizeof msg, "%.*s", line_len(m), m);
        bool bad = PQstatus(pg->conn) == CONNECTION_BAD;
        drop_conn(pg);
        if (!bad)
            return rl_error(RL_ERR_IO, "could not send statement: %s", msg);
        *retry = true;
        return rl_error(RL_ERR_UNAVAILABLE, "database connection lost: %s", msg);
    }
    if (res && result_ok(res)) {
        pg->last_tx = PQtransactionStatus(pg->conn);
        if (out)
            *out = res;
        else
            PQclear(res);
        return RL_OK;
    }

    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(pg->sqlstate, sizeof pg->sqlstate, "%s", st ? st : "");
    const char *m = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!m)
        m = res ? PQresultErrorMessage(res) : PQerrorMessage(pg->conn);
    char msg[ERRBUF];
    snprintf(msg, sizeof msg, "%.*s", line_len(m), m);
    bool broken = PQstatus(pg->conn) == CONNECTION_BAD;
    rl_status_t s = broken ? RL_ERR_UNAVAILABLE : map_sqlstate(st);
    PQclear(res);
    if (s == RL_ERR_UNAVAILABLE) {
        *retry = server_goodbye(pg->sqlstate);
        drop_conn(pg);
        pg->lost_in_flight = true;
        return rl_error(s, "database connection lost (SQLSTATE %s): %s",
                        pg->sqlstate[0] ? pg->sqlstate : "none", msg);
    }
    pg->last_tx = PQtransactionStatus(pg->conn);
    return rl_error(s, "SQLSTATE %s: %s", pg->sqlstate[0] ? pg->sqlstate : "none", msg);
}

/* Runs a statement, reconnecting first if needed and retrying once when the
 * connection went away before the statement could take effect (see the
 * header). */
static rl_status_t execute(rl_pg_t *pg, const char *sql, int nparams, const char *const *values,
                           bool simple, bool may_retry, PGresult **out)
{
    pg->lost_in_flight = false;
    for (int attempt = 0;; attempt++) {
        pg->sqlstate[0] = '\0';
        rl_status_t s = ensure_ready(pg, pg->cfg.opts.connect_timeout_ms, false);
        if (s != RL_OK)
            return s;
        bool retry = false;
        s = exec_once(pg, sql, nparams, values, simple, pg->cfg.opts.query_timeout_ms, out, &retry);
        if (s == RL_OK || !retry || !may_retry || attempt > 0 || pg->lost)
            return s;
    }
}

rl_status_t rl_pg_create(const char *conninfo, const rl_pg_options_t *opts, rl_pg_t **out)
{
    if (!out)
        return rl_error(RL_ERR_INVALID, "rl_pg_create: out is NULL");
    rl_pg_t *pg = calloc(1, sizeof *pg);
    if (!pg)
        return rl_error(RL_ERR_NOMEM, "out of memory creating rl_pg");
    rl_status_t s = cfg_init(&pg->cfg, conninfo, opts);
    if (s != RL_OK) {
        free(pg);
        return s;
    }
    pg->last_tx = PQTRANS_IDLE;
    pg->rng = rng_seed(pg);
    *out = pg;
    return RL_OK;
}

void rl_pg_destroy(rl_pg_t *pg)
{
    if (!pg)
        return;
    if (pg->conn)
        PQfinish(pg->conn);
    cfg_free(&pg->cfg);
    free(pg);
}

rl_status_t rl_pg_connect(rl_pg_t *pg, int deadline_ms)
{
    if (!pg)
        return rl_error(RL_ERR_INVALID, "rl_pg_connect: pg is NULL");
    if (pg->conn && conn_alive(pg))
        return RL_OK;
    drop_conn(pg);
    const rl_pg_options_t *o = &pg->cfg.opts;
    int64_t end = now_ms() + (deadline_ms > 0 ? deadline_ms : 0);
    int backoff = o->backoff_min_ms;
    char err[ERRBUF];
    for (;;) {
        int64_t left = end - now_ms();
        int t = o->connect_timeout_ms;
        if (deadline_ms > 0 && left < t)
            t = left < 1 ? 1 : (int)left;
        PGconn *c = NULL;
        rl_status_t s = connect_once(&pg->cfg, t, -1, pg, &c, err, sizeof err);
        if (s == RL_OK)
            return install_conn(pg, c);
        if (s != RL_ERR_UNAVAILABLE)
            return rl_error(s, "cannot connect to the database: %s", err);
        left = end - now_ms();
        if (left > 0) {
            int pause = jitter(&pg->rng, backoff);
            sleep_ms(pause < left ? pause : (int)left);
            backoff = next_backoff(backoff, o->backoff_max_ms);
        }
        if (now_ms() >= end)
            return rl_error(RL_ERR_UNAVAILABLE, "no database connection within %d ms: %s",
                            deadline_ms > 0 ? deadline_ms : 0, err);
    }
}

bool rl_pg_is_connected(const rl_pg_t *pg)
{
    return pg && pg->conn && PQstatus(pg->conn) == CONNECTION_OK && !pg->goodbye;
}

rl_status_t rl_pg_query(rl_pg_t *pg, const char *sql, int nparams, const char *const *values,
                        PGresult **out)
{
    if (!pg || !sql || !out || nparams < 0 || (nparams > 0 && !values))
        return rl_error(RL_ERR_INVALID, "rl_pg_query: bad arguments");
    return execute(pg, sql, nparams, values, false, true, out);
}

rl_status_t rl_pg_exec_simple(rl_pg_t *pg, const char *sql)
{
    if (!pg || !sql)
        return rl_error(RL_ERR_INVALID, "rl_pg_exec_simple: bad arguments");
    return execute(pg, sql, 0, NULL, true, false, NULL);
}

rl_status_t rl_pg_begin(rl_pg_t *pg)
{
    if (!pg)
        return rl_error(RL_ERR_INVALID, "rl_pg_begin: pg is NULL");
    if (rl_pg_is_connected(pg) && PQtransactionStatus(pg->conn) != PQTRANS_IDLE)
        return rl_error(RL_ERR_CONFLICT, "a transaction is already open");
    return execute(pg, "BEGIN", 0, NULL, false, true, NULL);
}

rl_status_t rl_pg_commit(rl_pg_t *pg)
{
    if (!pg)
        return rl_error(RL_ERR_INVALID, "rl_pg_commit: pg is NULL");
    pg->sqlstate[0] = '\0';
    if (pg->conn && !conn_alive(pg))
        drop_conn(pg);
    if (pg->lost & LOST_TX) {
        pg->lost &= ~LOST_TX;
        return rl_error(RL_ERR_UNAVAILABLE, "the database connection was lost inside the "
                                            "transaction: nothing was committed");
    }
    if (!pg->conn || PQtransactionStatus(pg->conn) == PQTRANS_IDLE)
        return rl_error(RL_ERR_CONFLICT, "no transaction is open");
    PGresult *res = NULL;
    rl_status_t s = execute(pg, "COMMIT", 0, NULL, false, false, &res);
    if (pg->lost & LOST_TX) {
        pg->lost &= ~LOST_TX;
        return rl_error(RL_ERR_UNAVAILABLE, "the database connection was lost %s",
                        pg->lost_in_flight ? "during COMMIT: the outcome is unknown"
                                           : "inside the transaction: nothing was committed");
    }
    if (s != RL_OK)
        return s;
    bool rolled_back = strcmp(PQcmdStatus(res), "ROLLBACK") == 0;
    PQclear(res);
    if (rolled_back)
        return rl_error(RL_ERR_CONFLICT, "the transaction had failed and was rolled back");
    return RL_OK;
}

rl_status_t rl_pg_rollback(rl_pg_t *pg)
{
    if (!pg)
        return rl_error(RL_ERR_INVALID, "rl_pg_rollback: pg is NULL");
    pg->sqlstate[0] = '\0';
    if (pg->lost & LOST_TX) {
        pg->lost &= ~LOST_TX;
        return RL_OK;
    }
    if (!pg->conn || PQtransactionStatus(pg->conn) == PQTRANS_IDLE)
        return RL_OK;
    rl_status_t s = execute(pg, "ROLLBACK", 0, NULL, false, false, NULL);
    if (pg->lost & LOST_TX) { /* the server rolls back a session that goes away */
        pg->lost &= ~LOST_TX;
        return RL_OK;
    }
    return s;
}

rl_status_t rl_pg_ping(rl_pg_t *pg, int timeout_ms)
{
    if (!pg)
        return rl_error(RL_ERR_INVALID, "rl_pg_ping: pg is NULL");
    pg->sqlstate[0] = '\0';
    if (timeout_ms <= 0)
        timeout_ms = pg->cfg.opts.ping_timeout_ms;
    int64_t end = now_ms() + timeout_ms;
    int attempt =
        timeout_ms < pg->cfg.opts.connect_timeout_ms ? timeout_ms : pg->cfg.opts.connect_timeout_ms;
    rl_status_t s = ensure_ready(pg, attempt, true);
    if (s != RL_OK)
        return s;
    int64_t left = end - now_ms();
    bool retry;
    return exec_once(pg, "SELECT 1", 0, NULL, false, left < 1 ? 1 : (int)left, NULL, &retry);
}

void rl_pg_reset(rl_pg_t *pg)
{
    if (!pg)
        return;
    if (pg->conn)
        PQfinish(pg->conn);
    pg->conn = NULL;
    pg->goodbye = false;
    pg->lost = 0;
    pg->lost_in_flight = false;
    pg->locks_held = 0;
    pg->last_tx = PQTRANS_IDLE;
    pg->sqlstate[0] = '\0';
}

PGconn *rl_pg_conn(rl_pg_t *pg)
{
    return pg ? pg->conn : NULL;
}

const char *rl_pg_sqlstate(const rl_pg_t *pg)
{
    return pg ? pg->sqlstate : "";
}

/* ---- advisory locks ------------------------------------------------------------ */

static rl_status_t advisory(rl_pg_t *pg, const char *sql, int64_t key, bool *result)
{
    char kbuf[24];
    snprintf(kbuf, sizeof kbuf, "%" PRId64, key);
    const char *v[1] = {kbuf};
    PGresult *res = NULL;
    rl_status_t s = execute(pg, sql, 1, v, false, true, &res);
    if (s != RL_OK)
        return s;
    if (result)
        *result = PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    return RL_OK;
}

rl_status_t rl_pg_advisory_lock(rl_pg_t *pg, int64_t key)
{
    if (!pg)
        return rl_error(RL_ERR_INVALID, "rl_pg_advisory_lock: pg is NULL");
    rl_status_t s = advisory(pg, "SELECT pg_advisory_lock($1::bigint)", key, NULL);
    if (s == RL_OK)
        pg->locks_held++;
    return s;
}

rl_status_t rl_pg_advisory_try_lock(rl_pg_t *pg, int64_t key, bool *acquired)
{
    if (!pg || !acquired)
        return rl_error(RL_ERR_INVALID, "rl_pg_advisory_try_lock: bad arguments");
    bool got = false;
    rl_status_t s = advisory(pg, "SELECT pg_try_advisory_lock($1::bigint)", key, &got);
    if (s != RL_OK)
        return s;
    if (got)
        pg->locks_held++;
    *acquired = got;
    return RL_OK;
}

rl_status_t rl_pg_advisory_unlock(rl_pg_t *pg, int64_t key)
{
    if (!pg)
        return rl_error(RL_ERR_INVALID, "rl_pg_advisory_unlock: pg is NULL");
    if (!(pg->lost & LOST_LOCKS)) {
        bool released = false;
        rl_status_t s = advisory(pg, "SELECT pg_advisory_unlock($1::bigint)", key, &released);
        if (s == RL_OK) {
            if (!released)
                return rl_error(RL_ERR_NOT_FOUND,
                                "advisory lock %" PRId64 " is not held by this session", key);
            if (pg->locks_held > 0)
                pg->locks_held--;
            return RL_OK;
        }
        if (!(pg->lost & LOST_LOCKS))
            return s;
    }
    /* the lock went with the connection: this call acknowledges one */
    if (pg->locks_held > 0)
        pg->locks_held--;
    if (pg->locks_held == 0)
        pg->lost &= ~LOST_LOCKS;
    return rl_error(RL_ERR_UNAVAILABLE,
                    "advisory lock %" PRId64 " was lost with the database connection", key);
}

/* ---- pool ----------------------------------------------------------------------- */

struct rl_pg_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    int size;
    int in_use;
    int waiting;
    uint64_t timeouts;
    int ping_timeout_ms;
    rl_pg_t **conns; /* immutable after create */
    bool *busy;
};

rl_status_t rl_pg_pool_create(const char *conninfo, int size, const rl_pg_options_t *opts,
                              rl_pg_pool_t **out)
{
    if (!out || size < 1 || size > RL_PG_POOL_MAX)
        return rl_error(RL_ERR_INVALID, "rl_pg_pool_create: size %d not in 1..%d", size,
                        RL_PG_POOL_MAX);
    rl_pg_pool_t *p = calloc(1, sizeof *p);
    if (!p)
        return rl_error(RL_ERR_NOMEM, "out of memory creating a pool");
    p->conns = calloc((size_t)size, sizeof *p->conns);
    p->busy = calloc((size_t)size, sizeof *p->busy);
    if (!p->conns || !p->busy) {
        free(p->conns);
        free(p->busy);
        free(p);
        return rl_error(RL_ERR_NOMEM, "out of memory creating a pool");
    }
    p->size = size;
    rl_status_t s = RL_OK;
    for (int i = 0; i < size && s == RL_OK; i++)
        s = rl_pg_create(conninfo, opts, &p->conns[i]);
    if (s == RL_OK) {
        p->ping_timeout_ms = p->conns[0]->cfg.opts.ping_timeout_ms;
        if (rl_cond_init(&p->cv) != 0) {
            s = rl_error(RL_ERR_NOMEM, "pthread_cond_init failed");
        } else if (pthread_mutex_init(&p->mu, NULL) != 0) {
            pthread_cond_destroy(&p->cv);
            s = rl_error(RL_ERR_NOMEM, "pthread_mutex_init failed");
        }
    }
    if (s != RL_OK) {
        for (int i = 0; i < size; i++)
            rl_pg_destroy(p->conns[i]);
        free(p->conns);
        free(p->busy);
        free(p);
        return s;
    }
    *out = p;
    return RL_OK;
}

void rl_pg_pool_destroy(rl_pg_pool_t *pool)
{
    if (!pool)
        return;
    for (int i = 0; i < pool->size; i++)
        rl_pg_destroy(pool->conns[i]);
    pthread_cond_destroy(&pool->cv);
    pthread_mutex_destroy(&pool->mu);
    free(pool->conns);
    free(pool->busy);
    free(pool);
}

rl_status_t rl_pg_pool_acquire(rl_pg_pool_t *pool, int wait_ms, rl_pg_t **out)
{
    if (!pool || !out || wait_ms < 0)
        return rl_error(RL_ERR_INVALID, "rl_pg_pool_acquire: bad arguments");
    struct timespec until = rl_cond_deadline(wait_ms);
    pthread_mutex_lock(&pool->mu);
    while (pool->in_use == pool->size) {
        int rc = 0;
        if (wait_ms > 0) {
            pool->waiting++;
            rc = pthread_cond_timedwait(&pool->cv, &pool->mu, &until);
            pool->waiting--;
        }
        if ((wait_ms == 0 || rc == ETIMEDOUT) && pool->in_use == pool->size) {
            pool->timeouts++;
            pthread_mutex_unlock(&pool->mu);
            return rl_error(RL_ERR_TIMEOUT, "no database connection free within %d ms", wait_ms);
        }
    }
    /* the lowest free slot: connections at the front stay warm */
    int i = 0;
    while (pool->busy[i])
        i++;
    pool->busy[i] = true;
    pool->in_use++;
    pthread_mutex_unlock(&pool->mu);
    *out = pool->conns[i];
    return RL_OK;
}

/* Leaves a released connection as a new user expects it: idle, outside a
 * transaction, holding nothing. Uses libpq directly so that the caller's
 * rl_error context survives. */
static void pool_scrub(rl_pg_t *pg, int timeout_ms)
{
    if (pg->lost || pg->locks_held > 0) {
        rl_pg_reset(pg);
        return;
    }
    pg->sqlstate[0] = '\0';
    if (!pg->conn)
        return;
    if (PQstatus(pg->conn) != CONNECTION_OK || pg->goodbye) {
        rl_pg_reset(pg);
        return;
    }
    PGTransactionStatusType tx = PQtransactionStatus(pg->conn);
    if (tx == PQTRANS_IDLE)
        return;
    if (tx == PQTRANS_INTRANS || tx == PQTRANS_INERROR) {
        PGresult *res = NULL;
        int r =
            run_statement(pg->conn, "ROLLBACK", 0, NULL, false, now_ms() + timeout_ms, -1, &res);
        bool ok = r == RUN_DONE && res && PQresultStatus(res) == PGRES_COMMAND_OK &&
                  PQtransactionStatus(pg->conn) == PQTRANS_IDLE;
        PQclear(res);
        if (ok) {
            pg->last_tx = PQTRANS_IDLE;
            return;
        }
    }
    rl_pg_reset(pg);
}

void rl_pg_pool_release(rl_pg_pool_t *pool, rl_pg_t *pg)
{
    if (!pool || !pg)
        return;
    int i = 0;
    while (i < pool->size && pool->conns[i] != pg)
        i++;
    if (i == pool->size)
        return;
    pthread_mutex_lock(&pool->mu);
    bool held = pool->busy[i];
    pthread_mutex_unlock(&pool->mu);
    if (!held)
        return;
    pool_scrub(pg, pool->ping_timeout_ms);
    pthread_mutex_lock(&pool->mu);
    if (pool->busy[i]) {
        pool->busy[i] = false;
        pool->in_use--;
        pthread_cond_signal(&pool->cv);
    }
    pthread_mutex_unlock(&pool->mu);
}

void rl_pg_pool_stats(rl_pg_pool_t *pool, rl_pg_pool_stats_t *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!pool)
        return;
    pthread_mutex_lock(&pool->mu);
    out->size = pool->size;
    out->in_use = pool->in_use;
    out->waiting = pool->waiting;
    out->timeouts = pool->timeouts;
    pthread_mutex_unlock(&pool->mu);
}

/* ---- LISTEN/NOTIFY listener ------------------------------------------------------------ */

struct rl_pg_listener {
    conn_cfg_t cfg;
    char **channels;
    size_t n;
    rl_pg_listener_callbacks_t cb;
    void *ctx;
    int wake[2]; /* a byte in wake[1] stops every wait of the thread */
    pthread_t thread;
    atomic_bool stop;
    atomic_bool connected;
    uint64_t rng;
};

static bool valid_channel(const char *s)
{
    if (!s)
        return false;
    size_t n = strnlen(s, RL_PG_CHANNEL_MAX + 1);
    if (n == 0 || n > RL_PG_CHANNEL_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        bool other = (c >= '0' && c <= '9') || c == '.' || c == '$';
        if (!letter && (i == 0 || !other))
            return false;
    }
    return true;
}

/* LISTENs on every channel, each name quoted by libpq. */
static bool listen_all(rl_pg_listener_t *l, PGconn *c)
{
    int64_t deadline = now_ms() + l->cfg.opts.connect_timeout_ms;
    for (size_t i = 0; i < l->n; i++) {
        char *id = PQescapeIdentifier(c, l->channels[i], strlen(l->channels[i]));
        if (!id)
            return false;
        char sql[2 * RL_PG_CHANNEL_MAX + 16];
        int len = snprintf(sql, sizeof sql, "LISTEN %s", id);
        PQfreemem(id);
        if (len < 0 || (size_t)len >= sizeof sql)
            return false;
        PGresult *res = NULL;
        int r = run_statement(c, sql, 0, NULL, true, deadline, l->wake[0], &res);
        bool ok = r == RUN_DONE && res && PQresultStatus(res) == PGRES_COMMAND_OK;
        PQclear(res);
        if (!ok)
            return false;
    }
    return true;
}

/* Delivers notifications until the connection breaks or stop is asked. */
static void pump(rl_pg_listener_t *l, PGconn *c)
{
    while (!atomic_load(&l->stop)) {
        int w = wait_fd(PQsocket(c), POLLIN, now_ms() + LISTENER_POLL_MS, l->wake[0]);
        if (w == W_WOKEN || w == W_ERROR)
            return;
        bool ok = w == W_TIMEOUT || PQconsumeInput(c);
        PGnotify *nf;
        while ((nf = PQnotifies(c)) != NULL) {
            if (!atomic_load(&l->stop))
                l->cb.on_notify(nf->relname, nf->extra ? nf->extra : "", l->ctx);
            PQfreemem(nf);
        }
        if (!ok || PQstatus(c) != CONNECTION_OK)
            return;
    }
}

/* Waits ms or until stop is asked. */
static void pause_or_stop(rl_pg_listener_t *l, int ms)
{
    struct pollfd p = {.fd = l->wake[0], .events = POLLIN};
    int64_t end = now_ms() + ms;
    for (int64_t left = ms; left > 0 && !atomic_load(&l->stop); left = end - now_ms())
        if (poll(&p, 1, (int)left) > 0)
            return;
}

static void *listener_main(void *arg)
{
    rl_pg_listener_t *l = arg;
    pthread_setname_np(pthread_self(), "rl-pg-listen");
    const rl_pg_options_t *o = &l->cfg.opts;
    int backoff = o->backoff_min_ms;
    while (!atomic_load(&l->stop)) {
        char err[ERRBUF];
        PGconn *c = NULL;
        if (connect_once(&l->cfg, o->connect_timeout_ms, l->wake[0], NULL, &c, err, sizeof err) ==
            RL_OK) {
            if (listen_all(l, c)) {
                int64_t since = now_ms();
                atomic_store(&l->connected, true);
                if (l->cb.on_connected && !atomic_load(&l->stop))
                    l->cb.on_connected(l->ctx);
                pump(l, c);
                atomic_store(&l->connected, false);
                PQfinish(c);
                if (atomic_load(&l->stop))
                    break;
                if (l->cb.on_disconnected)
                    l->cb.on_disconnected(l->ctx);
                if (now_ms() - since >= LISTENER_STABLE_MS) {
                    backoff = o->backoff_min_ms;
                    continue;
                }
            } else {
                PQfinish(c);
            }
        }
        pause_or_stop(l, jitter(&l->rng, backoff));
        backoff = next_backoff(backoff, o->backoff_max_ms);
    }
    return NULL;
}

static void listener_free(rl_pg_listener_t *l)
{
    for (size_t i = 0; l->channels && i < l->n; i++)
        free(l->channels[i]);
    free(l->channels);
    if (l->wake[0] >= 0)
        close(l->wake[0]);
    if (l->wake[1] >= 0)
        close(l->wake[1]);
    cfg_free(&l->cfg);
    free(l);
}

rl_status_t rl_pg_listener_create(const char *conninfo, const char *const *channels, size_t n,
                                  const rl_pg_listener_callbacks_t *cb, void *ctx,
                                  rl_pg_listener_t **out)
{
    if (!out || !cb || !cb->on_notify || !channels || n == 0 || n > RL_PG_LISTENER_MAX_CHANNELS)
        return rl_error(RL_ERR_INVALID, "rl_pg_listener_create: bad arguments (%zu channels)", n);
    for (size_t i = 0; i < n; i++)
        if (!valid_channel(channels[i]))
            return rl_error(RL_ERR_INVALID, "invalid LISTEN channel name (index %zu)", i);
    rl_pg_listener_t *l = calloc(1, sizeof *l);
    if (!l)
        return rl_error(RL_ERR_NOMEM, "out of memory creating a listener");
    l->wake[0] = l->wake[1] = -1;
    rl_status_t s = cfg_init(&l->cfg, conninfo, NULL);
    if (s != RL_OK) {
        free(l);
        return s;
    }
    l->channels = calloc(n, sizeof *l->channels);
    if (!l->channels) {
        listener_free(l);
        return rl_error(RL_ERR_NOMEM, "out of memory creating a listener");
    }
    l->n = n;
    for (size_t i = 0; i < n; i++) {
        l->channels[i] = dup_str(channels[i]);
        if (!l->channels[i]) {
            listener_free(l);
            return rl_error(RL_ERR_NOMEM, "out of memory creating a listener");
        }
    }
    if (pipe2(l->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        int e = errno;
        l->wake[0] = l->wake[1] = -1;
        listener_free(l);
        return rl_error(RL_ERR_IO, "pipe2 failed (errno %d)", e);
    }
    l->cb = *cb;
    l->ctx = ctx;
    l->rng = rng_seed(l);
    atomic_init(&l->stop, false);
    atomic_init(&l->connected, false);

    /* the thread takes no signals: they belong to the service's main loop */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&l->thread, NULL, listener_main, l);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        listener_free(l);
        return rl_error(RL_ERR_IO, "pthread_create failed (%d)", rc);
    }
    *out = l;
    return RL_OK;
}

void rl_pg_listener_destroy(rl_pg_listener_t *listener)
{
    if (!listener)
        return;
    atomic_store(&listener->stop, true);
    ssize_t w;
    do
        w = write(listener->wake[1], "x", 1);
    while (w < 0 && errno == EINTR);
    pthread_join(listener->thread, NULL);
    listener_free(listener);
}

bool rl_pg_listener_is_connected(const rl_pg_listener_t *listener)
{
    return listener && atomic_load(&listener->connected);
}

/* ---- reading results ---- */

static bool parse_i64(const char *s, int64_t *out)
{
    if (s == NULL || *s == '\0')
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

uint64_t rl_pg_rows_affected(const PGresult *r)
{
    int64_t n = 0;
    return r && parse_i64(PQcmdTuples((PGresult *)r), &n) && n > 0 ? (uint64_t)n : 0;
}

bool rl_pg_get_i64(const PGresult *r, int row, int col, int64_t *out)
{
    if (r == NULL || row < 0 || col < 0 || row >= PQntuples(r) || col >= PQnfields(r) ||
        PQgetisnull(r, row, col))
        return false;
    return parse_i64(PQgetvalue(r, row, col), out);
}
