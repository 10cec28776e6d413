/* Tests libs/common/rl_bus.c against a real nats-server that each test starts
 * (or not) in a store folder of its own and that teardown always stops. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rl_bus.h"
#include "rl_test_servers.h"

#define TENANT "0191c9a4-7b1e-7c3a-9f1e-2b6c8d4e5f60"
#define AGENT "0191c9a4-7b1e-7c3a-9f1e-2b6c8d4e5f61"
#define NS_PER_S 1000000000LL
#define WAIT_MS 10000 /* bound of every wait for the server or the bus */
#define MAX_BUSES 4

typedef struct {
    rl_test_nats_t *nats; /* started by setup_up or by the test */
    rl_bus_t *buses[MAX_BUSES];

    pthread_mutex_t mu; /* guards what the callbacks record */
    int ups, downs, topo_ok, topo_failed, nacks;
    rl_status_t nack_status;
    char nack_id[RL_BUS_MSG_ID_MAX + 1];
    char nack_data[64];
} fixture_t;

static bool pred_connected(void *b)
{
    return rl_bus_is_connected(b);
}

static bool pred_disconnected(void *b)
{
    return !rl_bus_is_connected(b);
}

static bool pred_ready(void *b)
{
    return rl_bus_is_ready(b);
}

static bool pred_not_ready(void *b)
{
    return !rl_bus_is_ready(b);
}

static bool pred_no_pending(void *b)
{
    rl_bus_stats_t st;
    rl_bus_stats(b, &st);
    return st.js_pending == 0;
}

/* ---- callbacks: record what the bus reports ---- */

static void on_state(rl_bus_t *bus, bool connected, void *ctx)
{
    fixture_t *f = ctx;
    (void)bus;
    pthread_mutex_lock(&f->mu);
    if (connected)
        f->ups++;
    else
        f->downs++;
    pthread_mutex_unlock(&f->mu);
}

static void on_topology(rl_bus_t *bus, rl_status_t status, const char *detail, void *ctx)
{
    fixture_t *f = ctx;
    (void)bus, (void)detail;
    pthread_mutex_lock(&f->mu);
    if (status == RL_OK)
        f->topo_ok++;
    else
        f->topo_failed++;
    pthread_mutex_unlock(&f->mu);
}

static void on_ack_failure(rl_bus_t *bus, const rl_bus_nack_t *nack, void *ctx)
{
    fixture_t *f = ctx;
    (void)bus;
    pthread_mutex_lock(&f->mu);
    f->nacks++;
    f->nack_status = nack->status;
    snprintf(f->nack_id, sizeof f->nack_id, "%s", nack->msg_id);
    size_t n = nack->len < sizeof f->nack_data - 1 ? nack->len : sizeof f->nack_data - 1;
    memcpy(f->nack_data, nack->data, n);
    f->nack_data[n] = '\0';
    pthread_mutex_unlock(&f->mu);
}

static int recorded(fixture_t *f, const int *field)
{
    pthread_mutex_lock(&f->mu);
    int v = *field;
    pthread_mutex_unlock(&f->mu);
    return v;
}

/* ---- fixture ---- */

static rl_bus_options_t test_options(fixture_t *f)
{
    return (rl_bus_options_t){
        .url = rl_test_nats_url(f->nats),
        .name = "test_rl_bus",
        .reconnect_wait_ms = 20,
        .reconnect_wait_max_ms = 200,
        .request_timeout_ms = 2000,
        .on_state = on_state,
        .on_topology = on_topology,
        .on_ack_failure = on_ack_failure,
        .ctx = f,
    };
}

/* Creates a bus that teardown destroys if the test does not. */
static rl_bus_t *bus_open(fixture_t *f, const rl_bus_options_t *o)
{
    rl_bus_t *bus = NULL;
    rl_status_t st = rl_bus_create(o, &bus);
    if (st != RL_OK)
        fail_msg("rl_bus_create: %s: %s", rl_status_str(st), rl_error_last());
    for (int i = 0; i < MAX_BUSES; i++) {
        if (!f->buses[i]) {
            f->buses[i] = bus;
            return bus;
        }
    }
    rl_bus_destroy(bus);
    fail_msg("too many buses");
    return NULL;
}

