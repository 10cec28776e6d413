/* Tests services/trace-writer/tw_store.c against a private PostgreSQL with
 * the schema of migrations/: the direct COPY and its fallback to the staged
 * path, idempotent rewrites, unknown tenants, refused rows isolated by
 * splitting, days created on demand, dead letters written once, the database
 * going away and coming back, api_keys.last_used_at. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rl_crypto.h"
#include "rl_pg.h"
#include "rl_test_servers.h"
#include "rl_uuid.h"
#include "tw_batch.h"
#include "tw_store.h"

#define TENANT "0191c9a4-7b1e-7c3a-9f1e-2b6c8d4e5f60"
#define AGENT "0191c9a4-7b1e-7c3a-9f1e-2b6c8d4e5f61"
#define KEY "0191c9a4-7b1e-7c3a-9f1e-2b6c8d4e5f63"
#define US_PER_DAY (86400LL * 1000000)

static struct {
    rl_test_pg_t *pg;
    const char *url;
    rl_pg_t *admin;
} g;

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = calloc(1, (size_t)n + 1);
    if (text && fread(text, 1, (size_t)n, f) != (size_t)n) {
        free(text);
        text = NULL;
    }
    fclose(f);
    return text;
}

/* Applies the .sql files of migrations/ in name order, each in one transaction. */
static int apply_migrations(void)
{
    char dir[PATH_MAX];
    if (!rl_test_source_path("migrations", dir, sizeof dir))
        return -1;
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    char *names[128];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 128) {
        size_t len = strlen(e->d_name);
        if (len > 4 && strcmp(e->d_name + len - 4, ".sql") == 0)
            names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof names[0], cmp_str);
    int rc = n > 0 ? 0 : -1;
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX + 256];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        char *text = read_file(path);
        rl_status_t st = text ? rl_pg_begin(g.admin) : RL_ERR_IO;
        if (st == RL_OK)
            st = rl_pg_exec_simple(g.admin, text);
        if (st == RL_OK)
            st = rl_pg_commit(g.admin);
        if (st != RL_OK) {
            fprintf(stderr, "test_tw_store: %s: %s\n", names[i], rl_error_last());
            rl_pg_rollback(g.admin);
            rc = -1;
        }
        free(text);
        free(names[i]);
    }
    return rc;
}

static void exec_sql(const char *sql)
{
    if (rl_pg_exec_simple(g.admin, sql) != RL_OK)
        fail_msg("%s: %s", sql, rl_error_last());
}

/* The integer result of a query. */
static long long scalar(const char *sql)
{
    PGresult *r = NULL;
    if (rl_pg_query(g.admin, sql, 0, NULL, &r) != RL_OK)
        fail_msg("%s: %s", sql, rl_error_last());
    long long v = PQntuples(r) ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return v;
}

static int setup(void **state)
{
    (void)state;
    if (rl_test_pg_create("tw_store_test", &g.pg) != RL_OK || rl_test_pg_start(g.pg) != RL_OK) {
        fprintf(stderr, "test_tw_store: cannot start PostgreSQL: %s\n", rl_error_last());
        return -1;
    }
    g.url = rl_test_pg_url(g.pg);
    if (rl_pg_create(g.url, NULL, &g.admin) != RL_OK || apply_migrations() != 0)
        return -1;
    exec_sql(
        "INSERT INTO renlayer.tenants (id, name) VALUES ('" TENANT "', 't');"
        "INSERT INTO renlayer.agents (id, tenant_id, name) VALUES ('" AGENT "', '" TENANT "', 'a');"
        "INSERT INTO renlayer.api_keys (id, tenant_id, agent_id, key_hash, prefix) VALUES ('" KEY
        "', '" TENANT "', '" AGENT "', '\\x00112233445566778899aabbccddeeff', 'rl_test');");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    rl_pg_destroy(g.admin);
    rl_test_pg_destroy(g.pg);
    return 0;
}

