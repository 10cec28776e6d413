#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>

#include "rl_cond.h"

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t ns_of(struct timespec ts)
{
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void deadline_is_ms_from_now_and_normalised(void **state)
{
    (void)state;
    const int64_t cases[] = {0, 1, 999, 1000, 1001, 1500, 86400123};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t before = mono_ns();
        struct timespec d = rl_cond_deadline(cases[i]);
        int64_t after = mono_ns();
        assert_true(d.tv_nsec >= 0 && d.tv_nsec < 1000000000L);
        assert_true(ns_of(d) >= before + cases[i] * 1000000);
        assert_true(ns_of(d) <= after + cases[i] * 1000000);
    }
}

static void negative_ms_is_now(void **state)
{
    (void)state;
    int64_t before = mono_ns();
    struct timespec d = rl_cond_deadline(-5000);
    assert_true(ns_of(d) >= before);
    assert_true(ns_of(d) <= mono_ns());
}

/* A wait on a condition variable of rl_cond_init ends at a deadline of
 * rl_cond_deadline, not before: with the default (wall) clock, that
 * monotonic deadline would read as 1970 and the wait would end at once. */
static void timed_wait_runs_on_the_monotonic_clock(void **state)
{
    (void)state;
    pthread_cond_t cond;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    assert_int_equal(rl_cond_init(&cond), 0);
    struct timespec d = rl_cond_deadline(30);
    pthread_mutex_lock(&mu);
    int rc = 0;
    while (rc == 0) /* a spurious wake-up returns 0: wait again */
        rc = pthread_cond_timedwait(&cond, &mu, &d);
    pthread_mutex_unlock(&mu);
    assert_int_equal(rc, ETIMEDOUT);
    assert_true(mono_ns() >= ns_of(d));
    pthread_cond_destroy(&cond);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(deadline_is_ms_from_now_and_normalised),
        cmocka_unit_test(negative_ms_is_now),
        cmocka_unit_test(timed_wait_runs_on_the_monotonic_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
