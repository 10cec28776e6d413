/* Tests libs/common/rl_metrics.c: exact exposition text, number formatting,
 * lock-free updates from several threads, label and name validation, kind
 * conflicts and bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rl_metrics.h"

static int setup(void **state)
{
    rl_metrics_t *m = NULL;
    if (rl_metrics_create(&m) != RL_OK)
        return -1;
    *state = m;
    return 0;
}

static int teardown(void **state)
{
    rl_metrics_destroy(*state);
    return 0;
}

/* Renders m; returns owned text (free()). */
static char *render(rl_metrics_t *m)
{
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(rl_metrics_render(m, &text, &len), RL_OK);
    assert_non_null(text);
    assert_int_equal(len, strlen(text));
    return text;
}

static void test_render_exact(void **state)
{
    rl_metrics_t *m = *state;
    rl_counter_t *ok = NULL, *err = NULL, *again = NULL;
    rl_gauge_t *inflight = NULL;
    rl_histogram_t *latency = NULL;
    static const double bounds[] = {0.1, 0.5, 1};

    assert_int_equal(rl_metrics_counter(m, "rl_requests_total", "Requests handled.",
                                        "status=\"200\",method=\"GET\"", &ok),
                     RL_OK);
    assert_int_equal(rl_metrics_gauge(m, "rl_inflight", NULL, NULL, &inflight), RL_OK);
    /* A second series of the first family: rendered with it, its help ignored. */
    assert_int_equal(
        rl_metrics_counter(m, "rl_requests_total", "Other help.", "status=\"500\"", &err), RL_OK);
    assert_int_equal(rl_metrics_histogram(m, "rl_latency_seconds",
                                          "Time to first byte.\nIn seconds, \\ escaped.",
                                          "route=\"/v1/chat\"", bounds, 3, &latency),
                     RL_OK);
    /* Same name and labels in another order: the same counter. */
    assert_int_equal(
        rl_metrics_counter(m, "rl_requests_total", NULL, "method=\"GET\",status=\"200\"", &again),
        RL_OK);
    assert_ptr_equal(again, ok);

    rl_counter_add(ok, 2);
    rl_counter_add(again, 1);
    rl_counter_add(err, 1);
    rl_gauge_set(inflight, 2.5);
    rl_gauge_add(inflight, -1);
    rl_histogram_observe(latency, 0.0625);
    rl_histogram_observe(latency, 0.25);
    rl_histogram_observe(latency, 0.25);
    rl_histogram_observe(latency, 0.5); /* on a bound: counted in that bucket */
    rl_histogram_observe(latency, 2);
    rl_histogram_observe(latency, NAN); /* ignored */

    char *text = render(m);
    assert_string_equal(
        text, "# HELP rl_requests_total Requests handled.\n"
              "# TYPE rl_requests_total counter\n"
              "rl_requests_total{method=\"GET\",status=\"200\"} 3\n"
              "rl_requests_total{status=\"500\"} 1\n"
              "# TYPE rl_inflight gauge\n"
              "rl_inflight 1.5\n"
              "# HELP rl_latency_seconds Time to first byte.\\nIn seconds, \\\\ escaped.\n"
              "# TYPE rl_latency_seconds histogram\n"
              "rl_latency_seconds_bucket{route=\"/v1/chat\",le=\"0.1\"} 1\n"
              "rl_latency_seconds_bucket{route=\"/v1/chat\",le=\"0.5\"} 4\n"
              "rl_latency_seconds_bucket{route=\"/v1/chat\",le=\"1\"} 4\n"
              "rl_latency_seconds_bucket{route=\"/v1/chat\",le=\"+Inf\"} 5\n"
              "rl_latency_seconds_sum{route=\"/v1/chat\"} 3.0625\n"
              "rl_latency_seconds_count{route=\"/v1/chat\"} 5\n");
    free(text);
}