static int empty_tables(void **state)
{
    (void)state;
    exec_sql("TRUNCATE renlayer.traces, renlayer.decisions, renlayer.dlp_findings, "
             "renlayer.tool_calls, renlayer.dead_letters");
    return 0;
}

/* ---- messages ----------------------------------------------------------------------------- */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* A UUIDv7 carrying the millisecond of us. */
static void uuid_v7_at(int64_t us, char out[RL_UUID_STR_LEN + 1])
{
    rl_uuid_t u;
    rl_random_bytes(u.b, 16);
    uint64_t ms = (uint64_t)(us / 1000);
    for (int i = 5; i >= 0; i--, ms >>= 8)
        u.b[i] = (uint8_t)(ms & 0xff);
    u.b[6] = (uint8_t)((u.b[6] & 0x0f) | 0x70);
    u.b[8] = (uint8_t)((u.b[8] & 0x3f) | 0x80);
    rl_uuid_format(&u, out);
}

static void rfc3339(int64_t us, char out[40])
{
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, 40, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 40 - n, ".%06dZ", (int)(us % 1000000));
}

/* A trace v1 (owned) of tenant at started_us; session may be long. */
static char *trace_at(int64_t started_us, const char *tenant, const char *session,
                      char id_out[RL_UUID_STR_LEN + 1])
{
    char id[RL_UUID_STR_LEN + 1], t[40];
    uuid_v7_at(started_us, id);
    rfc3339(started_us, t);
    if (id_out)
        memcpy(id_out, id, sizeof id);
    size_t cap = 2048 + (session ? strlen(session) : 0);
    char *msg = malloc(cap);
    snprintf(msg, cap,
             "{\"v\":1,\"kind\":\"trace\",\"trace_id\":\"%s\",\"tenant_id\":\"%s\","
             "\"agent_id\":\"" AGENT "\",\"gate_id\":null,\"api_key_id\":\"" KEY "\","
             "\"user\":\"u\",\"session_id\":\"%s\",\"action\":\"chat\",\"method\":\"POST\","
             "\"path\":\"/v1/chat/completions\",\"model\":\"m\",\"upstream\":null,"
             "\"status\":\"ALLOWED\",\"http_status\":200,\"policy_ids\":[],"
             "\"dlp_findings\":[{\"detector\":\"EMAIL\",\"severity\":\"low\",\"where\":"
             "\"response\",\"action\":\"warn\"}],"
             "\"tool_calls\":[{\"name\":\"t\",\"id\":\"c1\",\"phase\":\"requested\","
             "\"args_sha256\":null},{\"name\":\"t\",\"id\":\"c1\",\"phase\":\"result\","
             "\"args_sha256\":null}],\"usage\":null,\"cost_usd\":null,\"latency_ms\":1.5,"
             "\"upstream_ms\":1,\"overhead_us\":10,\"started_at\":\"%s\",\"ended_at\":null,"
             "\"stream\":false,\"error\":null,\"attempts\":[],\"request_body\":\"{}\","
             "\"response_body\":null,\"truncated\":false}",
             id, tenant, session ? session : "s", t);
    return msg;
}

static const tw_limits_t *limits(void)
{
    static tw_limits_t lim;
    lim.now_us = now_us();
    lim.retention_days = 30;
    return &lim;
}

static tw_store_t *new_store(void)
{
    tw_store_options_t o = {
        .database_url = g.url, .application_name = "tw-test", .retention_days = 30};
    tw_store_t *s = NULL;
    assert_int_equal(tw_store_create(&o, &s), RL_OK);
    return s;
}

