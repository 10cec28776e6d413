#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "rl_gate_secret.h"

static const uint8_t key[32] = {7};
static const char *gate = "0190f1c2-0000-7000-8000-000000000001";

static void round_trip(void **state)
{
    (void)state;
    uint8_t *sealed;
    size_t n;
    assert_int_equal(rl_gate_secret_seal(key, gate, "Authorization", "Bearer sk-123", &sealed, &n), RL_OK);
    assert_null(memmem(sealed, n, "sk-123", 6));
    char *plain;
    /* header names are case-insensitive */
    assert_int_equal(rl_gate_secret_open(key, gate, "authorization", sealed, n, &plain), RL_OK);
    assert_string_equal(plain, "Bearer sk-123");
    free(plain);
    free(sealed);
}

static void bound_to_gate_header_and_key(void **state)
{
    (void)state;
    uint8_t *sealed;
    size_t n;
    char *plain = NULL;
    uint8_t other_key[32] = {8};
    assert_int_equal(rl_gate_secret_seal(key, gate, "x-api-key", "secret", &sealed, &n), RL_OK);
    assert_int_equal(rl_gate_secret_open(key, "0190f1c2-0000-7000-8000-000000000002", "x-api-key", sealed, n, &plain), RL_ERR_CRYPTO);
    assert_int_equal(rl_gate_secret_open(key, gate, "x-other", sealed, n, &plain), RL_ERR_CRYPTO);
    assert_int_equal(rl_gate_secret_open(other_key, gate, "x-api-key", sealed, n, &plain), RL_ERR_CRYPTO);
    sealed[n - 1] ^= 1;
    assert_int_equal(rl_gate_secret_open(key, gate, "x-api-key", sealed, n, &plain), RL_ERR_CRYPTO);
    assert_int_equal(rl_gate_secret_open(key, gate, "x-api-key", sealed, 10, &plain), RL_ERR_CRYPTO);
    assert_null(plain);
    free(sealed);
}

static void empty_value(void **state)
{
    (void)state;
    uint8_t *sealed;
    size_t n;
    char *plain;
    assert_int_equal(rl_gate_secret_seal(key, gate, "h", "", &sealed, &n), RL_OK);
    assert_int_equal(rl_gate_secret_open(key, gate, "h", sealed, n, &plain), RL_OK);
    assert_string_equal(plain, "");
    free(plain);
    free(sealed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip),
        cmocka_unit_test(bound_to_gate_header_and_key),
        cmocka_unit_test(empty_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