static void test_render_empty_and_unlabelled_histogram(void **state)
{
    rl_metrics_t *m = *state;
    char *text = render(m);
    assert_string_equal(text, "");
    free(text);

    rl_histogram_t *h = NULL, *only_inf = NULL;
    assert_int_equal(rl_metrics_histogram(m, "rl_upstream_seconds", NULL, NULL,
                                          RL_BUCKETS_LATENCY_SECONDS, RL_BUCKETS_LATENCY_SECONDS_N,
                                          &h),
                     RL_OK);
    assert_int_equal(rl_metrics_histogram(m, "rl_events", NULL, "", NULL, 0, &only_inf), RL_OK);
    rl_histogram_observe(h, 0.003);
    rl_histogram_observe(h, 100);
    rl_histogram_observe(only_inf, -4);
    text = render(m);
    assert_string_equal(text, "# TYPE rl_upstream_seconds histogram\n"
                              "rl_upstream_seconds_bucket{le=\"0.0005\"} 0\n"
                              "rl_upstream_seconds_bucket{le=\"0.001\"} 0\n"
                              "rl_upstream_seconds_bucket{le=\"0.0025\"} 0\n"
                              "rl_upstream_seconds_bucket{le=\"0.005\"} 1\n"
                              "rl_upstream_seconds_bucket{le=\"0.01\"} 1\n"
                              "rl_upstream_seconds_bucket{le=\"0.025\"} 1\n"
                              "rl_upstream_seconds_bucket{le=\"0.05\"} 1\n"
                              "rl_upstream_seconds_bucket{le=\"0.1\"} 1\n"
                              "rl_upstream_seconds_bucket{le=\"0.25\"} 1\n"
                              "rl_upstream_seconds_bucket{le=\"0.5\"} 1\n"
                              "rl_upstream_seconds_bucket{le=\"1\"} 1\n"
                              "rl_upstream_seconds_bucket{le=\"2.5\"} 1\n"
                              "rl_upstream_seconds_bucket{le=\"5\"} 1\n"
                              "rl_upstream_seconds_bucket{le=\"10\"} 1\n"
                              "rl_upstream_seconds_bucket{le=\"30\"} 1\n"
                              "rl_upstream_seconds_bucket{le=\"+Inf\"} 2\n"
                              "rl_upstream_seconds_sum 100.003\n"
                              "rl_upstream_seconds_count 2\n"
                              "# TYPE rl_events histogram\n"
                              "rl_events_bucket{le=\"+Inf\"} 1\n"
                              "rl_events_sum -4\n"
                              "rl_events_count 1\n");
    free(text);
}

static void test_number_formatting(void **state)
{
    rl_metrics_t *m = *state;
    static const struct {
        double v;
        const char *text;
    } cases[] = {
        {0, "0"},
        {0.1, "0.1"},
        {-2.5, "-2.5"},
        {1.0 / 3, "0.3333333333333333"},
        {123456789, "123456789"},
        {1e21, "1e+21"},
        {1e-7, "1e-07"},
        {INFINITY, "+Inf"},
        {-INFINITY, "-Inf"},
        {NAN, "NaN"},
        {9007199254740993.0, "9007199254740992"},
        {10, "10"},
        {400000, "400000"},
        {1e16, "10000000000000000"},
        {1e17, "1e+17"},
        {0.0001, "0.0001"},
        {0.00001, "1e-05"},
        {-30, "-30"},
        {2.5e-3, "0.0025"},
        {123456.789, "123456.789"},
    };
    rl_gauge_t *g = NULL;
    assert_int_equal(rl_metrics_gauge(m, "g", NULL, NULL, &g), RL_OK);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rl_gauge_set(g, cases[i].v);
        char *text = render(m);
        char expect[64];
        snprintf(expect, sizeof expect, "# TYPE g gauge\ng %s\n", cases[i].text);
        assert_string_equal(text, expect);
        free(text);
    }
    rl_counter_t *c = NULL;
    assert_int_equal(rl_metrics_counter(m, "c_total", NULL, NULL, &c), RL_OK);
    rl_counter_add(c, UINT64_MAX);
    char *text = render(m);
    assert_non_null(strstr(text, "\nc_total 18446744073709551615\n"));
    free(text);
}

enum { THREADS = 4, PER_THREAD = 100000 };

struct worker {
    rl_metrics_t *m;
    rl_counter_t *registered; /* what this thread's registration returned */
    rl_gauge_t *gauge;
    rl_histogram_t *hist;
};

static const double CONC_BOUNDS[] = {0.5, 1};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    /* Every thread registers the same counter at once: one must win. */
    if (rl_metrics_counter(w->m, "rl_ops_total", "Operations.", "kind=\"x\"", &w->registered) !=
        RL_OK)
        return (void *)1;
    for (int i = 0; i < PER_THREAD; i++) {
        rl_counter_add(w->registered, 1);
        rl_gauge_add(w->gauge, 1.0);
        rl_histogram_observe(w->hist, (i % 4) * 0.5); /* 0, 0.5, 1, 1.5 */
    }
    return NULL;
}

