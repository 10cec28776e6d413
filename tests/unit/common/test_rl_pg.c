/* Tests of libs/common/rl_pg.c against a private PostgreSQL 15 that the test
 * starts itself (tests/harness/pg.sh) in a temporary folder on a free port. */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "rl_pg.h"
#include "rl_test_servers.h"

/* Every wait on the server is bounded by this. */
#define WAIT_MS 15000

static struct {
    rl_test_pg_t *pg; /* the server, started by the tests that need it */
    const char *url;
} g;

/* ---- helpers ------------------------------------------------------------------ */

static void require_server(void)
{
    assert_int_equal(rl_test_pg_start(g.pg), RL_OK);
}

static rl_pg_t *new_pg(const char *app)
{
    rl_pg_options_t o = {.application_name = app, .backoff_min_ms = 20, .backoff_max_ms = 200};
    rl_pg_t *pg = NULL;
    assert_int_equal(rl_pg_create(g.url, &o, &pg), RL_OK);
    assert_int_equal(rl_pg_connect(pg, WAIT_MS), RL_OK);
    return pg;
}

/* The first column of the first row as text ("" for NULL) into buf. */
static rl_status_t scalar(rl_pg_t *pg, const char *sql, int n, const char *const *v, char *buf,
                          size_t len)
{
    PGresult *res = NULL;
    rl_status_t s = rl_pg_query(pg, sql, n, v, &res);
    if (s != RL_OK)
        return s;
    snprintf(buf, len, "%s", PQntuples(res) > 0 ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
    return RL_OK;
}

static long backend_pid(rl_pg_t *pg)
{
    char buf[32];
    assert_int_equal(scalar(pg, "SELECT pg_backend_pid()", 0, NULL, buf, sizeof buf), RL_OK);
    return strtol(buf, NULL, 10);
}

typedef struct {
    rl_pg_t *admin;
    const char *sql;
    const char *arg;
    const char *want;
} probe_t;

/* True when the admin query's scalar equals want. */
static bool probe(void *arg)
{
    probe_t *p = arg;
    char buf[64];
    const char *v[1] = {p->arg};
    return scalar(p->admin, p->sql, p->arg ? 1 : 0, v, buf, sizeof buf) == RL_OK &&
           strcmp(buf, p->want) == 0;
}

/* Terminates backend pid and waits until it has exited. */
static void kill_backend(rl_pg_t *admin, long pid)
{
    char ps[24];
    snprintf(ps, sizeof ps, "%ld", pid);
    const char *v[1] = {ps};
    char buf[8];
    assert_int_equal(scalar(admin, "SELECT pg_terminate_backend($1::int)", 1, v, buf, sizeof buf),
                     RL_OK);
    assert_string_equal(buf, "t");
    probe_t p = {admin, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int", ps, "0"};
    assert_true(rl_test_wait_until(probe, &p, WAIT_MS));
}

/* ---- group setup --------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    if (rl_test_pg_create("rl_pg_test", &g.pg) != RL_OK) {
        fprintf(stderr, "test_rl_pg: %s\n", rl_error_last());
        return -1;
    }
    g.url = rl_test_pg_url(g.pg);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    rl_test_pg_destroy(g.pg);
    return 0;
}

/* ---- tests -------------------------------------------------------------------------- */

static void test_create_rejects_bad_input(void **state)
{
    (void)state;
    rl_pg_t *pg = (rl_pg_t *)&g; /* must stay untouched */
    assert_int_equal(rl_pg_create("not a conninfo", NULL, &pg), RL_ERR_INVALID);
    assert_ptr_equal(pg, (rl_pg_t *)&g);
    rl_pg_options_t o = {.backoff_min_ms = 500, .backoff_max_ms = 100};
    assert_int_equal(rl_pg_create(g.url, &o, &pg), RL_ERR_INVALID);
    o = (rl_pg_options_t){.query_timeout_ms = -1};
    assert_int_equal(rl_pg_create(g.url, &o, &pg), RL_ERR_INVALID);
    assert_int_equal(rl_pg_create(NULL, NULL, &pg), RL_ERR_INVALID);
    assert_ptr_equal(pg, (rl_pg_t *)&g);
    rl_pg_destroy(NULL);
    rl_pg_pool_destroy(NULL);
    rl_pg_listener_destroy(NULL);
}

/* Created while the server is down; connects once the server comes up. */
static void test_create_before_server_then_connect(void **state)
{
    (void)state;
    assert_false(rl_test_pg_running(g.pg));
    rl_pg_options_t o = {.application_name = "rl_test_pg",
                         .connect_timeout_ms = 2000,
                         .backoff_min_ms = 20,
                         .backoff_max_ms = 200};
    rl_pg_t *pg = NULL;
    assert_int_equal(rl_pg_create(g.url, &o, &pg), RL_OK);
    assert_false(rl_pg_is_connected(pg));
    assert_null(rl_pg_conn(pg));

    PGresult *res = NULL;
    assert_int_equal(rl_pg_query(pg, "SELECT 1", 0, NULL, &res), RL_ERR_UNAVAILABLE);
    assert_null(res);
    assert_int_not_equal(rl_pg_ping(pg, 500), RL_OK);

    int64_t t0 = rl_test_now_ms();
    assert_int_equal(rl_pg_connect(pg, 300), RL_ERR_UNAVAILABLE);
    int64_t took = rl_test_now_ms() - t0;
    assert_true(took >= 250 && took < 3000);

    /* the server starts while rl_pg_connect backs off and retries */
    assert_int_equal(rl_test_pg_start_async(g.pg), RL_OK);
    assert_int_equal(rl_pg_connect(pg, 45000), RL_OK);
    assert_int_equal(rl_test_pg_start_wait(g.pg), RL_OK);
    assert_true(rl_pg_is_connected(pg));
    assert_non_null(rl_pg_conn(pg));
    assert_int_equal(rl_pg_ping(pg, 0), RL_OK);

    char buf[64];
    assert_int_equal(
        scalar(pg, "SELECT current_setting('application_name')", 0, NULL, buf, sizeof buf), RL_OK);
    assert_string_equal(buf, "rl_test_pg");
    assert_int_equal(scalar(pg,
                            "SELECT count(*) FROM pg_stat_activity WHERE pid = pg_backend_pid() "
                            "AND client_addr IS NOT NULL",
                            0, NULL, buf, sizeof buf),
                     RL_OK);
    assert_string_equal(buf, "1");
    rl_pg_destroy(pg);
}

static void test_params_are_stored_verbatim(void **state)
{
    (void)state;
    require_server();
    rl_pg_t *pg = new_pg("rl_test_params");
    assert_int_equal(rl_pg_exec_simple(pg, "DROP TABLE IF EXISTS rl_t;"
                                           "CREATE TABLE rl_t (id int PRIMARY KEY, note text)"),
                     RL_OK);
    const char *evil = "it's \"quoted\"'; DROP TABLE rl_t; --";
    const char *v1[2] = {"1", evil};
    PGresult *res = NULL;
    assert_int_equal(rl_pg_query(pg, "INSERT INTO rl_t VALUES ($1, $2)", 2, v1, &res), RL_OK);
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    assert_string_equal(PQcmdTuples(res), "1");
    assert_int_equal(rl_pg_rows_affected(res), 1);
    PQclear(res);
    const char *v2[2] = {"2", NULL};
    assert_int_equal(rl_pg_query(pg, "INSERT INTO rl_t VALUES ($1, $2)", 2, v2, &res), RL_OK);
    PQclear(res);

    assert_int_equal(rl_pg_query(pg, "SELECT id, note FROM rl_t ORDER BY id", 0, NULL, &res),
                     RL_OK);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(res), 2);
    assert_int_equal(rl_pg_rows_affected(res), 2); /* SELECT 2 */
    int64_t id = 0;
    assert_true(rl_pg_get_i64(res, 1, 0, &id));
    assert_int_equal(id, 2);
    id = -7;
    assert_false(rl_pg_get_i64(res, 0, 1, &id)); /* text, not a number */
    assert_false(rl_pg_get_i64(res, 1, 1, &id)); /* NULL */
    assert_false(rl_pg_get_i64(res, 2, 0, &id)); /* no such row */
    assert_false(rl_pg_get_i64(res, 0, 2, &id)); /* no such column */
    assert_int_equal(id, -7);
    assert_string_equal(PQgetvalue(res, 0, 1), evil);
    assert_false(PQgetisnull(res, 0, 1));
    assert_true(PQgetisnull(res, 1, 1));
    PQclear(res);

    const char *v3[1] = {evil};
    char buf[16];
    assert_int_equal(
        scalar(pg, "SELECT count(*) FROM rl_t WHERE note = $1", 1, v3, buf, sizeof buf), RL_OK);
    assert_string_equal(buf, "1");
    assert_string_equal(rl_pg_sqlstate(pg), "");

    assert_int_equal(rl_pg_query(pg, NULL, 0, NULL, &res), RL_ERR_INVALID);
    assert_int_equal(rl_pg_query(pg, "SELECT $1", 1, NULL, &res), RL_ERR_INVALID);
    rl_pg_destroy(pg);
}

static void test_error_mapping(void **state)
{
    (void)state;
    require_server();
    rl_pg_t *pg = new_pg("rl_test_errors");
    assert_int_equal(rl_pg_exec_simple(pg,
                                       "DROP TABLE IF EXISTS rl_e;"
                                       "CREATE TABLE rl_e (id int PRIMARY KEY, v text NOT NULL)"),
                     RL_OK);
    const char *v[2] = {"1", "a"};
    PGresult *res = NULL;
    assert_int_equal(rl_pg_query(pg, "INSERT INTO rl_e VALUES ($1, $2)", 2, v, &res), RL_OK);
    PQclear(res);

    res = NULL;
    assert_int_equal(rl_pg_query(pg, "INSERT INTO rl_e VALUES ($1, $2)", 2, v, &res),
                     RL_ERR_CONFLICT);
    assert_null(res);
    assert_string_equal(rl_pg_sqlstate(pg), "23505");
    assert_non_null(strstr(rl_error_last(), "23505"));
    assert_non_null(strstr(rl_error_last(), "duplicate key"));

    const char *vnull[2] = {"2", NULL};
    assert_int_equal(rl_pg_query(pg, "INSERT INTO rl_e VALUES ($1, $2)", 2, vnull, &res),
                     RL_ERR_INVALID);
    assert_string_equal(rl_pg_sqlstate(pg), "23502");

    const char *bad[1] = {"abc"};
    assert_int_equal(rl_pg_query(pg, "SELECT $1::int", 1, bad, &res), RL_ERR_INVALID);
    assert_string_equal(rl_pg_sqlstate(pg), "22P02");
    assert_int_equal(rl_pg_query(pg, "SELECT 1/0", 0, NULL, &res), RL_ERR_INVALID);
    assert_string_equal(rl_pg_sqlstate(pg), "22012");

    assert_int_equal(rl_pg_query(pg, "SELEC 1", 0, NULL, &res), RL_ERR_IO);
    assert_string_equal(rl_pg_sqlstate(pg), "42601");
    assert_non_null(strstr(rl_error_last(), "42601"));
    assert_int_equal(rl_pg_exec_simple(pg, "SELECT * FROM rl_no_such_table"), RL_ERR_IO);
    assert_string_equal(rl_pg_sqlstate(pg), "42P01");

    assert_int_equal(rl_pg_exec_simple(pg, "SET statement_timeout = 50"), RL_OK);
    assert_int_equal(rl_pg_query(pg, "SELECT pg_sleep(2)", 0, NULL, &res), RL_ERR_TIMEOUT);
    assert_string_equal(rl_pg_sqlstate(pg), "57014");
    assert_int_equal(rl_pg_exec_simple(pg, "RESET statement_timeout"), RL_OK);

    assert_int_equal(rl_pg_query(pg, "COPY rl_e TO STDOUT", 0, NULL, &res), RL_ERR_INVALID);

    /* none of this broke the connection for the next statement */
    char buf[16];
    assert_int_equal(scalar(pg, "SELECT count(*) FROM rl_e", 0, NULL, buf, sizeof buf), RL_OK);
    assert_string_equal(buf, "1");
    assert_string_equal(rl_pg_sqlstate(pg), "");
    rl_pg_destroy(pg);
}

typedef struct {
    rl_pg_t *admin;
    atomic_bool done;
    bool killed;
} killer_t;

/* Terminates the backend running the rl_retry_seq statement once it sleeps
 * (so after its nextval: a kill while it is still being planned would make
 * the retry draw 1 and sleep). */
static void *killer_main(void *arg)
{
    killer_t *k = arg;
    int64_t end = rl_test_now_ms() + WAIT_MS;
    while (!atomic_load(&k->done) && rl_test_now_ms() < end) {
        char buf[32];
        if (scalar(k->admin,
                   "SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE state = 'active' "
                   "AND wait_event = 'PgSleep' AND query LIKE '%rl_retry_seq%' "
                   "AND pid <> pg_backend_pid()",
                   0, NULL, buf, sizeof buf) == RL_OK &&
            strcmp(buf, "0") != 0) {
            const char *v[1] = {buf};
            k->killed = scalar(k->admin, "SELECT pg_terminate_backend($1::int)", 1, v, buf,
                               sizeof buf) == RL_OK;
            return NULL;
        }
        rl_test_sleep_ms(10);
    }
    return NULL;
}

static void test_reconnect_after_backend_terminated(void **state)
{
    (void)state;
    require_server();
    rl_pg_t *admin = new_pg("rl_test_admin");
    rl_pg_t *pg = new_pg("rl_test_victim");

    /* idle: the next statement runs on a new connection */
    long pid1 = backend_pid(pg);
    kill_backend(admin, pid1);
    long pid2 = backend_pid(pg);
    assert_true(pid2 > 0 && pid2 != pid1);

    /* mid-statement: the server ended the session, so the statement is retried once */
    assert_int_equal(rl_pg_exec_simple(admin, "DROP SEQUENCE IF EXISTS rl_retry_seq;"
                                              "CREATE SEQUENCE rl_retry_seq"),
                     RL_OK);
    killer_t k = {.admin = admin};
    atomic_init(&k.done, false);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, killer_main, &k), 0);
    char buf[32];
    rl_status_t s = scalar(pg,
                           "SELECT n FROM (SELECT nextval('rl_retry_seq') AS n) x, "
                           "pg_sleep(CASE WHEN n = 1 THEN 15 ELSE 0 END)",
                           0, NULL, buf, sizeof buf);
    atomic_store(&k.done, true);
    pthread_join(th, NULL);
    assert_true(k.killed);
    assert_int_equal(s, RL_OK);
    assert_string_equal(buf, "2");

    /* inside a transaction: no silent reconnect until the caller rolls back */
    assert_int_equal(rl_pg_begin(pg), RL_OK);
    assert_int_equal(rl_pg_begin(pg), RL_ERR_CONFLICT);
    kill_backend(admin, backend_pid(pg));
    assert_int_equal(scalar(pg, "SELECT 1", 0, NULL, buf, sizeof buf), RL_ERR_UNAVAILABLE);
    assert_int_equal(scalar(pg, "SELECT 1", 0, NULL, buf, sizeof buf), RL_ERR_UNAVAILABLE);
    assert_int_equal(rl_pg_rollback(pg), RL_OK);
    assert_int_equal(scalar(pg, "SELECT 1", 0, NULL, buf, sizeof buf), RL_OK);

    /* lost before COMMIT: commit says nothing was committed */
    assert_int_equal(rl_pg_begin(pg), RL_OK);
    kill_backend(admin, backend_pid(pg));
    assert_int_equal(rl_pg_commit(pg), RL_ERR_UNAVAILABLE);
    /* the FATAL is read before COMMIT is sent ("nothing was committed"); were it
     * to arrive only after, the outcome would be reported unknown */
    assert_true(strstr(rl_error_last(), "nothing was committed") ||
                strstr(rl_error_last(), "outcome is unknown"));
    assert_int_equal(scalar(pg, "SELECT 1", 0, NULL, buf, sizeof buf), RL_OK);

    rl_pg_destroy(pg);
    rl_pg_destroy(admin);
}