/* Adds n messages (owned, freed by free_msgs) to a fresh trace batch. */
static void fill(tw_batch_t *b, char **msgs, size_t n)
{
    assert_int_equal(tw_batch_init(b, TW_KIND_TRACE, 64, 0), RL_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(tw_batch_add(b, msgs[i], strlen(msgs[i]), limits(), NULL, NULL), RL_OK);
}

static void free_msgs(char **msgs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(msgs[i]);
}

/* ---- tests ------------------------------------------------------------------------------------
 */

static void test_direct_copy_then_idempotent_rewrite(void **state)
{
    (void)state;
    tw_store_t *s = new_store();
    char *msgs[3];
    for (int i = 0; i < 3; i++)
        msgs[i] = trace_at(now_us(), TENANT, NULL, NULL);
    tw_batch_t b;
    fill(&b, msgs, 3);
    tw_store_result_t res;
    assert_int_equal(tw_store_write(s, &b, &res), RL_OK);
    assert_int_equal(res.transactions, 1); /* the direct COPY */
    assert_int_equal(res.inserted[TW_TABLE_MAIN], 3);
    assert_int_equal(res.inserted[TW_TABLE_DLP], 3);
    assert_int_equal(res.inserted[TW_TABLE_TOOLS], 6);
    assert_int_equal(scalar("SELECT count(*) FROM renlayer.traces"), 3);
    assert_int_equal(scalar("SELECT count(*) FROM renlayer.tool_calls WHERE ordinal = 1"), 3);
    assert_int_equal(scalar("SELECT latency_ms FROM renlayer.traces LIMIT 1"), 2);

    /* the same batch again (a redelivery): the direct COPY fails on the key,
     * the staged path inserts nothing */
    long long before =
        scalar("SELECT extract(epoch FROM max(written_at)) * 1e6 FROM renlayer.traces");
    assert_int_equal(tw_store_write(s, &b, &res), RL_OK);
    assert_int_equal(res.inserted[TW_TABLE_MAIN], 0);
    assert_int_equal(res.inserted[TW_TABLE_TOOLS], 0);
    assert_int_equal(scalar("SELECT count(*) FROM renlayer.traces"), 3);
    assert_int_equal(scalar("SELECT count(*) FROM renlayer.tool_calls"), 6);
    assert_int_equal(
        scalar("SELECT extract(epoch FROM max(written_at)) * 1e6 FROM renlayer.traces"), before);
    tw_batch_free(&b);

    /* one message twice in a batch */
    char *twice[2] = {trace_at(now_us(), TENANT, NULL, NULL), NULL};
    twice[1] = strdup(twice[0]);
    fill(&b, twice, 2);
    assert_int_equal(tw_store_write(s, &b, &res), RL_OK);
    assert_int_equal(res.inserted[TW_TABLE_MAIN], 1);
    assert_int_equal(scalar("SELECT count(*) FROM renlayer.traces"), 4);
    tw_batch_free(&b);
    free_msgs(twice, 2);
    free_msgs(msgs, 3);
    tw_store_destroy(s);
}

static void test_unknown_tenant_is_killed_the_rest_written(void **state)
{
    (void)state;
    tw_store_t *s = new_store();
    char stranger[RL_UUID_STR_LEN + 1];
    uuid_v7_at(now_us(), stranger);
    char *msgs[3] = {trace_at(now_us(), TENANT, NULL, NULL),
                     trace_at(now_us(), stranger, NULL, NULL),
                     trace_at(now_us(), TENANT, NULL, NULL)};
    tw_batch_t b;
    fill(&b, msgs, 3);
    tw_store_result_t res;
    assert_int_equal(tw_store_write(s, &b, &res), RL_OK);
    assert_int_equal(b.items[1].state, TW_ITEM_DEAD);
    assert_int_equal(b.items[1].reason, TW_REASON_UNKNOWN_TENANT);
    assert_int_equal(b.items[0].state, TW_ITEM_ROWS);
    assert_int_equal(b.items[2].state, TW_ITEM_ROWS);
    assert_int_equal(scalar("SELECT count(*) FROM renlayer.traces"), 2);
    assert_int_equal(scalar("SELECT count(*) FROM renlayer.tool_calls"), 4);
    tw_batch_free(&b);
    free_msgs(msgs, 3);
    tw_store_destroy(s);
}

static void test_refused_row_is_isolated_by_splitting(void **state)
{
    (void)state;
    tw_store_t *s = new_store();
    /* a session id beyond the btree row limit of the session indexes (SQLSTATE 54000) */
    char *huge = malloc(9001);
    uint8_t rnd[4500];
    rl_random_bytes(rnd, sizeof rnd);
    rl_hex_encode(rnd, sizeof rnd, huge, 9001);
    enum { N = 21 };
    char *msgs[N];
    for (int i = 0; i < N; i++)
        msgs[i] = trace_at(now_us(), TENANT, i == 13 ? huge : NULL, NULL);
    tw_batch_t b;
    fill(&b, msgs, N);
    tw_store_result_t res;
    assert_int_equal(tw_store_write(s, &b, &res), RL_OK);
    assert_int_equal(b.items[13].state, TW_ITEM_DEAD);
    assert_int_equal(b.items[13].reason, TW_REASON_DB_REJECTED);
    assert_non_null(strstr(b.items[13].detail, "SQLSTATE 54000"));
    assert_int_equal(tw_batch_count(&b, TW_ITEM_ROWS), N - 1);
    assert_int_equal(res.inserted[TW_TABLE_MAIN], N - 1);
    assert_true(res.transactions > 1);
    assert_int_equal(scalar("SELECT count(*) FROM renlayer.traces"), N - 1);
    /* the compacted batch rewrites as a no-op */
    assert_int_equal(tw_store_write(s, &b, &res), RL_OK);
    assert_int_equal(res.inserted[TW_TABLE_MAIN], 0);
    tw_batch_free(&b);
    free_msgs(msgs, N);
    free(huge);
    tw_store_destroy(s);
}

static void test_missing_day_is_created(void **state)
{
    (void)state;
    tw_store_t *s = new_store();
    int64_t old = now_us() - 12 * US_PER_DAY;
    char day[11], sql[160];
    tw_day_format(tw_day_of(old), day);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_class WHERE relname = 'traces_p%.4s%.2s%.2s'", day, day + 5,
             day + 8);
    assert_int_equal(scalar(sql), 0);
    char *msgs[2] = {trace_at(old, TENANT, NULL, NULL), trace_at(now_us(), TENANT, NULL, NULL)};
    tw_batch_t b;
    fill(&b, msgs, 2);
    tw_store_result_t res;
    assert_int_equal(tw_store_write(s, &b, &res), RL_OK);
    assert_true(res.partitions_created >= 4); /* traces, decisions, dlp_findings, tool_calls, ... */
    assert_int_equal(scalar(sql), 1);
    assert_int_equal(scalar("SELECT count(*) FROM renlayer.traces"), 2);
    tw_batch_free(&b);
    free_msgs(msgs, 2);
    tw_store_destroy(s);
}