static void test_concurrent_updates_exact(void **state)
{
    rl_metrics_t *m = *state;
    rl_gauge_t *g = NULL;
    rl_histogram_t *h = NULL;
    assert_int_equal(rl_metrics_gauge(m, "rl_level", NULL, NULL, &g), RL_OK);
    assert_int_equal(rl_metrics_histogram(m, "rl_sizes", NULL, NULL, CONC_BOUNDS, 2, &h), RL_OK);
    struct worker w[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){.m = m, .gauge = g, .hist = h};
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    /* Scrapes while the workers run must be safe. */
    for (int i = 0; i < 20; i++)
        free(render(m));
    for (int i = 0; i < THREADS; i++) {
        void *ret = (void *)1;
        assert_int_equal(pthread_join(t[i], &ret), 0);
        assert_null(ret);
        assert_ptr_equal(w[i].registered, w[0].registered);
    }
    char *text = render(m);
    assert_non_null(strstr(text, "\nrl_level 400000\n"));
    assert_non_null(strstr(text, "\nrl_sizes_bucket{le=\"0.5\"} 200000\n"));
    assert_non_null(strstr(text, "\nrl_sizes_bucket{le=\"1\"} 300000\n"));
    assert_non_null(strstr(text, "\nrl_sizes_bucket{le=\"+Inf\"} 400000\n"));
    assert_non_null(strstr(text, "\nrl_sizes_sum 300000\n"));
    assert_non_null(strstr(text, "\nrl_sizes_count 400000\n"));
    assert_non_null(strstr(text, "# HELP rl_ops_total Operations.\n"
                                 "# TYPE rl_ops_total counter\n"
                                 "rl_ops_total{kind=\"x\"} 400000\n"));
    free(text);
}

static void test_label_escaping(void **state)
{
    rl_metrics_t *m = *state;
    rl_counter_t *c = NULL, *same = NULL;
    /* Escaped backslash, quote and line feed pass through verbatim. */
    assert_int_equal(
        rl_metrics_counter(m, "rl_paths_total", NULL, "path=\"a\\\\b\\\"c\\nd\",e=\"\"", &c),
        RL_OK);
    assert_int_equal(rl_metrics_counter(m, "rl_paths_total", NULL, "path=\"caf\xc3\xa9\"", &same),
                     RL_OK);
    assert_ptr_not_equal(c, same);
    assert_int_equal(rl_metrics_counter(m, "rl_paths_total", NULL, NULL, &c), RL_OK);
    assert_int_equal(rl_metrics_counter(m, "rl_paths_total", NULL, "", &same), RL_OK);
    assert_ptr_equal(c, same); /* NULL and "" are both the empty set */
    char *text = render(m);
    assert_string_equal(text, "# TYPE rl_paths_total counter\n"
                              "rl_paths_total{e=\"\",path=\"a\\\\b\\\"c\\nd\"} 0\n"
                              "rl_paths_total{path=\"caf\xc3\xa9\"} 0\n"
                              "rl_paths_total 0\n");
    free(text);

    static const char *bad[] = {
        "path=\"a\nb\"",  /* raw line feed */
        "path=\"a\rb\"",  /* raw carriage return */
        "path=\"a\\tb\"", /* unknown escape */
        "path=\"a\\\"",   /* the quote is escaped: unterminated */
        "path=\"abc",     /* unterminated */
        "path=\"a\\",     /* escape at the end */
        "a=\"1\",",       /* trailing comma */
        ",a=\"1\"",       /* leading comma */
        "a=\"1\",,b=\"2\"",
        "a=\"1\", b=\"2\"", /* space */
        "a=\"1\"b=\"2\"",   /* comma missing */
        "a=1",              /* value not quoted */
        "a='1'",
        "a = \"1\"",
        "=\"1\"",
        "1a=\"x\"", /* name starts with a digit */
        "a-b=\"x\"",
        "a:b=\"x\"",          /* colons are for metric names only */
        "__name__=\"x\"",     /* reserved */
        "a=\"1\",a=\"2\"",    /* twice */
        "a=\"\xff\"",         /* not UTF-8 */
        "a=\"\xc0\xaf\"",     /* overlong */
        "a=\"\xed\xa0\x80\"", /* surrogate */
        "a=\"\xe2\x82\"",     /* truncated sequence */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rl_counter_t *untouched = (rl_counter_t *)&c;
        assert_int_equal(rl_metrics_counter(m, "rl_bad_total", NULL, bad[i], &untouched),
                         RL_ERR_INVALID);
        assert_ptr_equal(untouched, (rl_counter_t *)&c);
    }
    text = render(m);
    assert_null(strstr(text, "rl_bad_total")); /* nothing half-registered */
    free(text);
}