static void test_query_timeout_closes_and_recovers(void **state)
{
    (void)state;
    require_server();
    rl_pg_options_t o = {.query_timeout_ms = 200};
    rl_pg_t *pg = NULL;
    assert_int_equal(rl_pg_create(g.url, &o, &pg), RL_OK);
    PGresult *res = NULL;
    int64_t t0 = rl_test_now_ms();
    assert_int_equal(rl_pg_query(pg, "SELECT pg_sleep(3)", 0, NULL, &res), RL_ERR_TIMEOUT);
    assert_true(rl_test_now_ms() - t0 < 2500);
    assert_false(rl_pg_is_connected(pg));
    char buf[8];
    assert_int_equal(scalar(pg, "SELECT 7", 0, NULL, buf, sizeof buf), RL_OK);
    assert_string_equal(buf, "7");
    rl_pg_destroy(pg);
}

static void test_transactions(void **state)
{
    (void)state;
    require_server();
    rl_pg_t *pg = new_pg("rl_test_tx");
    assert_int_equal(rl_pg_exec_simple(pg, "DROP TABLE IF EXISTS rl_tx;"
                                           "CREATE TABLE rl_tx (id int PRIMARY KEY)"),
                     RL_OK);
    PGresult *res = NULL;
    char buf[16];
    const char *v1[1] = {"1"};
    const char *v2[1] = {"2"};

    assert_int_equal(rl_pg_commit(pg), RL_ERR_CONFLICT);
    assert_int_equal(rl_pg_rollback(pg), RL_OK);

    assert_int_equal(rl_pg_begin(pg), RL_OK);
    assert_int_equal(rl_pg_query(pg, "INSERT INTO rl_tx VALUES ($1)", 1, v1, &res), RL_OK);
    PQclear(res);
    assert_int_equal(rl_pg_rollback(pg), RL_OK);
    assert_int_equal(scalar(pg, "SELECT count(*) FROM rl_tx", 0, NULL, buf, sizeof buf), RL_OK);
    assert_string_equal(buf, "0");

    assert_int_equal(rl_pg_begin(pg), RL_OK);
    assert_int_equal(rl_pg_query(pg, "INSERT INTO rl_tx VALUES ($1)", 1, v1, &res), RL_OK);
    PQclear(res);
    assert_int_equal(rl_pg_commit(pg), RL_OK);
    assert_int_equal(scalar(pg, "SELECT count(*) FROM rl_tx", 0, NULL, buf, sizeof buf), RL_OK);
    assert_string_equal(buf, "1");

    /* a failed statement dooms the transaction: commit reports the rollback */
    assert_int_equal(rl_pg_begin(pg), RL_OK);
    assert_int_equal(rl_pg_query(pg, "INSERT INTO rl_tx VALUES ($1)", 1, v2, &res), RL_OK);
    PQclear(res);
    assert_int_equal(rl_pg_query(pg, "INSERT INTO rl_tx VALUES ($1)", 1, v1, &res),
                     RL_ERR_CONFLICT);
    assert_int_equal(rl_pg_commit(pg), RL_ERR_CONFLICT);
    assert_int_equal(scalar(pg, "SELECT count(*) FROM rl_tx", 0, NULL, buf, sizeof buf), RL_OK);
    assert_string_equal(buf, "1");
    rl_pg_destroy(pg);
}