static void bus_close(fixture_t *f, rl_bus_t *bus)
{
    for (int i = 0; i < MAX_BUSES; i++)
        if (f->buses[i] == bus)
            f->buses[i] = NULL;
    rl_bus_destroy(bus);
}

/* Ensures the topology, retrying while JetStream is still starting up. */
static void ensure_ok(rl_bus_t *bus)
{
    int64_t end = rl_test_now_ms() + WAIT_MS;
    rl_status_t st;
    while ((st = rl_bus_ensure_topology(bus)) != RL_OK) {
        if (rl_test_now_ms() >= end)
            fail_msg("rl_bus_ensure_topology: %s: %s", rl_status_str(st), rl_error_last());
        rl_test_sleep_ms(20);
    }
}

static jsStreamInfo *stream_info(rl_bus_t *bus, const char *stream)
{
    jsStreamInfo *si = NULL;
    natsStatus s = js_GetStreamInfo(&si, rl_bus_js(bus), stream, NULL, NULL);
    if (s != NATS_OK)
        fail_msg("js_GetStreamInfo %s: %s", stream, natsStatus_GetText(s));
    return si;
}

static int setup_down(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    pthread_mutex_init(&f->mu, NULL);
    if (rl_test_nats_create("test_rl_bus", &f->nats) != RL_OK) {
        fprintf(stderr, "test_rl_bus: %s\n", rl_error_last());
        pthread_mutex_destroy(&f->mu);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int setup_up(void **state)
{
    if (setup_down(state) != 0)
        return -1;
    fixture_t *f = *state;
    assert_int_equal(rl_test_nats_start(f->nats), RL_OK);
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (rl_test_nats_paused(f->nats))
        rl_test_nats_resume(f->nats);
    for (int i = 0; i < MAX_BUSES; i++)
        rl_bus_destroy(f->buses[i]);
    rl_test_nats_destroy(f->nats);
    pthread_mutex_destroy(&f->mu);
    free(f);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    /* Waits for libnats' own threads so LeakSanitizer sees a clean exit. */
    nats_CloseAndWait(5000);
    return 0;
}

/* ---- tests ---- */

static void test_subject_builders(void **state)
{
    (void)state;
    char out[RL_BUS_SUBJECT_MAX];
    assert_int_equal(rl_bus_subject_traces(TENANT, AGENT, out, sizeof out), RL_OK);
    assert_string_equal(out, "renlayer.traces." TENANT "." AGENT);
    assert_int_equal(rl_bus_subject_decisions(TENANT, AGENT, out, sizeof out), RL_OK);
    assert_string_equal(out, "renlayer.decisions." TENANT "." AGENT);
    assert_int_equal(rl_bus_subject_sessions_events(TENANT, out, sizeof out), RL_OK);
    assert_string_equal(out, "renlayer.sessions.events." TENANT);
    assert_int_equal(rl_bus_subject_sessions_control(TENANT, out, sizeof out), RL_OK);
    assert_string_equal(out, "renlayer.sessions.control." TENANT);
    assert_int_equal(rl_bus_subject_insights(TENANT, out, sizeof out), RL_OK);
    assert_string_equal(out, "renlayer.insights." TENANT);
    assert_int_equal(rl_bus_subject_usage("tenant_1-a", out, sizeof out), RL_OK);
    assert_string_equal(out, "renlayer.usage.tenant_1-a");

    char longest[RL_BUS_TOKEN_MAX + 1];
    memset(longest, 'a', RL_BUS_TOKEN_MAX);
    longest[RL_BUS_TOKEN_MAX] = '\0';
    assert_int_equal(rl_bus_subject_decisions(longest, longest, out, sizeof out), RL_OK);

    char too_long[RL_BUS_TOKEN_MAX + 2];
    memset(too_long, 'a', RL_BUS_TOKEN_MAX + 1);
    too_long[RL_BUS_TOKEN_MAX + 1] = '\0';
    const char *bad[] = {"a.b", "*", ">", "", "a b", "a\tb", "a\n", "t>", too_long, NULL};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        out[0] = 'x';
        assert_int_equal(rl_bus_subject_usage(bad[i], out, sizeof out), RL_ERR_INVALID);
        assert_string_equal(out, "");
        assert_int_equal(rl_bus_subject_traces(TENANT, bad[i], out, sizeof out), RL_ERR_INVALID);
        assert_int_equal(rl_bus_subject_traces(bad[i], AGENT, out, sizeof out), RL_ERR_INVALID);
        assert_false(rl_bus_token_valid(bad[i]));
    }
    assert_int_equal(rl_bus_subject_insights(TENANT, NULL, 0), RL_ERR_INVALID);
    char small[20];
    assert_int_equal(rl_bus_subject_insights(TENANT, small, sizeof small), RL_ERR_TOO_LARGE);
    assert_string_equal(small, "");
}

static void test_create_while_down_then_up(void **state)
{
    fixture_t *f = *state;
    rl_bus_options_t o = test_options(f);
    o.ensure_topology = true;
    int64_t t0 = rl_test_now_ms();
    rl_bus_t *bus = bus_open(f, &o);
    assert_true(rl_test_now_ms() - t0 < 2000); /* connecting happens in the background */
    assert_false(rl_bus_is_connected(bus));
    assert_false(rl_bus_is_ready(bus));
    assert_int_equal(rl_bus_publish_js(bus, "renlayer.traces.t.a", "id-1", "x", 1),
                     RL_ERR_UNAVAILABLE);
    assert_int_equal(rl_bus_publish(bus, "renlayer.usage.t", "x", 1), RL_ERR_UNAVAILABLE);
    assert_int_equal(rl_bus_ensure_topology(bus), RL_ERR_UNAVAILABLE);

    assert_int_equal(rl_test_nats_start(f->nats), RL_OK);
    assert_true(rl_test_wait_until(pred_connected, bus, WAIT_MS));
    assert_true(rl_test_wait_until(pred_ready, bus, WAIT_MS));
    assert_true(recorded(f, &f->ups) >= 1);
    assert_true(recorded(f, &f->topo_ok) >= 1);

    rl_bus_stats_t st;
    rl_bus_stats(bus, &st);
    assert_int_equal(st.topology_created, 5);
    assert_int_equal(st.js_refused, 1);
    assert_int_equal(st.core_refused, 1);

    /* what was created is what docs/bus.md says */
    jsStreamInfo *si = stream_info(bus, RL_BUS_STREAM_TRACES);
    assert_int_equal(si->Config->SubjectsLen, 1);
    assert_string_equal(si->Config->Subjects[0], "renlayer.traces.>");
    assert_int_equal(si->Config->Storage, js_FileStorage);
    assert_int_equal(si->Config->Retention, js_LimitsPolicy);
    assert_int_equal(si->Config->MaxAge, 7LL * 24 * 3600 * NS_PER_S);
    assert_int_equal(si->Config->Duplicates, 600LL * NS_PER_S);
    assert_int_equal(si->Config->Replicas, 1);
    jsStreamInfo_Destroy(si);
    si = stream_info(bus, "KV_" RL_BUS_KV_SESSION_STATE);
    assert_int_equal(si->Config->MaxAge, 24LL * 3600 * NS_PER_S);
    assert_int_equal(si->Config->MaxMsgsPerSubject, 1);
    jsStreamInfo_Destroy(si);
    kvStore *kv = NULL;
    assert_int_equal(js_KeyValue(&kv, rl_bus_js(bus), RL_BUS_KV_SESSION_STATE), NATS_OK);
    kvStore_Destroy(kv);
}

/* libnats 3.4.1, asked to retry a failed first connect in the background,
 * closes the connection for good when the server accepts the TCP connection
 * but never answers (a hung server): the bus makes its first connection
 * itself, retrying, so it comes up once the server answers again. */
static void test_create_while_hung_then_resumed(void **state)
{
    fixture_t *f = *state;
    rl_bus_options_t o = test_options(f);
    o.ensure_topology = true;
    assert_int_equal(rl_test_nats_start(f->nats), RL_OK);
    assert_int_equal(rl_test_nats_pause(f->nats), RL_OK);
    int64_t t0 = rl_test_now_ms();
    rl_bus_t *bus = bus_open(f, &o);
    assert_true(rl_test_now_ms() - t0 < 1000); /* connecting happens in the background */
    assert_false(rl_bus_is_connected(bus));
    assert_int_equal(rl_bus_publish_js(bus, "renlayer.traces.t.a", "id-h", "x", 1),
                     RL_ERR_UNAVAILABLE);
    rl_test_sleep_ms(3000); /* past libnats' 2 s connect timeout: the first attempt failed */
    assert_false(rl_bus_is_connected(bus));
    assert_int_equal(rl_test_nats_resume(f->nats), RL_OK);
    assert_true(rl_test_wait_until(pred_ready, bus, WAIT_MS));
    assert_int_equal(rl_bus_publish_js(bus, "renlayer.traces.t.a", "id-h", "x", 1), RL_OK);
    assert_true(rl_test_wait_until(pred_no_pending, bus, WAIT_MS));
    rl_bus_stats_t st;
    rl_bus_stats(bus, &st);
    assert_int_equal(st.js_acked, 1);
}

/* Destroying a bus that never reached its server returns at once (no
 * connection to wait for) and reports nothing. */
static void test_destroy_before_any_connection(void **state)
{
    fixture_t *f = *state;
    rl_bus_options_t o = test_options(f);
    rl_bus_t *bus = bus_open(f, &o); /* the server is not running */
    int64_t t0 = rl_test_now_ms();
    bus_close(f, bus);
    assert_true(rl_test_now_ms() - t0 < 2500);
    assert_int_equal(recorded(f, &f->nacks), 0);
}

static void test_ensure_twice_is_noop(void **state)
{
    fixture_t *f = *state;
    rl_bus_options_t o = test_options(f);
    rl_bus_t *bus = bus_open(f, &o);
    assert_true(rl_test_wait_until(pred_connected, bus, WAIT_MS));
    assert_false(rl_bus_is_ready(bus)); /* no automatic topology asked for */
    ensure_ok(bus);
    assert_true(rl_bus_is_ready(bus));

    jsStreamInfo *si = stream_info(bus, RL_BUS_STREAM_DECISIONS);
    int64_t created = si->Created;
    jsStreamInfo_Destroy(si);

    assert_int_equal(rl_bus_ensure_topology(bus), RL_OK);
    assert_int_equal(rl_bus_ensure_topology(bus), RL_OK);
    rl_bus_stats_t st;
    rl_bus_stats(bus, &st);
    assert_int_equal(st.topology_created, 5);
    assert_int_equal(st.topology_updated, 0);
    assert_true(st.topology_runs_ok >= 3);
    si = stream_info(bus, RL_BUS_STREAM_DECISIONS);
    assert_int_equal(si->Created, created);
    jsStreamInfo_Destroy(si);
}

static void test_changed_option_is_applied_by_update(void **state)
{
    fixture_t *f = *state;
    rl_bus_options_t o = test_options(f);
    rl_bus_t *a = bus_open(f, &o);
    assert_true(rl_test_wait_until(pred_connected, a, WAIT_MS));
    ensure_ok(a);
    assert_int_equal(rl_bus_publish_js(a, "renlayer.traces.t.a", "keep-me", "{}", 2), RL_OK);
    assert_true(rl_test_wait_until(pred_no_pending, a, WAIT_MS));

    o.stream_max_age_s = 3600;
    o.session_state_ttl_s = 600;
    rl_bus_t *b = bus_open(f, &o);
    assert_true(rl_test_wait_until(pred_connected, b, WAIT_MS));
    ensure_ok(b);
    rl_bus_stats_t st;
    rl_bus_stats(b, &st);
    assert_int_equal(st.topology_created, 0);
    assert_int_equal(st.topology_updated, 5); /* four streams and the bucket */

    jsStreamInfo *si = stream_info(b, RL_BUS_STREAM_TRACES);
    assert_int_equal(si->Config->MaxAge, 3600LL * NS_PER_S);
    assert_int_equal(si->State.Msgs, 1); /* an update never drops data */
    jsStreamInfo_Destroy(si);
    si = stream_info(b, "KV_" RL_BUS_KV_SESSION_STATE);
    assert_int_equal(si->Config->MaxAge, 600LL * NS_PER_S);
    jsStreamInfo_Destroy(si);

    assert_int_equal(rl_bus_ensure_topology(b), RL_OK);
    rl_bus_stats(b, &st);
    assert_int_equal(st.topology_updated, 5);
}

typedef struct {
    rl_bus_t *bus;
    pthread_barrier_t *start;
    rl_status_t result;
    char error[512];
} ensure_job_t;

static void *ensure_thread(void *arg)
{
    ensure_job_t *job = arg;
    pthread_barrier_wait(job->start);
    job->result = rl_bus_ensure_topology(job->bus);
    snprintf(job->error, sizeof job->error, "%s", rl_error_last());
    return NULL;
}

static void delete_topology(rl_bus_t *bus)
{
    const char *streams[] = {RL_BUS_STREAM_DECISIONS, RL_BUS_STREAM_TRACES, RL_BUS_STREAM_SESSIONS,
                             RL_BUS_STREAM_INSIGHTS, ("KV_" RL_BUS_KV_SESSION_STATE)};
    for (size_t i = 0; i < sizeof streams / sizeof streams[0]; i++)
        js_DeleteStream(rl_bus_js(bus), streams[i], NULL, NULL);
}

/* Two processes starting at once: both ensure from scratch, with the same
 * options and then with different ones; both must succeed. */
static void test_concurrent_ensure(void **state)
{
    fixture_t *f = *state;
    rl_bus_options_t o1 = test_options(f);
    rl_bus_options_t o2 = test_options(f);
    o2.stream_max_age_s = 2 * 24 * 3600;
    rl_bus_t *b1 = bus_open(f, &o1);
    rl_bus_t *b2 = bus_open(f, &o1);
    rl_bus_t *b3 = bus_open(f, &o2);
    assert_true(rl_test_wait_until(pred_connected, b1, WAIT_MS));
    assert_true(rl_test_wait_until(pred_connected, b2, WAIT_MS));
    assert_true(rl_test_wait_until(pred_connected, b3, WAIT_MS));
    ensure_ok(b1); /* JetStream is up */

    rl_bus_t *pairs[2][2] = {{b1, b2}, {b1, b3}};
    for (int round = 0; round < 2; round++) {
        for (int rep = 0; rep < 3; rep++) {
            delete_topology(b1);
            rl_bus_stats_t before[2], after[2];
            for (int i = 0; i < 2; i++)
                rl_bus_stats(pairs[round][i], &before[i]);
            pthread_barrier_t start;
            pthread_barrier_init(&start, NULL, 2);
            ensure_job_t jobs[2] = {{.bus = pairs[round][0], .start = &start},
                                    {.bus = pairs[round][1], .start = &start}};
            pthread_t th[2];
            for (int i = 0; i < 2; i++)
                assert_int_equal(pthread_create(&th[i], NULL, ensure_thread, &jobs[i]), 0);
            for (int i = 0; i < 2; i++)
                pthread_join(th[i], NULL);
            pthread_barrier_destroy(&start);
            for (int i = 0; i < 2; i++)
                if (jobs[i].result != RL_OK)
                    fail_msg("round %d: ensure %d: %s: %s", round, i, rl_status_str(jobs[i].result),
                             jobs[i].error);
            uint64_t created = 0, updated = 0;
            for (int i = 0; i < 2; i++) {
                rl_bus_stats(pairs[round][i], &after[i]);
                created += after[i].topology_created - before[i].topology_created;
                updated += after[i].topology_updated - before[i].topology_updated;
            }
            /* Same options: both may "create" (the server accepts an identical
             * create), nobody updates. Different options: whoever comes second
             * to each of the four streams updates it ("already in use" race
             * included); the bucket is the same for both. */
            assert_true(created >= 5);
            assert_int_equal(updated, round == 0 ? 0 : 4);
            jsStreamInfo *si = stream_info(b1, RL_BUS_STREAM_SESSIONS);
            jsStreamInfo_Destroy(si);
        }
    }
}

static void test_same_msg_id_is_stored_once(void **state)
{
    fixture_t *f = *state;
    rl_bus_options_t o = test_options(f);
    o.ensure_topology = true;
    rl_bus_t *bus = bus_open(f, &o);
    assert_true(rl_test_wait_until(pred_ready, bus, WAIT_MS));

    char subject[RL_BUS_SUBJECT_MAX];
    assert_int_equal(rl_bus_subject_traces(TENANT, AGENT, subject, sizeof subject), RL_OK);
    const char *body = "{\"v\":1,\"trace_id\":\"t-1\"}";
    assert_int_equal(rl_bus_publish_js(bus, subject, "t-1", body, strlen(body)), RL_OK);
    assert_int_equal(rl_bus_publish_js(bus, subject, "t-1", body, strlen(body)), RL_OK);
    assert_true(rl_test_wait_until(pred_no_pending, bus, WAIT_MS));

    jsStreamInfo *si = stream_info(bus, RL_BUS_STREAM_TRACES);
    assert_int_equal(si->State.Msgs, 1);
    jsStreamInfo_Destroy(si);
    rl_bus_stats_t st;
    rl_bus_stats(bus, &st);
    assert_int_equal(st.js_published, 2);
    assert_int_equal(st.js_acked, 2);
    assert_int_equal(st.js_duplicates, 1);
    assert_int_equal(st.js_ack_failures, 0);

    /* bad arguments never reach the bus */
    assert_int_equal(rl_bus_publish_js(bus, subject, "", "x", 1), RL_ERR_INVALID);
    assert_int_equal(rl_bus_publish_js(bus, subject, "a b", "x", 1), RL_ERR_INVALID);
    assert_int_equal(rl_bus_publish_js(bus, "renlayer.traces.>", "id", "x", 1), RL_ERR_INVALID);
    assert_int_equal(rl_bus_publish(bus, "renlayer..usage", "x", 1), RL_ERR_INVALID);
    assert_int_equal(rl_bus_publish(bus, "renlayer.usage.t", "x", 1), RL_OK);
}

static bool pred_hint_down(void *arg)
{
    return !rl_bus_ready_hint(arg);
}

static void test_publish_while_down_is_refused(void **state)
{
    fixture_t *f = *state;
    rl_bus_options_t o = test_options(f);
    o.ensure_topology = true;
    rl_bus_t *bus = bus_open(f, &o);
    assert_true(rl_test_wait_until(pred_ready, bus, WAIT_MS));
    assert_true(rl_bus_ready_hint(bus));

    rl_test_nats_stop(f->nats);
    assert_true(rl_test_wait_until(pred_disconnected, bus, WAIT_MS));
    assert_false(rl_bus_is_ready(bus));
    /* the lock-free hint follows once the disconnect callback has run */
    assert_true(rl_test_wait_until(pred_hint_down, bus, WAIT_MS));
    assert_int_equal(rl_bus_publish_js(bus, "renlayer.traces.t.a", "id-1", "x", 1),
                     RL_ERR_UNAVAILABLE);
    assert_int_equal(rl_bus_publish(bus, "renlayer.usage.t", "x", 1), RL_ERR_UNAVAILABLE);
    rl_bus_stats_t st;
    rl_bus_stats(bus, &st);
    assert_int_equal(st.js_refused, 1);
    assert_int_equal(st.core_refused, 1);
    assert_int_equal(st.js_pending, 0);
}

static void test_server_restart_reconnects_and_is_ready_again(void **state)
{
    fixture_t *f = *state;
    rl_bus_options_t o = test_options(f);
    o.ensure_topology = true;
    rl_bus_t *bus = bus_open(f, &o);
    assert_true(rl_test_wait_until(pred_ready, bus, WAIT_MS));
    assert_int_equal(rl_bus_publish_js(bus, "renlayer.decisions.t.a", "d-1", "{}", 2), RL_OK);
    assert_true(rl_test_wait_until(pred_no_pending, bus, WAIT_MS));

    rl_test_nats_stop(f->nats);
    assert_true(rl_test_wait_until(pred_not_ready, bus, WAIT_MS));
    assert_int_equal(rl_test_nats_start(f->nats), RL_OK);
    assert_true(rl_test_wait_until(pred_ready, bus, WAIT_MS));

    rl_bus_stats_t st;
    rl_bus_stats(bus, &st);
    assert_true(st.reconnects >= 1);
    assert_true(st.disconnects >= 1);
    assert_true(st.topology_runs_ok >= 2);
    assert_int_equal(st.topology_created, 5); /* the store kept them */
    assert_true(recorded(f, &f->ups) >= 2);
    assert_true(recorded(f, &f->downs) >= 1);

    jsStreamInfo *si = stream_info(bus, RL_BUS_STREAM_DECISIONS);
    assert_int_equal(si->State.Msgs, 1);
    jsStreamInfo_Destroy(si);
    assert_int_equal(rl_bus_publish_js(bus, "renlayer.decisions.t.a", "d-2", "{}", 2), RL_OK);
    assert_true(rl_test_wait_until(pred_no_pending, bus, WAIT_MS));
}

/* A paused server keeps the TCP connection but never acks: the window fills
 * and refuses without blocking, then the ack timeout reports each message. */
static void test_full_window_refuses_and_timeouts_are_reported(void **state)
{
    fixture_t *f = *state;
    rl_bus_options_t o = test_options(f);
    o.ensure_topology = true;
    o.max_pending_acks = 2;
    o.ack_timeout_ms = 300;
    rl_bus_t *bus = bus_open(f, &o);
    assert_true(rl_test_wait_until(pred_ready, bus, WAIT_MS));

    assert_int_equal(rl_test_nats_pause(f->nats), RL_OK);
    assert_int_equal(rl_bus_publish_js(bus, "renlayer.traces.t.a", "w-1", "one", 3), RL_OK);
    assert_int_equal(rl_bus_publish_js(bus, "renlayer.traces.t.a", "w-2", "two", 3), RL_OK);
    int64_t t0 = rl_test_now_ms();
    assert_int_equal(rl_bus_publish_js(bus, "renlayer.traces.t.a", "w-3", "three", 5),
                     RL_ERR_UNAVAILABLE);
    assert_true(rl_test_now_ms() - t0 < 50); /* refused, not stalled */

    assert_true(rl_test_wait_until(pred_no_pending, bus, WAIT_MS));
    assert_int_equal(recorded(f, &f->nacks), 2);
    pthread_mutex_lock(&f->mu);
    assert_int_equal(f->nack_status, RL_ERR_TIMEOUT);
    bool last_is_w2 = strcmp(f->nack_id, "w-2") == 0 && strcmp(f->nack_data, "two") == 0;
    bool last_is_w1 = strcmp(f->nack_id, "w-1") == 0 && strcmp(f->nack_data, "one") == 0;
    pthread_mutex_unlock(&f->mu);
    assert_true(last_is_w1 || last_is_w2);
    rl_bus_stats_t st;
    rl_bus_stats(bus, &st);
    assert_int_equal(st.js_ack_failures, 2);
    assert_int_equal(st.js_refused, 1);
    assert_int_equal(rl_test_nats_resume(f->nats), RL_OK);
}

/* A server that stops reading must not hold a publisher: every call returns
 * within the write deadline, and once the deadline drops the connection the
 * bus refuses. */
static void test_stalled_server_never_blocks_publish_for_long(void **state)
{
    fixture_t *f = *state;
    rl_bus_options_t o = test_options(f);
    o.ensure_topology = true;
    o.write_deadline_ms = 300;
    o.ack_timeout_ms = 20000; /* only the write deadline may end this */
    o.drain_timeout_ms = 100;
    rl_bus_t *bus = bus_open(f, &o);
    assert_true(rl_test_wait_until(pred_ready, bus, WAIT_MS));

    static char big[64 * 1024];
    memset(big, 'x', sizeof big);
    assert_int_equal(rl_test_nats_pause(f->nats), RL_OK);
    int64_t worst = 0;
    rl_status_t st = RL_OK;
    char id[32];
    for (int i = 0; i < 1000 && st == RL_OK; i++) { /* up to 64 MB: far beyond socket buffers */
        snprintf(id, sizeof id, "big-%d", i);
        int64_t t0 = rl_test_now_ms();
        st = rl_bus_publish_js(bus, "renlayer.traces.t.a", id, big, sizeof big);
        int64_t took = rl_test_now_ms() - t0;
        worst = took > worst ? took : worst;
    }
    assert_int_equal(st, RL_ERR_UNAVAILABLE);
    assert_true(worst < 300 + 700);
    assert_int_equal(rl_test_nats_resume(f->nats), RL_OK);
}

static void test_destroy_reports_unacked(void **state)
{
    fixture_t *f = *state;
    rl_bus_options_t o = test_options(f);
    o.ensure_topology = true;
    o.drain_timeout_ms = 200;
    rl_bus_t *bus = bus_open(f, &o);
    assert_true(rl_test_wait_until(pred_ready, bus, WAIT_MS));

    assert_int_equal(rl_test_nats_pause(f->nats), RL_OK);
    assert_int_equal(rl_bus_publish_js(bus, "renlayer.traces.t.a", "late-1", "late", 4), RL_OK);
    int64_t t0 = rl_test_now_ms();
    bus_close(f, bus);
    assert_true(rl_test_now_ms() - t0 < 3000);
    assert_int_equal(recorded(f, &f->nacks), 1);
    pthread_mutex_lock(&f->mu);
    assert_int_equal(f->nack_status, RL_ERR_UNAVAILABLE);
    assert_string_equal(f->nack_id, "late-1");
    assert_string_equal(f->nack_data, "late");
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(rl_test_nats_resume(f->nats), RL_OK);
}

static void test_create_rejects_bad_options(void **state)
{
    (void)state;
    rl_bus_t *bus = (rl_bus_t *)0x1;
    rl_bus_options_t o = {0};
    assert_int_equal(rl_bus_create(&o, &bus), RL_ERR_INVALID);
    o.url = "nats://127.0.0.1:1";
    o.stream_max_age_s = -1;
    assert_int_equal(rl_bus_create(&o, &bus), RL_ERR_INVALID);
    assert_ptr_equal(bus, (rl_bus_t *)0x1); /* untouched on failure */
    rl_bus_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_subject_builders),
        cmocka_unit_test(test_create_rejects_bad_options),
        cmocka_unit_test_setup_teardown(test_create_while_down_then_up, setup_down, teardown),
        cmocka_unit_test_setup_teardown(test_create_while_hung_then_resumed, setup_down, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_before_any_connection, setup_down, teardown),
        cmocka_unit_test_setup_teardown(test_ensure_twice_is_noop, setup_up, teardown),
        cmocka_unit_test_setup_teardown(test_changed_option_is_applied_by_update, setup_up,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_ensure, setup_up, teardown),
        cmocka_unit_test_setup_teardown(test_same_msg_id_is_stored_once, setup_up, teardown),
        cmocka_unit_test_setup_teardown(test_publish_while_down_is_refused, setup_up, teardown),
        cmocka_unit_test_setup_teardown(test_server_restart_reconnects_and_is_ready_again, setup_up,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_full_window_refuses_and_timeouts_are_reported,
                                        setup_up, teardown),
        cmocka_unit_test_setup_teardown(test_stalled_server_never_blocks_publish_for_long, setup_up,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_destroy_reports_unacked, setup_up, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, group_teardown);
}
