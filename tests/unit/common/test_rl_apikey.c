#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "rl_apikey.h"

static const uint8_t secret[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                   17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static void generated_keys_are_well_formed_and_distinct(void **state)
{
    (void)state;
    char a[RL_TOKEN_MAX_SIZE], b[RL_TOKEN_MAX_SIZE], op[RL_TOKEN_MAX_SIZE];
    assert_int_equal(rl_apikey_generate(RL_APIKEY_AGENT, a, sizeof a), RL_OK);
    assert_int_equal(rl_apikey_generate(RL_APIKEY_AGENT, b, sizeof b), RL_OK);
    assert_int_equal(rl_apikey_generate(RL_APIKEY_OPERATOR, op, sizeof op), RL_OK);
    assert_string_not_equal(a, b);
    assert_true(strncmp(a, "rl_live_", 8) == 0);
    assert_true(strncmp(op, "rlop_", 5) == 0);
    assert_true(rl_apikey_well_formed(RL_APIKEY_AGENT, a));
    assert_true(rl_apikey_well_formed(RL_APIKEY_OPERATOR, op));
    assert_false(rl_apikey_well_formed(RL_APIKEY_OPERATOR, a));
    assert_false(rl_apikey_well_formed(RL_APIKEY_AGENT, op));
}

static void malformed_keys_are_refused(void **state)
{
    (void)state;
    char k[RL_TOKEN_MAX_SIZE];
    rl_apikey_generate(RL_APIKEY_AGENT, k, sizeof k);
    char bad[RL_TOKEN_MAX_SIZE];
    snprintf(bad, sizeof bad, "%s", k);
    bad[10] = '-';
    assert_false(rl_apikey_well_formed(RL_APIKEY_AGENT, bad));
    bad[strlen(bad) - 1] = '\0';
    assert_false(rl_apikey_well_formed(RL_APIKEY_AGENT, bad));
    assert_false(rl_apikey_well_formed(RL_APIKEY_AGENT, ""));
    assert_false(rl_apikey_well_formed(RL_APIKEY_AGENT, NULL));
    assert_false(rl_apikey_well_formed(RL_APIKEY_AGENT, "sk-proj-abcdef"));
}

static void hash_is_keyed_and_stable(void **state)
{
    (void)state;
    uint8_t hk[32], hk2[32], other[32];
    rl_apikey_derive_hash_key(secret, hk);
    rl_apikey_derive_hash_key(secret, hk2);
    assert_memory_equal(hk, hk2, 32);
    assert_memory_not_equal(hk, secret, 32);
    uint8_t h1[32], h2[32], h3[32];
    rl_apikey_hash(hk, "rl_live_x", h1);
    rl_apikey_hash(hk, "rl_live_x", h2);
    assert_memory_equal(h1, h2, 32);
    memset(other, 9, sizeof other);
    rl_apikey_hash(other, "rl_live_x", h3);
    assert_memory_not_equal(h1, h3, 32);
}

static void display_shows_only_a_prefix(void **state)
{
    (void)state;
    char k[RL_TOKEN_MAX_SIZE], d[32];
    rl_apikey_generate(RL_APIKEY_AGENT, k, sizeof k);
    rl_apikey_display(k, d, sizeof d);
    assert_int_equal(strlen(d), RL_APIKEY_DISPLAY_LEN);
    assert_true(strncmp(d, k, RL_APIKEY_DISPLAY_LEN) == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(generated_keys_are_well_formed_and_distinct),
        cmocka_unit_test(malformed_keys_are_refused),
        cmocka_unit_test(hash_is_keyed_and_stable),
        cmocka_unit_test(display_shows_only_a_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
