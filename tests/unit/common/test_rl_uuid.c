/* Tests libs/common/rl_uuid.c: version 7 layout and ordering (also across
 * threads), the RFC 9562 example, text round-trips and malformed text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>

#include <cmocka.h>

#include "rl_uuid.h"

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void test_v7_layout(void **state)
{
    (void)state;
    uint64_t before = now_ms();
    for (int i = 0; i < 1000; i++) {
        rl_uuid_t u;
        assert_int_equal(rl_uuid_v7(&u), RL_OK);
        assert_int_equal(u.b[6] >> 4, 7);      /* version */
        assert_int_equal(u.b[8] & 0xc0, 0x80); /* variant 10 */
        uint64_t ms = rl_uuid_v7_ms(&u);
        /* At most a few ms ahead: 1000 ids cannot exhaust the counter. */
        assert_true(ms >= before);
        assert_true(ms <= now_ms() + 1);
    }
}

static void test_v7_ordering_100k(void **state)
{
    (void)state;
    enum { N = 100000 };
    rl_uuid_t prev, cur;
    assert_int_equal(rl_uuid_v7(&prev), RL_OK);
    int same_ms = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(rl_uuid_v7(&cur), RL_OK);
        assert_true(rl_uuid_cmp(&prev, &cur) < 0);
        assert_true(rl_uuid_v7_ms(&prev) <= rl_uuid_v7_ms(&cur));
        same_ms += rl_uuid_v7_ms(&prev) == rl_uuid_v7_ms(&cur);
        /* The text form sorts the same way. */
        char a[RL_UUID_STR_LEN + 1], b[RL_UUID_STR_LEN + 1];
        rl_uuid_format(&prev, a);
        rl_uuid_format(&cur, b);
        assert_true(strcmp(a, b) < 0);
        prev = cur;
    }
    /* The counter was exercised: many ids shared a millisecond. */
    assert_true(same_ms > 0);
}

enum { THREADS = 4, PER_THREAD = 25000 };

static void *gen_thread(void *arg)
{
    rl_uuid_t *ids = arg;
    for (int i = 0; i < PER_THREAD; i++)
        if (rl_uuid_v7(&ids[i]) != RL_OK)
            return (void *)1;
    return NULL;
}

static int cmp_ids(const void *a, const void *b)
{
    return rl_uuid_cmp(a, b);
}

static void test_v7_threads_unique_and_ordered(void **state)
{
    (void)state;
    rl_uuid_t *ids = calloc(THREADS * PER_THREAD, sizeof *ids);
    assert_non_null(ids);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, gen_thread, ids + i * PER_THREAD), 0);
    for (int i = 0; i < THREADS; i++) {
        void *ret = (void *)1;
        assert_int_equal(pthread_join(t[i], &ret), 0);
        assert_null(ret);
    }
    for (int i = 0; i < THREADS; i++)
        for (int j = 1; j < PER_THREAD; j++)
            assert_true(rl_uuid_cmp(&ids[i * PER_THREAD + j - 1], &ids[i * PER_THREAD + j]) < 0);
    /* Globally unique in timestamp and counter alone, before the random bits. */
    qsort(ids, THREADS * PER_THREAD, sizeof *ids, cmp_ids);
    for (int i = 1; i < THREADS * PER_THREAD; i++)
        assert_memory_not_equal(ids[i - 1].b, ids[i].b, 8);
    free(ids);
}