static void test_label_bounds_and_le(void **state)
{
    rl_metrics_t *m = *state;
    char labels[RL_METRICS_MAX_LABELS_LEN + 64];
    size_t w = 0;
    for (int i = 0; i <= RL_METRICS_MAX_LABELS; i++)
        w += (size_t)snprintf(labels + w, sizeof labels - w, "%sl%d=\"v\"", i ? "," : "", i);
    rl_counter_t *c = NULL;
    assert_int_equal(rl_metrics_counter(m, "rl_c", NULL, labels, &c), RL_ERR_TOO_LARGE);
    /* Exactly the maximum number of labels is fine. */
    *strrchr(labels, ',') = '\0';
    assert_int_equal(rl_metrics_counter(m, "rl_c", NULL, labels, &c), RL_OK);

    memset(labels, 'a', sizeof labels - 1);
    labels[sizeof labels - 1] = '\0';
    memcpy(labels, "a=\"", 3);
    labels[sizeof labels - 2] = '"';
    assert_int_equal(rl_metrics_counter(m, "rl_c", NULL, labels, &c), RL_ERR_TOO_LARGE);

    rl_histogram_t *h = NULL;
    assert_int_equal(rl_metrics_histogram(m, "rl_h", NULL, "le=\"1\"", NULL, 0, &h),
                     RL_ERR_INVALID);
    assert_int_equal(rl_metrics_counter(m, "rl_le_total", NULL, "le=\"1\"", &c), RL_OK);
}

