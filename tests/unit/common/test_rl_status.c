#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <string.h>

#include "rl_status.h"

static void names_every_status(void **state)
{
    (void)state;
    assert_string_equal(rl_status_str(RL_OK), "RL_OK");
    assert_string_equal(rl_status_str(RL_ERR_TOO_LARGE), "RL_ERR_TOO_LARGE");
    assert_string_equal(rl_status_str((rl_status_t)999), "RL_ERR_UNKNOWN");
    for (int s = RL_OK; s <= RL_ERR_INTERNAL; s++)
        assert_string_not_equal(rl_status_str((rl_status_t)s), "RL_ERR_UNKNOWN");
}

static void records_context(void **state)
{
    (void)state;
    rl_error_clear();
    assert_string_equal(rl_error_last(), "");
    assert_int_equal(rl_error(RL_ERR_INVALID, "bad %s", "thing"), RL_ERR_INVALID);
    assert_non_null(strstr(rl_error_last(), "test_rl_status.c:"));
    assert_non_null(strstr(rl_error_last(), "bad thing"));
    /* the message alone, for clients: no source location */
    assert_string_equal(rl_error_message(), "bad thing");
    rl_error(RL_ERR_IO, "a: b: c");
    assert_string_equal(rl_error_message(), "a: b: c");
    rl_error_clear();
    assert_string_equal(rl_error_message(), "");
}

static void truncates_long_messages(void **state)
{
    (void)state;
    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    rl_error(RL_ERR_IO, "%s", big);
    assert_true(strlen(rl_error_last()) < 512);
}

static void *other_thread(void *arg)
{
    (void)arg;
    rl_error(RL_ERR_IO, "from the other thread");
    return NULL;
}

static void context_is_per_thread(void **state)
{
    (void)state;
    rl_error(RL_ERR_INVALID, "mine");
    pthread_t t;
    pthread_create(&t, NULL, other_thread, NULL);
    pthread_join(t, NULL);
    assert_non_null(strstr(rl_error_last(), "mine"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names_every_status),
        cmocka_unit_test(records_context),
        cmocka_unit_test(truncates_long_messages),
        cmocka_unit_test(context_is_per_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
