#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rl_log.h"

/* Captures log output through a pipe and returns the lines as JSON values. */
static int fds[2];

static int setup(void **state)
{
    (void)state;
    if (pipe(fds) != 0)
        return -1;
    rl_log_set_fd(fds[1]);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    rl_log_set_fd(2);
    close(fds[0]);
    close(fds[1]);
    return 0;
}

static json_t *read_line(void)
{
    char buf[4096];
    size_t n = 0;
    while (n < sizeof buf - 1) {
        ssize_t r = read(fds[0], buf + n, 1);
        if (r <= 0 || buf[n] == '\n')
            break;
        n++;
    }
    buf[n] = '\0';
    json_error_t err;
    return json_loads(buf, 0, &err);
}

static void writes_one_json_object_per_line(void **state)
{
    (void)state;
    rl_log_init("testsvc", RL_LOG_INFO);
    rl_log(RL_LOG_INFO, "listening", "{s:s,s:i}", "addr", "127.0.0.1", "port", 8080);
    json_t *line = read_line();
    assert_non_null(line);
    assert_string_equal(json_string_value(json_object_get(line, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(line, "service")), "testsvc");
    assert_string_equal(json_string_value(json_object_get(line, "msg")), "listening");
    assert_string_equal(json_string_value(json_object_get(line, "addr")), "127.0.0.1");
    assert_int_equal(json_integer_value(json_object_get(line, "port")), 8080);
    const char *ts = json_string_value(json_object_get(line, "ts"));
    assert_non_null(ts);
    assert_int_equal(strlen(ts), 24); /* 2026-11-23T07:40:01.123Z */
    assert_int_equal(ts[23], 'Z');
    json_decref(line);
}

static void filters_by_level(void **state)
{
    (void)state;
    rl_log_init("testsvc", RL_LOG_WARN);
    assert_false(rl_log_enabled(RL_LOG_INFO));
    assert_true(rl_log_enabled(RL_LOG_ERROR));
    rl_log(RL_LOG_INFO, "hidden", NULL);
    rl_log(RL_LOG_ERROR, "shown", NULL);
    json_t *line = read_line();
    assert_string_equal(json_string_value(json_object_get(line, "msg")), "shown");
    json_decref(line);
}

static void fields_cannot_override_envelope(void **state)
{
    (void)state;
    rl_log_init("testsvc", RL_LOG_INFO);
    rl_log(RL_LOG_INFO, "m", "{s:s,s:s}", "level", "fake", "msg", "\"quoted\"\nnewline");
    json_t *line = read_line();
    assert_string_equal(json_string_value(json_object_get(line, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(line, "msg")), "m");
    json_decref(line);
}

static void bad_format_still_logs(void **state)
{
    (void)state;
    rl_log_init("testsvc", RL_LOG_INFO);
    rl_log(RL_LOG_WARN, "still here", "[s]", "not an object");
    json_t *line = read_line();
    assert_string_equal(json_string_value(json_object_get(line, "msg")), "still here");
    assert_non_null(json_object_get(line, "log_error"));
    json_decref(line);
}

static void parses_levels(void **state)
{
    (void)state;
    rl_log_level_t l;
    assert_int_equal(rl_log_level_parse("DEBUG", &l), RL_OK);
    assert_int_equal(l, RL_LOG_DEBUG);
    assert_int_equal(rl_log_level_parse("trace", &l), RL_OK);
    assert_int_equal(l, RL_LOG_TRACE);
    assert_int_equal(rl_log_level_parse("verbose", &l), RL_ERR_INVALID);
    assert_int_equal(rl_log_level_parse(NULL, &l), RL_ERR_INVALID);
    assert_int_equal(l, RL_LOG_TRACE);
    assert_string_equal(rl_log_level_name(RL_LOG_WARN), "warn");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(writes_one_json_object_per_line),
        cmocka_unit_test(filters_by_level),
        cmocka_unit_test(fields_cannot_override_envelope),
        cmocka_unit_test(bad_format_still_logs),
        cmocka_unit_test(parses_levels),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