static void test_rfc9562_example(void **state)
{
    (void)state;
    /* RFC 9562 appendix A.6: Tuesday, February 22, 2022 2:22:22.00 PM GMT-05:00. */
    rl_uuid_t u;
    assert_int_equal(rl_uuid_parse("017F22E2-79B0-7CC3-98C4-DC0C0C07398F", &u), RL_OK);
    assert_int_equal(rl_uuid_v7_ms(&u), UINT64_C(1645557742000));
    char s[RL_UUID_STR_LEN + 1];
    rl_uuid_format(&u, s);
    assert_string_equal(s, "017f22e2-79b0-7cc3-98c4-dc0c0c07398f");
    static const uint8_t bytes[16] = {0x01, 0x7f, 0x22, 0xe2, 0x79, 0xb0, 0x7c, 0xc3,
                                      0x98, 0xc4, 0xdc, 0x0c, 0x0c, 0x07, 0x39, 0x8f};
    assert_memory_equal(u.b, bytes, 16);
}

static void test_v7_ms_other_versions(void **state)
{
    (void)state;
    rl_uuid_t u;
    assert_int_equal(rl_uuid_parse("919108f7-52d1-4320-9bac-f847db4148a8", &u), RL_OK); /* v4 */
    assert_int_equal(rl_uuid_v7_ms(&u), 0);
    assert_int_equal(rl_uuid_parse("00000000-0000-0000-0000-000000000000", &u), RL_OK);
    assert_int_equal(rl_uuid_v7_ms(&u), 0);
    /* Version 7 with the wrong variant (Microsoft's 110). */
    assert_int_equal(rl_uuid_parse("017f22e2-79b0-7cc3-c8c4-dc0c0c07398f", &u), RL_OK);
    assert_int_equal(rl_uuid_v7_ms(&u), 0);
}

static void test_format_parse_round_trip(void **state)
{
    (void)state;
    for (int i = 0; i < 1000; i++) {
        rl_uuid_t u, back;
        char s[RL_UUID_STR_LEN + 1];
        assert_int_equal(rl_uuid_v7(&u), RL_OK);
        rl_uuid_format(&u, s);
        assert_int_equal(strlen(s), RL_UUID_STR_LEN);
        assert_int_equal(strspn(s, "0123456789abcdef-"), RL_UUID_STR_LEN);
        assert_int_equal(rl_uuid_parse(s, &back), RL_OK);
        assert_int_equal(rl_uuid_cmp(&u, &back), 0);
    }
}

static void test_parse_malformed(void **state)
{
    (void)state;
    static const char *bad[] = {
        "",
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398",   /* 35 */
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398f0", /* 37 */
        "017f22e279b07cc398c4dc0c0c07398f",      /* no hyphens */
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398f\n",
        "017f22e2079b0-7cc3-98c4-dc0c0c07398f", /* digit for hyphen */
        "017f22e-279b0-7cc3-98c4-dc0c0c07398f", /* hyphen misplaced */
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398g",
        "017f22e2-79b0-7cc3-98c4-dc0c0c0739 f",
        "017f22e2-79b0-7cc3-98c4+dc0c0c07398f",
        "{017f22e2-79b0-7cc3-98c4-dc0c0c0739}",
        "urn:uuid:017f22e2-79b0-7cc3-98c4-dc0",
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398\xc3\xa9",
        "-017f22e2-79b0-7cc3-98c4-dc0c0c07398",
    };
    rl_uuid_t u;
    memset(&u, 0xee, sizeof u);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(rl_uuid_parse(bad[i], &u), RL_ERR_INVALID);
        for (int b = 0; b < 16; b++)
            assert_int_equal(u.b[b], 0xee);
    }
    assert_int_equal(rl_uuid_parse(NULL, &u), RL_ERR_INVALID);
    /* Embedded NUL: the string ends early, so it is too short. */
    assert_int_equal(rl_uuid_parse("017f22e2-79b0-7cc3\0-98c4-dc0c0c07398f", &u), RL_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v7_layout),
        cmocka_unit_test(test_v7_ordering_100k),
        cmocka_unit_test(test_v7_threads_unique_and_ordered),
        cmocka_unit_test(test_rfc9562_example),
        cmocka_unit_test(test_v7_ms_other_versions),
        cmocka_unit_test(test_format_parse_round_trip),
        cmocka_unit_test(test_parse_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
