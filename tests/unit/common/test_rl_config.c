#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "rl_config.h"
#include "rl_log.h"

static const char *db_url, *listen_addr, *name, *mode;
static long workers;
static bool signup;
static rl_log_level_t level;
static uint8_t key[32];

static const rl_config_option_t options[] = {
    {"RENLAYER_T_DATABASE_URL", RL_CFG_URL, NULL, true, "database", 0, 0, "postgres,postgresql", &db_url},
    {"RENLAYER_T_LISTEN_ADDR", RL_CFG_ADDR, "127.0.0.1:8080", false, "listen", 0, 0, NULL, &listen_addr},
    {"RENLAYER_T_WORKERS", RL_CFG_INT, "2", false, "workers", 1, 64, NULL, &workers},
    {"RENLAYER_T_SIGNUP", RL_CFG_BOOL, "false", false, "signup", 0, 0, NULL, &signup},
    {"RENLAYER_T_LOG_LEVEL", RL_CFG_LOGLEVEL, "info", false, "log", 0, 0, NULL, &level},
    {"RENLAYER_T_SECRET_KEY", RL_CFG_HEXKEY, NULL, false, "key", 0, 0, NULL, key},
    {"RENLAYER_T_NAME", RL_CFG_STRING, "x", false, "name", 0, 0, NULL, &name},
    {"RENLAYER_T_MODE", RL_CFG_ENUM, "fast", false, "mode", 0, 0, "fast,safe", &mode},
};
#define NOPTS (sizeof options / sizeof options[0])

static int clear_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < NOPTS; i++)
        unsetenv(options[i].name);
    return 0;
}

static void defaults_apply(void **state)
{
    (void)state;
    setenv("RENLAYER_T_DATABASE_URL", "postgresql://u@h/db", 1);
    char err[512];
    assert_int_equal(rl_config_load(options, NOPTS, err, sizeof err), RL_OK);
    assert_string_equal(err, "");
    assert_string_equal(db_url, "postgresql://u@h/db");
    assert_string_equal(listen_addr, "127.0.0.1:8080");
    assert_int_equal(workers, 2);
    assert_false(signup);
    assert_int_equal(level, RL_LOG_INFO);
    assert_string_equal(name, "x");
    assert_string_equal(mode, "fast");
}

static void values_are_parsed(void **state)
{
    (void)state;
    setenv("RENLAYER_T_DATABASE_URL", "postgres://u@h/db", 1);
    setenv("RENLAYER_T_WORKERS", "64", 1);
    setenv("RENLAYER_T_SIGNUP", "on", 1);
    setenv("RENLAYER_T_LOG_LEVEL", "trace", 1);
    setenv("RENLAYER_T_SECRET_KEY", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1F", 1);
    setenv("RENLAYER_T_LISTEN_ADDR", "[::1]:0", 1);
    char err[512];
    assert_int_equal(rl_config_load(options, NOPTS, err, sizeof err), RL_OK);
    assert_int_equal(workers, 64);
    assert_true(signup);
    assert_int_equal(level, RL_LOG_TRACE);
    assert_int_equal(key[0], 0x00);
    assert_int_equal(key[31], 0x1f);
    assert_string_equal(listen_addr, "[::1]:0");
}

static void every_bad_value_is_reported(void **state)
{
    (void)state;
    setenv("RENLAYER_T_WORKERS", "65", 1);
    setenv("RENLAYER_T_SIGNUP", "maybe", 1);
    setenv("RENLAYER_T_LOG_LEVEL", "loud", 1);
    setenv("RENLAYER_T_SECRET_KEY", "abcd", 1);
    setenv("RENLAYER_T_LISTEN_ADDR", "localhost", 1);
    setenv("RENLAYER_T_MODE", "fastest", 1);
    char err[1024];
    assert_int_equal(rl_config_load(options, NOPTS, err, sizeof err), RL_ERR_INVALID);
    assert_non_null(strstr(err, "RENLAYER_T_DATABASE_URL: is required"));
    assert_non_null(strstr(err, "RENLAYER_T_WORKERS: must be between 1 and 64 (got '65')"));
    assert_non_null(strstr(err, "RENLAYER_T_SIGNUP: must be true or false"));
    assert_non_null(strstr(err, "RENLAYER_T_LOG_LEVEL: must be one of"));
    assert_non_null(strstr(err, "RENLAYER_T_SECRET_KEY: must be 64 hexadecimal"));
    assert_null(strstr(err, "abcd")); /* secrets are never echoed */
    assert_non_null(strstr(err, "RENLAYER_T_LISTEN_ADDR: must be host:port"));
    assert_non_null(strstr(err, "RENLAYER_T_MODE: must be one of fast,safe (got 'fastest')"));
}

static void rejects_wrong_scheme_and_garbage_numbers(void **state)
{
    (void)state;
    setenv("RENLAYER_T_DATABASE_URL", "mysql://h/db", 1);
    setenv("RENLAYER_T_WORKERS", "12abc", 1);
    char err[512];
    assert_int_equal(rl_config_load(options, NOPTS, err, sizeof err), RL_ERR_INVALID);
    assert_non_null(strstr(err, "RENLAYER_T_DATABASE_URL: must be a URL with scheme postgres,postgresql"));
    assert_non_null(strstr(err, "RENLAYER_T_WORKERS: must be an integer"));
    setenv("RENLAYER_T_DATABASE_URL", "postgres://", 1);
    assert_int_equal(rl_config_load(options, NOPTS, err, sizeof err), RL_ERR_INVALID);
}

static void small_error_buffer_is_safe(void **state)
{
    (void)state;
    char err[16];
    assert_int_equal(rl_config_load(options, NOPTS, err, sizeof err), RL_ERR_INVALID);
    assert_true(strlen(err) < sizeof err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(defaults_apply, clear_env),
        cmocka_unit_test_setup(values_are_parsed, clear_env),
        cmocka_unit_test_setup(every_bad_value_is_reported, clear_env),
        cmocka_unit_test_setup(rejects_wrong_scheme_and_garbage_numbers, clear_env),
        cmocka_unit_test_setup(small_error_buffer_is_safe, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