static void test_name_validation(void **state)
{
    rl_metrics_t *m = *state;
    rl_counter_t *c = NULL;
    static const char *good[] = {"a", "_x", "A", "a:b_c1", "rl_requests_total", ":x"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_int_equal(rl_metrics_counter(m, good[i], NULL, NULL, &c), RL_OK);
    static const char *bad[] = {"", "1abc", "a-b", "a b", "a.b", "caf\xc3\xa9", "a\n", "a{"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(rl_metrics_counter(m, bad[i], NULL, NULL, &c), RL_ERR_INVALID);
    assert_int_equal(rl_metrics_counter(m, NULL, NULL, NULL, &c), RL_ERR_INVALID);
    char name[RL_METRICS_MAX_NAME + 2];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    assert_int_equal(rl_metrics_counter(m, name, NULL, NULL, &c), RL_ERR_TOO_LARGE);
    name[RL_METRICS_MAX_NAME] = '\0';
    assert_int_equal(rl_metrics_counter(m, name, NULL, NULL, &c), RL_OK);
    /* Help must be UTF-8 and bounded. */
    assert_int_equal(rl_metrics_counter(m, "h1", "bad \xff", NULL, &c), RL_ERR_INVALID);
    char help[RL_METRICS_MAX_HELP + 2];
    memset(help, 'h', sizeof help - 1);
    help[sizeof help - 1] = '\0';
    assert_int_equal(rl_metrics_counter(m, "h2", help, NULL, &c), RL_ERR_TOO_LARGE);
}

static void test_kind_conflicts(void **state)
{
    rl_metrics_t *m = *state;
    rl_counter_t *c = NULL;
    rl_gauge_t *g = NULL;
    rl_histogram_t *h = NULL, *h2 = NULL;
    static const double b1[] = {1, 2}, b2[] = {1, 3};
    assert_int_equal(rl_metrics_counter(m, "x", NULL, NULL, &c), RL_OK);
    assert_int_equal(rl_metrics_gauge(m, "x", NULL, NULL, &g), RL_ERR_CONFLICT);
    assert_int_equal(rl_metrics_gauge(m, "x", NULL, "a=\"1\"", &g), RL_ERR_CONFLICT);
    assert_int_equal(rl_metrics_histogram(m, "x", NULL, NULL, b1, 2, &h), RL_ERR_CONFLICT);
    assert_null(g);
    assert_null(h);

    assert_int_equal(rl_metrics_histogram(m, "lat", NULL, NULL, b1, 2, &h), RL_OK);
    assert_int_equal(rl_metrics_histogram(m, "lat", NULL, NULL, b1, 2, &h2), RL_OK);
    assert_ptr_equal(h, h2);
    assert_int_equal(rl_metrics_histogram(m, "lat", NULL, NULL, b2, 2, &h2), RL_ERR_CONFLICT);
    assert_int_equal(rl_metrics_histogram(m, "lat", NULL, NULL, b1, 1, &h2), RL_ERR_CONFLICT);
    /* Other labels may use other bounds: a separate series. */
    assert_int_equal(rl_metrics_histogram(m, "lat", NULL, "r=\"2\"", b2, 2, &h2), RL_OK);
    assert_ptr_not_equal(h, h2);
    /* Names a histogram renders are taken, both ways round. */
    assert_int_equal(rl_metrics_counter(m, "lat_count", NULL, NULL, &c), RL_ERR_CONFLICT);
    assert_int_equal(rl_metrics_gauge(m, "lat_bucket", NULL, NULL, &g), RL_ERR_CONFLICT);
    assert_int_equal(rl_metrics_counter(m, "lat_sum", NULL, NULL, &c), RL_ERR_CONFLICT);
    assert_int_equal(rl_metrics_counter(m, "lat_total", NULL, NULL, &c), RL_OK);
    assert_int_equal(rl_metrics_counter(m, "q_sum", NULL, NULL, &c), RL_OK);
    assert_int_equal(rl_metrics_histogram(m, "q", NULL, NULL, b1, 2, &h), RL_ERR_CONFLICT);
}

static void test_bounds_validation(void **state)
{
    rl_metrics_t *m = *state;
    rl_histogram_t *h = NULL;
    static const double dup[] = {1, 1}, down[] = {2, 1}, nan[] = {NAN}, inf[] = {1, INFINITY};
    assert_int_equal(rl_metrics_histogram(m, "h", NULL, NULL, dup, 2, &h), RL_ERR_INVALID);
    assert_int_equal(rl_metrics_histogram(m, "h", NULL, NULL, down, 2, &h), RL_ERR_INVALID);
    assert_int_equal(rl_metrics_histogram(m, "h", NULL, NULL, nan, 1, &h), RL_ERR_INVALID);
    assert_int_equal(rl_metrics_histogram(m, "h", NULL, NULL, inf, 2, &h), RL_ERR_INVALID);
    assert_int_equal(rl_metrics_histogram(m, "h", NULL, NULL, NULL, 2, &h), RL_ERR_INVALID);
    double many[RL_METRICS_MAX_BUCKETS + 1];
    for (size_t i = 0; i < sizeof many / sizeof many[0]; i++)
        many[i] = (double)i;
    assert_int_equal(rl_metrics_histogram(m, "h", NULL, NULL, many, RL_METRICS_MAX_BUCKETS + 1, &h),
                     RL_ERR_TOO_LARGE);
    assert_null(h);
    assert_int_equal(rl_metrics_histogram(m, "h", NULL, NULL, many, RL_METRICS_MAX_BUCKETS, &h),
                     RL_OK);
    /* The exported bucket sets are valid. */
    rl_histogram_t *a = NULL, *b = NULL, *c = NULL;
    assert_int_equal(rl_metrics_histogram(m, "a", NULL, NULL, RL_BUCKETS_LATENCY_SECONDS,
                                          RL_BUCKETS_LATENCY_SECONDS_N, &a),
                     RL_OK);
    assert_int_equal(rl_metrics_histogram(m, "b", NULL, NULL, RL_BUCKETS_MICROSECONDS,
                                          RL_BUCKETS_MICROSECONDS_N, &b),
                     RL_OK);
    assert_int_equal(
        rl_metrics_histogram(m, "c", NULL, NULL, RL_BUCKETS_BYTES, RL_BUCKETS_BYTES_N, &c), RL_OK);
    assert_true(RL_BUCKETS_LATENCY_SECONDS[0] == 0.0005);
    assert_true(RL_BUCKETS_LATENCY_SECONDS[RL_BUCKETS_LATENCY_SECONDS_N - 1] == 30);
}

static void test_series_limit(void **state)
{
    rl_metrics_t *m = *state;
    rl_counter_t *c = NULL;
    char labels[32];
    for (int i = 0; i < RL_METRICS_MAX_SERIES; i++) {
        snprintf(labels, sizeof labels, "i=\"%d\"", i);
        assert_int_equal(rl_metrics_counter(m, "rl_many_total", NULL, labels, &c), RL_OK);
    }
    assert_int_equal(rl_metrics_counter(m, "rl_many_total", NULL, "i=\"x\"", &c), RL_ERR_TOO_LARGE);
    /* Finding an existing one still works at the limit. */
    assert_int_equal(rl_metrics_counter(m, "rl_many_total", NULL, "i=\"7\"", &c), RL_OK);
}

static void test_null_metrics_are_no_ops(void **state)
{
    (void)state;
    rl_counter_add(NULL, 1);
    rl_gauge_set(NULL, 1);
    rl_gauge_add(NULL, 1);
    rl_histogram_observe(NULL, 1);
    rl_metrics_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_render_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_empty_and_unlabelled_histogram, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_number_formatting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_updates_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_label_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_label_bounds_and_le, setup, teardown),
        cmocka_unit_test_setup_teardown(test_name_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kind_conflicts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounds_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_series_limit, setup, teardown),
        cmocka_unit_test(test_null_metrics_are_no_ops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