typedef struct {
    rl_pg_pool_t *pool;
    int wait_ms;
    rl_status_t status;
    rl_pg_t *got;
    atomic_bool finished;
} acquirer_t;

static void *acquirer_main(void *arg)
{
    acquirer_t *a = arg;
    a->status = rl_pg_pool_acquire(a->pool, a->wait_ms, &a->got);
    atomic_store(&a->finished, true);
    return NULL;
}

static bool pool_has_waiter(void *arg)
{
    rl_pg_pool_stats_t st;
    rl_pg_pool_stats(arg, &st);
    return st.waiting == 1;
}

typedef struct {
    rl_pg_pool_t *pool;
    int ok;
} worker_t;

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    for (int i = 0; i < 20; i++) {
        rl_pg_t *pg = NULL;
        if (rl_pg_pool_acquire(w->pool, WAIT_MS, &pg) != RL_OK)
            continue;
        char buf[8];
        if (scalar(pg, "SELECT 1", 0, NULL, buf, sizeof buf) == RL_OK)
            w->ok++;
        rl_pg_pool_release(w->pool, pg);
    }
    return NULL;
}

static void test_pool(void **state)
{
    (void)state;
    require_server();
    rl_pg_options_t o = {.application_name = "rl_test_pool"};
    rl_pg_pool_t *pool = NULL;
    assert_int_equal(rl_pg_pool_create(g.url, 0, &o, &pool), RL_ERR_INVALID);
    assert_int_equal(rl_pg_pool_create(g.url, 2, &o, &pool), RL_OK);

    rl_pg_t *a = NULL, *b = NULL, *c = NULL;
    assert_int_equal(rl_pg_pool_acquire(pool, 0, &a), RL_OK);
    assert_int_equal(rl_pg_pool_acquire(pool, 1000, &b), RL_OK);
    assert_ptr_not_equal(a, b);

    /* the third acquirer times out while both are held */
    int64_t t0 = rl_test_now_ms();
    assert_int_equal(rl_pg_pool_acquire(pool, 150, &c), RL_ERR_TIMEOUT);
    int64_t took = rl_test_now_ms() - t0;
    assert_true(took >= 140 && took < 2000);
    assert_null(c);
    assert_int_equal(rl_pg_pool_acquire(pool, 0, &c), RL_ERR_TIMEOUT);
    rl_pg_pool_stats_t st;
    rl_pg_pool_stats(pool, &st);
    assert_int_equal(st.size, 2);
    assert_int_equal(st.in_use, 2);
    assert_int_equal(st.timeouts, 2);

    /* a is left inside a transaction with an uncommitted row */
    assert_int_equal(rl_pg_exec_simple(a, "DROP TABLE IF EXISTS rl_pool;"
                                          "CREATE TABLE rl_pool (id int)"),
                     RL_OK);
    assert_int_equal(rl_pg_begin(a), RL_OK);
    assert_int_equal(rl_pg_exec_simple(a, "INSERT INTO rl_pool VALUES (1)"), RL_OK);

    /* a waiting third acquirer is woken by the release */
    acquirer_t w = {.pool = pool, .wait_ms = WAIT_MS};
    atomic_init(&w.finished, false);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, acquirer_main, &w), 0);
    assert_true(rl_test_wait_until(pool_has_waiter, pool, WAIT_MS));
    assert_false(atomic_load(&w.finished));
    rl_error(RL_ERR_CONFLICT, "caller context");
    rl_pg_pool_release(pool, a);
    assert_non_null(strstr(rl_error_last(), "caller context"));
    pthread_join(th, NULL);
    assert_int_equal(w.status, RL_OK);
    assert_ptr_equal(w.got, a);

    /* it was rolled back on release */
    assert_int_equal(PQtransactionStatus(rl_pg_conn(w.got)), PQTRANS_IDLE);
    char buf[16];
    assert_int_equal(scalar(w.got, "SELECT count(*) FROM rl_pool", 0, NULL, buf, sizeof buf),
                     RL_OK);
    assert_string_equal(buf, "0");

    rl_pg_pool_release(pool, w.got);
    rl_pg_pool_release(pool, b);
    rl_pg_pool_release(pool, b); /* twice: ignored */
    rl_pg_pool_stats(pool, &st);
    assert_int_equal(st.in_use, 0);
    assert_int_equal(st.waiting, 0);

    /* four threads sharing two connections */
    worker_t ws[4];
    pthread_t wt[4];
    for (int i = 0; i < 4; i++) {
        ws[i] = (worker_t){.pool = pool};
        assert_int_equal(pthread_create(&wt[i], NULL, worker_main, &ws[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(wt[i], NULL);
        assert_int_equal(ws[i].ok, 20);
    }
    rl_pg_pool_destroy(pool);
}

typedef struct {
    pthread_mutex_t mu;
    int connected, disconnected, count;
    char channel[16][64];
    char payload[16][256];
} lstate_t;

static void l_notify(const char *channel, const char *payload, void *ctx)
{
    lstate_t *s = ctx;
    pthread_mutex_lock(&s->mu);
    if (s->count < 16) {
        snprintf(s->channel[s->count], sizeof s->channel[0], "%s", channel);
        snprintf(s->payload[s->count], sizeof s->payload[0], "%s", payload);
        s->count++;
    }
    pthread_mutex_unlock(&s->mu);
}

static void l_connected(void *ctx)
{
    lstate_t *s = ctx;
    pthread_mutex_lock(&s->mu);
    s->connected++;
    pthread_mutex_unlock(&s->mu);
}

static void l_disconnected(void *ctx)
{
    lstate_t *s = ctx;
    pthread_mutex_lock(&s->mu);
    s->disconnected++;
    pthread_mutex_unlock(&s->mu);
}

typedef struct {
    lstate_t *s;
    int connected, disconnected, count;
} lwant_t;

static bool l_reached(void *arg)
{
    lwant_t *w = arg;
    pthread_mutex_lock(&w->s->mu);
    bool ok = w->s->connected >= w->connected && w->s->disconnected >= w->disconnected &&
              w->s->count >= w->count;
    pthread_mutex_unlock(&w->s->mu);
    return ok;
}

static void notify(rl_pg_t *admin, const char *channel, const char *payload)
{
    const char *v[2] = {channel, payload};
    char buf[8];
    assert_int_equal(scalar(admin, "SELECT pg_notify($1, $2)", 2, v, buf, sizeof buf), RL_OK);
}

static void test_listener(void **state)
{
    (void)state;
    require_server();
    lstate_t s = {.count = 0};
    pthread_mutex_init(&s.mu, NULL);
    rl_pg_listener_callbacks_t cb = {l_notify, l_connected, l_disconnected};
    char url[192];
    snprintf(url, sizeof url, "%s?application_name=rl_test_listener", g.url);

    rl_pg_listener_t *l = NULL;
    const char *bad1[] = {"bad name"};
    const char *bad2[] = {"x\"; DROP TABLE t; --"};
    const char *bad3[] = {""};
    const char *bad4[] = {"1abc"};
    const char *bad5[] = {"a123456789012345678901234567890123456789012345678901234567890123"};
    assert_int_equal(rl_pg_listener_create(url, bad1, 1, &cb, &s, &l), RL_ERR_INVALID);
    assert_int_equal(rl_pg_listener_create(url, bad2, 1, &cb, &s, &l), RL_ERR_INVALID);
    assert_int_equal(rl_pg_listener_create(url, bad3, 1, &cb, &s, &l), RL_ERR_INVALID);
    assert_int_equal(rl_pg_listener_create(url, bad4, 1, &cb, &s, &l), RL_ERR_INVALID);
    assert_int_equal(rl_pg_listener_create(url, bad5, 1, &cb, &s, &l), RL_ERR_INVALID);
    assert_null(l);

    const char *channels[] = {"rl_test_config", "RenLayer.Keys"};
    assert_int_equal(rl_pg_listener_create(url, channels, 2, &cb, &s, &l), RL_OK);
    lwant_t w = {.s = &s, .connected = 1};
    assert_true(rl_test_wait_until(l_reached, &w, WAIT_MS));
    assert_true(rl_pg_listener_is_connected(l));

    rl_pg_t *admin = new_pg("rl_test_admin");
    const char *payload = "it's \"quoted\"; DROP TABLE x; --";
    notify(admin, "rl_test_unheard", "never");
    notify(admin, "rl_test_config", payload);
    notify(admin, "RenLayer.Keys", "");
    w.count = 2;
    assert_true(rl_test_wait_until(l_reached, &w, WAIT_MS));
    pthread_mutex_lock(&s.mu);
    assert_int_equal(s.count, 2);
    assert_string_equal(s.channel[0], "rl_test_config");
    assert_string_equal(s.payload[0], payload);
    assert_string_equal(s.channel[1], "RenLayer.Keys");
    assert_string_equal(s.payload[1], "");
    pthread_mutex_unlock(&s.mu);

    /* its backend is terminated: it reconnects, LISTENs again and says so */
    probe_t p = {admin,
                 "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                 "WHERE application_name = $1",
                 "rl_test_listener", "1"};
    assert_true(probe(&p));
    w = (lwant_t){.s = &s, .connected = 2, .disconnected = 1, .count = 2};
    assert_true(rl_test_wait_until(l_reached, &w, WAIT_MS));
    assert_true(rl_pg_listener_is_connected(l));
    notify(admin, "rl_test_config", "after reconnect");
    w.count = 3;
    assert_true(rl_test_wait_until(l_reached, &w, WAIT_MS));
    pthread_mutex_lock(&s.mu);
    assert_string_equal(s.payload[2], "after reconnect");
    pthread_mutex_unlock(&s.mu);

    int64_t t0 = rl_test_now_ms();
    rl_pg_listener_destroy(l);
    assert_true(rl_test_now_ms() - t0 < 1000);
    pthread_mutex_lock(&s.mu);
    assert_int_equal(s.disconnected, 1); /* not reported for destroy */
    pthread_mutex_unlock(&s.mu);
    rl_pg_destroy(admin);
    pthread_mutex_destroy(&s.mu);
}

typedef struct {
    rl_pg_t *pg;
    int64_t key;
    rl_status_t status;
} locker_t;

static void *locker_main(void *arg)
{
    locker_t *k = arg;
    k->status = rl_pg_advisory_lock(k->pg, k->key);
    return NULL;
}

static void test_advisory_lock(void **state)
{
    (void)state;
    require_server();
    rl_pg_t *a = new_pg("rl_test_lock_a");
    rl_pg_t *b = new_pg("rl_test_lock_b");
    rl_pg_t *admin = new_pg("rl_test_admin");
    const int64_t key = INT64_C(-7215490111230449153);

    bool got = true;
    assert_int_equal(rl_pg_advisory_lock(a, key), RL_OK);
    assert_int_equal(rl_pg_advisory_try_lock(b, key, &got), RL_OK);
    assert_false(got);
    assert_int_equal(rl_pg_advisory_unlock(b, key), RL_ERR_NOT_FOUND);

    /* b blocks in pg_advisory_lock until a lets go */
    locker_t k = {.pg = b, .key = key, .status = RL_ERR_INTERNAL};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, locker_main, &k), 0);
    probe_t p = {admin,
                 "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity s USING (pid) "
                 "WHERE l.locktype = 'advisory' AND NOT l.granted AND s.application_name = $1",
                 "rl_test_lock_b", "1"};
    assert_true(rl_test_wait_until(probe, &p, WAIT_MS));
    assert_int_equal(rl_pg_advisory_unlock(a, key), RL_OK);
    pthread_join(th, NULL);
    assert_int_equal(k.status, RL_OK);
    assert_int_equal(rl_pg_advisory_try_lock(a, key, &got), RL_OK);
    assert_false(got);
    assert_int_equal(rl_pg_advisory_unlock(b, key), RL_OK);
    assert_int_equal(rl_pg_advisory_try_lock(a, key, &got), RL_OK);
    assert_true(got);

    /* a loses its connection while holding the lock: no silent reconnect */
    kill_backend(admin, backend_pid(a));
    char buf[8];
    assert_int_equal(scalar(a, "SELECT 1", 0, NULL, buf, sizeof buf), RL_ERR_UNAVAILABLE);
    assert_int_equal(scalar(a, "SELECT 1", 0, NULL, buf, sizeof buf), RL_ERR_UNAVAILABLE);
    assert_non_null(strstr(rl_error_last(), "advisory lock"));
    assert_int_equal(rl_pg_ping(a, 0), RL_OK); /* the server is fine: only the session was lost */
    assert_int_equal(scalar(a, "SELECT 1", 0, NULL, buf, sizeof buf), RL_ERR_UNAVAILABLE);
    assert_int_equal(rl_pg_advisory_try_lock(b, key, &got), RL_OK);
    assert_true(got);
    assert_int_equal(rl_pg_advisory_unlock(a, key), RL_ERR_UNAVAILABLE);
    assert_int_equal(scalar(a, "SELECT 1", 0, NULL, buf, sizeof buf), RL_OK);
    assert_int_equal(rl_pg_advisory_unlock(b, key), RL_OK);

    rl_pg_destroy(a);
    rl_pg_destroy(b);
    rl_pg_destroy(admin);
}

