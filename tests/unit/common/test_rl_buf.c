#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "rl_buf.h"

static void append_and_take(void **state)
{
    (void)state;
    rl_buf_t b;
    rl_buf_init(&b, 1024);
    assert_int_equal(rl_buf_append_str(&b, "hello"), RL_OK);
    assert_int_equal(rl_buf_appendf(&b, " %s %d", "world", 42), RL_OK);
    assert_string_equal(b.data, "hello world 42");
    size_t len;
    char *s = rl_buf_take(&b, &len);
    assert_int_equal(len, 14);
    assert_string_equal(s, "hello world 42");
    assert_null(b.data);
    free(s);
    rl_buf_free(&b);
}

static void limit_is_hard(void **state)
{
    (void)state;
    rl_buf_t b;
    rl_buf_init(&b, 8);
    assert_int_equal(rl_buf_append(&b, "12345678", 8), RL_OK);
    assert_int_equal(rl_buf_append(&b, "9", 1), RL_ERR_TOO_LARGE);
    assert_int_equal(b.len, 8);
    assert_string_equal(b.data, "12345678");
    assert_int_equal(rl_buf_appendf(&b, "%d", 1), RL_ERR_TOO_LARGE);
    assert_int_equal(b.len, 8);
    rl_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    assert_int_equal(rl_buf_appendf(&b, "%s", "123456789"), RL_ERR_TOO_LARGE);
    assert_int_equal(b.len, 0);
    rl_buf_free(&b);
}

static void grows_across_many_appends(void **state)
{
    (void)state;
    rl_buf_t b;
    rl_buf_init(&b, 1 << 20);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(rl_buf_append(&b, "abcdefghij", 10), RL_OK);
    assert_int_equal(b.len, 100000);
    assert_int_equal(b.data[99999], 'j');
    assert_int_equal(b.data[100000], '\0');
    rl_buf_free(&b);
}

static void recycle_keeps_small_memory_only(void **state)
{
    (void)state;
    rl_buf_t b;
    rl_buf_init(&b, 1 << 20);
    assert_int_equal(rl_buf_append_str(&b, "first use"), RL_OK);
    char *kept = b.data;
    rl_buf_recycle(&b, 4096, 5);
    assert_ptr_equal(b.data, kept); /* small: kept, empty, new limit */
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    assert_int_equal(rl_buf_append_str(&b, "123456"), RL_ERR_TOO_LARGE);
    assert_int_equal(rl_buf_append_str(&b, "12345"), RL_OK);
    assert_string_equal(b.data, "12345");
    rl_buf_recycle(&b, 4096, 1 << 20);
    static char big[10000];
    memset(big, 'x', sizeof big);
    assert_int_equal(rl_buf_append(&b, big, sizeof big), RL_OK);
    rl_buf_recycle(&b, 4096, 1 << 20); /* large: freed */
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    rl_buf_free(&b);
}

static void empty_take_is_null(void **state)
{
    (void)state;
    rl_buf_t b;
    rl_buf_init(&b, 10);
    size_t len = 99;
    assert_null(rl_buf_take(&b, &len));
    assert_int_equal(len, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(append_and_take),
        cmocka_unit_test(limit_is_hard),
        cmocka_unit_test(grows_across_many_appends),
        cmocka_unit_test(empty_take_is_null),
        cmocka_unit_test(recycle_keeps_small_memory_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
