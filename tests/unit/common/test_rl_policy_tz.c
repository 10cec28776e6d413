/* The policy engine's own time zone code (rl_policy_tz.c), checked against
 * glibc's localtime_r on the same zone files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rl_policy_internal.h"

static rl_tz_t *load(const char *name)
{
    rl_tz_t *tz = NULL;
    char err[256];
    if (rl_tz_load(name, &tz, err, sizeof err) != RL_OK)
        fail_msg("%s: %s", name, err);
    return tz;
}

static void civil_days(void **state)
{
    (void)state;
    assert_int_equal(rl_tz_days_from_civil(1970, 1, 1), 0);
    assert_int_equal(rl_tz_days_from_civil(2000, 3, 1), 11017);
    assert_int_equal(rl_tz_days_from_civil(1969, 12, 31), -1);
    assert_int_equal(rl_tz_days_from_civil(2024, 1, 15) * 86400, 1705276800);
    assert_int_equal(rl_tz_days_from_civil(2100, 1, 1) * 86400, 4102444800LL);
    assert_int_equal(rl_tz_days_from_civil(1, 1, 1) * 86400, -62135596800LL);
}

static void posix_rules(void **state)
{
    (void)state;
    rl_tz_rule_t r;
    assert_int_equal(rl_tz_parse_rule("CET-1CEST,M3.5.0,M10.5.0/3", &r), RL_OK);
    assert_int_equal(r.std_off, 3600);
    assert_int_equal(r.dst_off, 7200);
    assert_true(r.has_dst);
    assert_int_equal(r.start.kind, 'M');
    assert_int_equal(r.start.month, 3);
    assert_int_equal(r.start.week, 5);
    assert_int_equal(r.start.time, 7200);
    assert_int_equal(r.end.time, 3 * 3600);
    assert_int_equal(rl_tz_parse_rule("<+0530>-5:30", &r), RL_OK);
    assert_int_equal(r.std_off, 19800);
    assert_false(r.has_dst);
    assert_int_equal(rl_tz_parse_rule("EST5EDT,M3.2.0,M11.1.0", &r), RL_OK);
    assert_int_equal(r.std_off, -18000);
    assert_int_equal(r.dst_off, -14400);
    assert_int_equal(rl_tz_parse_rule("<-03>3<-02>,M3.5.0/-2,M10.5.0/-1", &r), RL_OK);
    assert_int_equal(r.start.time, -7200);
    assert_int_equal(rl_tz_parse_rule("EST5EDT,0/0,J365/25", &r), RL_OK); /* DST all year */
    assert_int_equal(r.start.kind, 'D');
    assert_int_equal(r.end.kind, 'J');
    assert_int_equal(r.end.time, 25 * 3600);
    assert_int_equal(rl_tz_parse_rule("IST-1GMT0,M10.5.0,M3.5.0/1", &r), RL_OK); /* negative DST */
    assert_int_equal(r.dst_off, 0);
    const char *bad[] = {"",
                         "C-1",
                         "CET",
                         "CET-1CEST,M3.5.0",
                         "CET-1CEST,M13.5.0,M10.5.0",
                         "CET-1CEST,M3.6.0,M10.5.0",
                         "CET-1CEST,J0,J10",
                         "CET-1CEST,M3.5.0,M10.5.0x",
                         "CET-99",
                         "<+05"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (rl_tz_parse_rule(bad[i], &r) != RL_ERR_INVALID)
            fail_msg("accepted %s", bad[i]);

    /* rules alone: permanent DST, southern hemisphere */
    rl_tz_t fake = {.ntypes = 1, .has_rule = true};
    int32_t one_off = 0;
    fake.type_off = &one_off;
    int32_t off;
    assert_int_equal(rl_tz_parse_rule("EST5EDT,0/0,J365/25", &fake.rule), RL_OK);
    for (int64_t t = 4102444800LL - 86400 * 3; t < 4102444800LL + 86400 * 400; t += 3607) {
        assert_true(rl_tz_offset(&fake, t, &off));
        assert_int_equal(off, -14400);
    }
    assert_int_equal(rl_tz_parse_rule("<-03>3<-02>,M10.1.0/0,M2.3.0/0", &fake.rule), RL_OK);
    assert_true(rl_tz_offset(&fake, 4102444800LL, &off)); /* 2100-01-01: DST */
    assert_int_equal(off, -7200);
    assert_true(rl_tz_offset(&fake, 4102444800LL + 86400 * 180, &off)); /* July: standard */
    assert_int_equal(off, -10800);
}

