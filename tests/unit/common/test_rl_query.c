#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "rl_query.h"

static void decodes_pairs_as_a_form_reader_does(void **state)
{
    (void)state;
    const char *q = "to=jane.doe%40acme.com&note=a+b%2Bc&flag&k%3Dx=v%26w&&e=";
    rl_buf_t text;
    rl_buf_init(&text, 1024);
    rl_query_pair_t *pairs;
    size_t n;
    assert_int_equal(rl_query_decode(q, strlen(q), &text, &pairs, &n), RL_OK);
    assert_string_equal(text.data, "to=jane.doe@acme.com&note=a b+c&flag&k=x=v&w&&e=");
    assert_int_equal(n, 6);
    /* each pair's place in the query and in the text */
    assert_int_equal(pairs[0].raw_start, 0);
    assert_int_equal(pairs[0].raw_value, 3);
    assert_int_equal(pairs[0].raw_end, 22);
    assert_memory_equal(text.data + pairs[0].text_value, "jane.doe@acme.com", 17);
    assert_int_equal(pairs[0].text_end - pairs[0].text_value, 17);
    assert_int_equal(pairs[2].raw_value, pairs[2].raw_end); /* "flag": no '=' */
    assert_int_equal(pairs[2].text_value, pairs[2].text_end);
    /* %3D in a name is not its '=': the value starts after the first real one */
    assert_memory_equal(text.data + pairs[3].text_start, "k=x=", 4);
    assert_int_equal(pairs[3].text_value - pairs[3].text_start, 4);
    assert_int_equal(pairs[4].raw_start, pairs[4].raw_end); /* "&&": an empty pair */
    assert_int_equal(pairs[5].raw_value, pairs[5].raw_end); /* "e=": an empty value */
    free(pairs);

    /* a malformed escape stays as it is; no pairs asked for */
    assert_int_equal(rl_query_decode("a=%zz%4", 7, &text, NULL, &n), RL_OK);
    assert_string_equal(text.data, "a=%zz%4");
    assert_int_equal(n, 1);
    assert_int_equal(rl_query_decode("", 0, &text, &pairs, &n), RL_OK);
    assert_int_equal(text.len, 0);
    assert_null(pairs);
    assert_int_equal(n, 0);
    rl_buf_free(&text);
}

static void bound_is_kept(void **state)
{
    (void)state;
    rl_buf_t text;
    rl_buf_init(&text, 8);
    rl_query_pair_t *pairs = (rl_query_pair_t *)&text; /* must become NULL */
    size_t n = 5;
    assert_int_equal(rl_query_decode("name=value-too-long", 19, &text, &pairs, &n),
                     RL_ERR_TOO_LARGE);
    assert_int_equal(text.len, 0);
    assert_null(pairs);
    assert_int_equal(n, 0);
    rl_buf_free(&text);
}

/* Scans q's text with every built-in redacting and rebuilds q. */
static char *redacted(const char *q)
{
    rl_dlp_config_t *cfg;
    assert_int_equal(rl_dlp_config_create(&cfg), RL_OK);
    for (int d = 0; d < RL_DLP_BUILTIN_COUNT; d++)
        assert_int_equal(
            rl_dlp_config_set_builtin(cfg, (rl_dlp_builtin_t)d, true, 0, RL_DLP_ACTION_REDACT),
            RL_OK);
    rl_dlp_engine_t *e;
    assert_int_equal(rl_dlp_engine_create(cfg, &e), RL_OK);
    rl_dlp_config_destroy(cfg);
    rl_buf_t text, out;
    rl_buf_init(&text, 4096);
    rl_buf_init(&out, 4096);
    rl_query_pair_t *pairs;
    size_t n;
    assert_int_equal(rl_query_decode(q, strlen(q), &text, &pairs, &n), RL_OK);
    rl_dlp_findings_t f;
    rl_dlp_findings_init(&f, 64);
    assert_int_equal(rl_dlp_scan(e, RL_DLP_SCOPE_REQUEST, text.data, text.len, NULL, &f), RL_OK);
    assert_int_equal(rl_query_redact(q, strlen(q), pairs, n, &f, false, &out), RL_OK);
    char *s = strdup(out.data ? out.data : "");
    rl_dlp_findings_free(&f);
    free(pairs);
    rl_buf_free(&text);
    rl_buf_free(&out);
    rl_dlp_engine_release(e);
    return s;
}