static void test_dead_letters_are_written_once(void **state)
{
    (void)state;
    tw_store_t *s = new_store();
    const uint8_t payload[] = {'{', 0xff, 0x00, 'x'}; /* not UTF-8, a NUL: kept verbatim */
    uint8_t tenant[16];
    rl_uuid_t u;
    rl_uuid_parse(TENANT, &u);
    memcpy(tenant, u.b, 16);
    tw_dead_letter_t dl[2] = {
        {.subject = "renlayer.traces.a\x01.b",
         .stream = "RENLAYER_TRACES",
         .stream_seq = 42,
         .msg_id = "m1",
         .tenant = tenant,
         .payload = payload,
         .len = sizeof payload,
         .reason = "invalid_json: line 1"},
        {.subject = "renlayer.traces.x.y",
         .stream = NULL,
         .stream_seq = 0,
         .msg_id = NULL,
         .tenant = NULL,
         .payload = "{}",
         .len = 2,
         .reason = "invalid_field: v: missing"},
    };
    assert_int_equal(tw_store_dead_letters(s, dl, 2), RL_OK);
    assert_int_equal(tw_store_dead_letters(s, dl, 2), RL_OK); /* a redelivery */
    assert_int_equal(scalar("SELECT count(*) FROM renlayer.dead_letters"), 2);
    assert_int_equal(scalar("SELECT count(*) FROM renlayer.dead_letters WHERE stream_seq = 42 AND "
                            "payload = '\\x7bff0078'::bytea AND subject = 'renlayer.traces.a?.b' "
                            "AND tenant_id = '" TENANT "' AND consumer = 'trace-writer'"),
                     1);
    assert_int_equal(scalar("SELECT count(*) FROM renlayer.dead_letters WHERE stream IS NULL AND "
                            "msg_id IS NULL AND tenant_id IS NULL"),
                     1);
    tw_store_destroy(s);
}