typedef struct {
    rl_pg_t *pg;
} pinger_t;

static bool ping_ok(void *arg)
{
    return rl_pg_ping(((pinger_t *)arg)->pg, 500) == RL_OK;
}

/* Runs last: it stops and restarts the server. */
static void test_server_restart(void **state)
{
    (void)state;
    require_server();
    rl_pg_options_t o = {.connect_timeout_ms = 1000, .ping_timeout_ms = 1000};
    rl_pg_t *pg = NULL;
    assert_int_equal(rl_pg_create(g.url, &o, &pg), RL_OK);
    assert_int_equal(rl_pg_ping(pg, 0), RL_OK);

    assert_int_equal(rl_test_pg_stop(g.pg), RL_OK);
    PGresult *res = NULL;
    assert_int_equal(rl_pg_query(pg, "SELECT 1", 0, NULL, &res), RL_ERR_UNAVAILABLE);
    assert_null(res);
    assert_int_not_equal(rl_pg_ping(pg, 0), RL_OK);
    assert_false(rl_pg_is_connected(pg));

    require_server();
    pinger_t p = {pg};
    assert_true(rl_test_wait_until(ping_ok, &p, WAIT_MS));
    char buf[8];
    assert_int_equal(scalar(pg, "SELECT 5", 0, NULL, buf, sizeof buf), RL_OK);
    assert_string_equal(buf, "5");
    rl_pg_destroy(pg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_rejects_bad_input),
        cmocka_unit_test(test_create_before_server_then_connect),
        cmocka_unit_test(test_params_are_stored_verbatim),
        cmocka_unit_test(test_error_mapping),
        cmocka_unit_test(test_reconnect_after_backend_terminated),
        cmocka_unit_test(test_query_timeout_closes_and_recovers),
        cmocka_unit_test(test_transactions),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_listener),
        cmocka_unit_test(test_advisory_lock),
        cmocka_unit_test(test_server_restart),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