static void every_finding_for_a_copy(void **state)
{
    (void)state;
    const char *q = "to=jane.doe%40acme-widgets.com&n=1";
    rl_buf_t text, out;
    rl_buf_init(&text, 256);
    rl_buf_init(&out, 256);
    rl_query_pair_t *pairs;
    size_t n;
    assert_int_equal(rl_query_decode(q, strlen(q), &text, &pairs, &n), RL_OK);
    rl_dlp_finding_t warn = {
        .detector = "EMAIL", .action = RL_DLP_ACTION_WARN, .start = 3, .end = 28};
    rl_dlp_findings_t f = {.items = &warn, .len = 1, .cap = 1, .max = 1};
    assert_int_equal(rl_query_redact(q, strlen(q), pairs, n, &f, false, &out), RL_OK);
    assert_string_equal(out.data, q); /* a warning is forwarded as it is */
    assert_int_equal(rl_query_redact(q, strlen(q), pairs, n, &f, true, &out), RL_OK);
    assert_string_equal(out.data, "to=%5BREDACTED%3AEMAIL%5D&n=1");
    f.dropped = 1; /* an incomplete list cannot make a clean copy, nor a clean query */
    assert_int_equal(rl_query_redact(q, strlen(q), pairs, n, &f, true, &out), RL_ERR_TOO_LARGE);
    assert_int_equal(out.len, 0);
    assert_int_equal(rl_query_redact(q, strlen(q), pairs, n, &f, false, &out), RL_ERR_TOO_LARGE);
    assert_int_equal(out.len, 0);
    free(pairs);
    rl_buf_free(&text);
    rl_buf_free(&out);
}

static void form_content_types(void **state)
{
    (void)state;
    assert_true(rl_query_is_form_type("application/x-www-form-urlencoded"));
    assert_true(rl_query_is_form_type("Application/X-WWW-Form-Urlencoded; charset=utf-8"));
    assert_false(rl_query_is_form_type("application/x-www-form-urlencodedx"));
    assert_false(rl_query_is_form_type("application/json"));
    assert_false(rl_query_is_form_type("multipart/form-data; boundary=x"));
    assert_false(rl_query_is_form_type(NULL));
}

static void redacts_the_values_findings_touch(void **state)
{
    (void)state;
    /* an e-mail every form encoder writes with %40, and an AWS secret with %2F */
    char *s = redacted("page=2&to=jane.doe%40acme-widgets.com&x=1&aws_secret_access_key="
                       "q7Rz2LkP9vXw4N%2FT1mYc8HdJ3sFg6Qe0Ua5V%2F%2BKo&q=hello+world");
    assert_string_equal(s, "page=2&to=%5BREDACTED%3AEMAIL%5D&x=1&aws_secret_access_key="
                           "%5BREDACTED%3AAWS_SECRET_KEY%5D&q=hello+world");
    free(s);
    /* a finding in a pair without '=' replaces the pair */
    s = redacted("a=1&jane.doe%40acme-widgets.com");
    assert_string_equal(s, "a=1&%5BREDACTED%3AEMAIL%5D");
    free(s);
    /* nothing found: the query as sent, byte for byte */
    s = redacted("a=%7E1&b=%2fx+y&c");
    assert_string_equal(s, "a=%7E1&b=%2fx+y&c");
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(decodes_pairs_as_a_form_reader_does),
        cmocka_unit_test(bound_is_kept),
        cmocka_unit_test(redacts_the_values_findings_touch),
        cmocka_unit_test(every_finding_for_a_copy),
        cmocka_unit_test(form_content_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