static void test_database_down_then_back(void **state)
{
    (void)state;
    tw_store_t *s = new_store();
    char *msgs[2] = {trace_at(now_us(), TENANT, NULL, NULL),
                     trace_at(now_us(), TENANT, NULL, NULL)};
    tw_batch_t b;
    fill(&b, msgs, 2);
    tw_store_result_t res;
    assert_int_equal(tw_store_write(s, &b, &res), RL_OK); /* connected */
    assert_int_equal(rl_test_pg_stop(g.pg), RL_OK);
    tw_batch_reset(&b);
    char *more = trace_at(now_us(), TENANT, NULL, NULL);
    assert_int_equal(tw_batch_add(&b, more, strlen(more), limits(), NULL, NULL), RL_OK);
    rl_status_t st = tw_store_write(s, &b, &res);
    assert_int_equal(st, RL_ERR_UNAVAILABLE);
    assert_int_equal(b.items[0].state, TW_ITEM_ROWS); /* nothing decided about the data */
    assert_int_equal(rl_test_pg_start(g.pg), RL_OK);
    rl_pg_reset(g.admin);
    assert_int_equal(tw_store_write(s, &b, &res), RL_OK);
    assert_int_equal(res.inserted[TW_TABLE_MAIN], 1);
    assert_int_equal(scalar("SELECT count(*) FROM renlayer.traces"), 3);
    tw_batch_free(&b);
    free(more);
    free_msgs(msgs, 2);
    tw_store_destroy(s);
}

static void test_api_key_last_used_at(void **state)
{
    (void)state;
    tw_store_t *s = new_store();
    exec_sql("UPDATE renlayer.api_keys SET last_used_at = NULL");
    int64_t t = now_us();
    char *msgs[1] = {trace_at(t, TENANT, NULL, NULL)};
    tw_batch_t b;
    fill(&b, msgs, 1);
    assert_int_equal(tw_store_write(s, &b, NULL), RL_OK);
    assert_int_equal(tw_store_touch_keys(s, &b), RL_OK);
    char sql[200];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM renlayer.api_keys WHERE id = '" KEY "' AND "
             "abs(extract(epoch FROM last_used_at) * 1e6 - %lld) < 1000",
             (long long)t);
    assert_int_equal(scalar(sql), 1);
    tw_batch_free(&b);
    free_msgs(msgs, 1);
    tw_store_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_direct_copy_then_idempotent_rewrite, empty_tables),
        cmocka_unit_test_setup(test_unknown_tenant_is_killed_the_rest_written, empty_tables),
        cmocka_unit_test_setup(test_refused_row_is_isolated_by_splitting, empty_tables),
        cmocka_unit_test_setup(test_missing_day_is_created, empty_tables),
        cmocka_unit_test_setup(test_dead_letters_are_written_once, empty_tables),
        cmocka_unit_test_setup(test_database_down_then_back, empty_tables),
        cmocka_unit_test_setup(test_api_key_last_used_at, empty_tables),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
