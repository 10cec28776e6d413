#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "rl_json.h"

static void parses_objects(void **state)
{
    (void)state;
    const char *text = "{\"name\":\"a\",\"n\":3,\"x\":1.5,\"ok\":true,\"nil\":null}";
    json_t *v = NULL;
    assert_int_equal(rl_json_parse_object(text, strlen(text), 0, &v), RL_OK);
    const char *s;
    int64_t n;
    double x;
    bool b;
    assert_int_equal(rl_json_get_str(v, "name", &s), RL_OK);
    assert_string_equal(s, "a");
    assert_int_equal(rl_json_get_int(v, "n", &n), RL_OK);
    assert_int_equal(n, 3);
    assert_int_equal(rl_json_get_num(v, "x", &x), RL_OK);
    assert_true(x == 1.5);
    assert_int_equal(rl_json_get_num(v, "n", &x), RL_OK); /* integers are numbers */
    assert_int_equal(rl_json_get_bool(v, "ok", &b), RL_OK);
    assert_true(b);
    assert_int_equal(rl_json_get_str(v, "nil", &s), RL_ERR_NOT_FOUND);
    assert_int_equal(rl_json_get_str(v, "absent", &s), RL_ERR_NOT_FOUND);
    assert_int_equal(rl_json_get_str(v, "n", &s), RL_ERR_INVALID);
    assert_non_null(strstr(rl_error_last(), "n: must be a string"));
    assert_int_equal(rl_json_get_int(v, "x", &n), RL_ERR_INVALID);
    assert_int_equal(rl_json_get_bool(v, "name", &b), RL_ERR_INVALID);
    assert_string_equal(rl_json_str_or(v, "name", "d"), "a");
    assert_string_equal(rl_json_str_or(v, "n", "d"), "d");
    json_decref(v);
}

static void rejects_malformed(void **state)
{
    (void)state;
    json_t *v = NULL;
    const char *cases[] = {"{", "{\"a\":}", "[1,2", "{\"a\":1,\"a\":2}", "nul", "{\"a\":\"\\u0000\"}"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(rl_json_parse(cases[i], strlen(cases[i]), 0, &v), RL_ERR_INVALID);
        assert_non_null(strstr(rl_error_last(), "line"));
    }
    assert_int_equal(rl_json_parse("", 0, 0, &v), RL_ERR_INVALID);
    /* raw NUL bytes, anywhere: jansson alone accepts one after a number */
    const char *with_nul[] = {"{\"model\":0\0}", "{\"a\":\"x\0\"}", "{\"a\":1}\0", "[1\0,2]"};
    const size_t nul_len[] = {12, 10, 8, 6};
    for (size_t i = 0; i < sizeof with_nul / sizeof with_nul[0]; i++) {
        assert_int_equal(rl_json_parse(with_nul[i], nul_len[i], 0, &v), RL_ERR_INVALID);
        assert_non_null(strstr(rl_error_last(), "NUL byte"));
    }
    assert_int_equal(rl_json_parse("{\n \"a\": 1\0}", 11, 0, &v), RL_ERR_INVALID);
    assert_non_null(strstr(rl_error_last(), "line 2 column 8: NUL byte in JSON text"));
    assert_int_equal(rl_json_parse_object("[1]", 3, 0, &v), RL_ERR_INVALID);
    assert_int_equal(rl_json_parse_object("\"s\"", 3, 0, &v), RL_ERR_INVALID);
    assert_null(v);
}

static void enforces_size_limit(void **state)
{
    (void)state;
    json_t *v = NULL;
    const char *text = "{\"a\":\"0123456789\"}";
    assert_int_equal(rl_json_parse(text, strlen(text), 10, &v), RL_ERR_TOO_LARGE);
    assert_int_equal(rl_json_parse(text, strlen(text), strlen(text), &v), RL_OK);
    json_decref(v);
}

static void rejects_deep_nesting(void **state)
{
    (void)state;
    char deep[5001];
    memset(deep, '[', 5000);
    deep[5000] = '\0';
    json_t *v = NULL;
    assert_int_equal(rl_json_parse(deep, 5000, 0, &v), RL_ERR_INVALID);
}

static void dumps_into_bounded_buffer(void **state)
{
    (void)state;
    json_t *v = json_pack("{s:s,s:i}", "b", "x\"y", "a", 1);
    rl_buf_t out;
    rl_buf_init(&out, 64);
    assert_int_equal(rl_json_dump(v, &out), RL_OK);
    assert_string_equal(out.data, "{\"b\":\"x\\\"y\",\"a\":1}");
    rl_buf_t small;
    rl_buf_init(&small, 5);
    assert_int_equal(rl_json_dump(v, &small), RL_ERR_TOO_LARGE);
    rl_buf_free(&small);
    rl_buf_free(&out);
    json_decref(v);
}

static void plain_ascii_decodes_needless_escapes(void **state)
{
    (void)state;
    rl_buf_t out;
    rl_buf_init(&out, 4096);
    const char *slash = "{\"k\":\"wJalr\\/K7MD\"}";
    assert_true(rl_json_plain_ascii(slash, strlen(slash), &out));
    assert_string_equal(out.data, "{\"k\":\"wJalr/K7MD\"}");
    rl_buf_reset(&out);
    const char *u = "[\"\\u0041KIA\",2]";
    assert_true(rl_json_plain_ascii(u, strlen(u), &out));
    assert_string_equal(out.data, "[\"AKIA\",2]");
    rl_buf_reset(&out);
    /* nothing to decode: a quote and a newline need their escapes */
    const char *needed[] = {"{\"k\":\"a\\u0022b\"}", "{\"k\":\"a\\nb\"}", "{\"k\":\"a/b\"}",
                            "not json \\/ at all"};
    for (size_t i = 0; i < sizeof needed / sizeof needed[0]; i++) {
        assert_false(rl_json_plain_ascii(needed[i], strlen(needed[i]), &out));
        assert_int_equal(out.len, 0);
    }
    rl_buf_free(&out);
    /* too large for out: false, out as it was */
    rl_buf_init(&out, 8);
    assert_int_equal(rl_buf_append_str(&out, "ab"), RL_OK);
    assert_false(rl_json_plain_ascii(slash, strlen(slash), &out));
    assert_string_equal(out.data, "ab");
    rl_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_objects),
        cmocka_unit_test(rejects_malformed),
        cmocka_unit_test(enforces_size_limit),
        cmocka_unit_test(rejects_deep_nesting),
        cmocka_unit_test(dumps_into_bounded_buffer),
        cmocka_unit_test(plain_ascii_decodes_needless_escapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