static void fixed_offsets(void **state)
{
    (void)state;
    const struct {
        const char *name;
        int32_t off;
    } ok[] = {{"UTC", 0},         {"Z", 0},      {"+05:30", 19800},
              {"-08:00", -28800}, {"+00:00", 0}, {"+18:00", 64800}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        rl_tz_t *tz = load(ok[i].name);
        int32_t off = 1;
        assert_true(rl_tz_offset(tz, 1705276800, &off));
        assert_int_equal(off, ok[i].off);
        rl_tz_free(tz);
    }
    const char *bad[] = {"+5:30", "+05:60",       "+18:01", "05:30",   "+0530",
                         "",      "/etc/passwd",  "../x",   "Europe/", "Europe//Paris",
                         "a b",   "Mars/Olympus", "Europe"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rl_tz_t *tz = NULL;
        char err[256];
        if (rl_tz_load(bad[i], &tz, err, sizeof err) == RL_OK)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_null(tz);
        assert_true(err[0] != '\0');
    }
    rl_tz_t *tz = load("UTC");
    int32_t off;
    assert_false(rl_tz_offset(tz, INT64_MAX, &off));
    assert_false(rl_tz_offset(tz, INT64_MIN, &off));
    rl_tz_free(tz);
}

/* Our offsets against glibc's for every zone below, from 1900 to 2200 in
 * steps that land on many hours and days (and right around each transition). */
static void agrees_with_glibc(void **state)
{
    (void)state;
    const char *zones[] = {
        "Europe/Paris",      "America/New_York", "Australia/Sydney", "Asia/Kolkata",
        "America/Sao_Paulo", "Europe/Dublin",    "Pacific/Chatham",  "Africa/Casablanca",
        "America/St_Johns",  "Asia/Tehran",      "Pacific/Apia",     "Etc/GMT+5",
        "Antarctica/Troll",  "Europe/London",    "America/Santiago", "Asia/Gaza"};
    const char *saved = getenv("TZ");
    char *saved_copy = saved ? strdup(saved) : NULL;
    long checks = 0;
    for (size_t z = 0; z < sizeof zones / sizeof zones[0]; z++) {
        rl_tz_t *tz = load(zones[z]);
        setenv("TZ", zones[z], 1);
        tzset();
        for (int64_t t = -2208988800LL; t < 7258118400LL; t += 86400 * 3 + 3671) {
            struct tm tm;
            time_t tt = (time_t)t;
            assert_non_null(localtime_r(&tt, &tm));
            int32_t off;
            assert_true(rl_tz_offset(tz, t, &off));
            if (off != tm.tm_gmtoff)
                fail_msg("%s at %lld: ours %d, glibc %ld", zones[z], (long long)t, off,
                         tm.tm_gmtoff);
            checks++;
        }
        for (size_t i = 0; i < tz->ntrans; i++) {
            for (int d = -1; d <= 0; d++) {
                int64_t t = tz->trans[i] + d;
                struct tm tm;
                time_t tt = (time_t)t;
                assert_non_null(localtime_r(&tt, &tm));
                int32_t off;
                assert_true(rl_tz_offset(tz, t, &off));
                if (off != tm.tm_gmtoff)
                    fail_msg("%s at transition %lld: ours %d, glibc %ld", zones[z], (long long)t,
                             off, tm.tm_gmtoff);
                checks++;
            }
        }
        rl_tz_free(tz);
    }
    if (saved_copy) {
        setenv("TZ", saved_copy, 1);
        free(saved_copy);
    } else {
        unsetenv("TZ");
    }
    tzset();
    printf("compared %ld instants with glibc\n", checks);
}

static void tzdir_is_honoured(void **state)
{
    (void)state;
    const char *saved = getenv("TZDIR");
    setenv("TZDIR", "/nonexistent-zoneinfo", 1);
    rl_tz_t *tz = NULL;
    char err[256];
    assert_int_equal(rl_tz_load("Europe/Paris", &tz, err, sizeof err), RL_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "unknown time zone \"Europe/Paris\""));
    if (saved)
        setenv("TZDIR", saved, 1);
    else
        unsetenv("TZDIR");
    tz = load("Europe/Paris");
    rl_tz_free(tz);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(civil_days),        cmocka_unit_test(posix_rules),
        cmocka_unit_test(fixed_offsets),     cmocka_unit_test(agrees_with_glibc),
        cmocka_unit_test(tzdir_is_honoured),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
