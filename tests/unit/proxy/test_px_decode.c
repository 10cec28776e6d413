/* Tests services/proxy/px_decode.c: gzip (several members), deflate with and
 * without the zlib wrapper, lists of codings, the size bound against a bomb,
 * and every way the bytes can disagree with the header. The inputs are made
 * with zlib's own encoder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "px_decode.h"

#define TEXT "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}"

/* Encodes in with deflate: window_bits 31 gzip, 15 zlib, -15 raw. */
static unsigned char *encode(const void *in, size_t n, int window_bits, size_t *out_len)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    assert_int_equal(deflateInit2(&zs, 6, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = deflateBound(&zs, (uLong)n) + 32;
    unsigned char *out = malloc(cap);
    assert_non_null(out);
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    *out_len = cap - zs.avail_out;
    deflateEnd(&zs);
    return out;
}

/* a followed by b, in a new buffer */
static unsigned char *concat(const void *a, size_t an, const void *b, size_t bn)
{
    unsigned char *out = malloc(an + bn);
    assert_non_null(out);
    memcpy(out, a, an);
    memcpy(out + an, b, bn);
    return out;
}

static void expect_decoded(const char *coding, const void *in, size_t n, const char *want)
{
    rl_buf_t out;
    rl_buf_init(&out, 1 << 20);
    assert_int_equal(px_decode_body(coding, in, n, &out), RL_OK);
    assert_int_equal(out.len, strlen(want));
    assert_memory_equal(out.data, want, out.len);
    rl_buf_free(&out);
}

static void expect_error(const char *coding, const void *in, size_t n, size_t max, rl_status_t want,
                         const char *detail)
{
    rl_buf_t out;
    rl_buf_init(&out, max);
    assert_int_equal(px_decode_body(coding, in, n, &out), want);
    assert_int_equal(out.len, 0);
    if (detail && strstr(rl_error_last(), detail) == NULL)
        fail_msg("error detail \"%s\" lacks \"%s\"", rl_error_last(), detail);
    rl_buf_free(&out);
}

static void test_needed(void **state)
{
    (void)state;
    assert_false(px_decode_needed(NULL));
    assert_false(px_decode_needed(""));
    assert_false(px_decode_needed("identity"));
    assert_false(px_decode_needed(" Identity , identity"));
    assert_true(px_decode_needed("gzip"));
    assert_true(px_decode_needed("identity, GZIP"));
    assert_true(px_decode_needed("br")); /* so that it is refused, not passed on */
}

static void test_gzip_deflate_and_raw_deflate(void **state)
{
    (void)state;
    size_t n;
    unsigned char *gz = encode(TEXT, strlen(TEXT), 31, &n);
    expect_decoded("gzip", gz, n, TEXT);
    expect_decoded("X-GZIP", gz, n, TEXT);
    free(gz);
    unsigned char *z = encode(TEXT, strlen(TEXT), 15, &n);
    expect_decoded("deflate", z, n, TEXT);
    free(z);
    unsigned char *raw = encode(TEXT, strlen(TEXT), -15, &n);
    expect_decoded("deflate", raw, n, TEXT);
    free(raw);
}

static void test_gzip_members_are_concatenated(void **state)
{
    (void)state;
    size_t n1, n2;
    unsigned char *a = encode("{\"a\":", 5, 31, &n1);
    unsigned char *b = encode("1}", 2, 31, &n2);
    unsigned char *both = concat(a, n1, b, n2);
    expect_decoded("gzip", both, n1 + n2, "{\"a\":1}");
    free(a);
    free(b);
    free(both);
}

static void test_codings_undone_last_first(void **state)
{
    (void)state;
    size_t n1, n2;
    unsigned char *inner = encode(TEXT, strlen(TEXT), 15, &n1); /* deflate first */
    unsigned char *outer = encode(inner, n1, 31, &n2);          /* then gzip */
    expect_decoded("deflate, gzip", outer, n2, TEXT);
    expect_decoded("identity,deflate ,identity, gzip", outer, n2, TEXT);
    /* the wrong order is bytes that are not what the header says */
    expect_error("gzip, deflate", outer, n2, 1 << 20, RL_ERR_INVALID, "deflate");
    free(inner);
    free(outer);
    /* three layers: the result lands in the caller's buffer whatever the count */
    size_t n3;
    unsigned char *l1 = encode(TEXT, strlen(TEXT), 31, &n1);
    unsigned char *l2 = encode(l1, n1, 31, &n2);
    unsigned char *l3 = encode(l2, n2, 31, &n3);
    expect_decoded("gzip, gzip, gzip", l3, n3, TEXT);
    free(l1);
    free(l2);
    free(l3);
}

static void test_identity_only_copies(void **state)
{
    (void)state;
    expect_decoded("identity", TEXT, strlen(TEXT), TEXT);
    expect_error("identity", TEXT, strlen(TEXT), 10, RL_ERR_TOO_LARGE, "exceeds");
}

static void test_unsupported_and_too_many(void **state)
{
    (void)state;
    expect_error("br", "x", 1, 1024, RL_ERR_NOT_FOUND, "br");
    expect_error("gzip, zstd", "x", 1, 1024, RL_ERR_NOT_FOUND, "zstd");
    expect_error("compress", "x", 1, 1024, RL_ERR_NOT_FOUND, "compress");
    expect_error("gzip,gzip,gzip,gzip,gzip", "x", 1, 1024, RL_ERR_INVALID, "more than");
}

static void test_corrupt_truncated_trailing(void **state)
{
    (void)state;
    expect_error("gzip", TEXT, strlen(TEXT), 1 << 20, RL_ERR_INVALID, "gzip");
    size_t n;
    unsigned char *gz = encode(TEXT, strlen(TEXT), 31, &n);
    expect_error("gzip", gz, n - 5, 1 << 20, RL_ERR_INVALID, "ends inside");
    gz[n - 1] ^= 0xff; /* the length in the trailer */
    expect_error("gzip", gz, n, 1 << 20, RL_ERR_INVALID, "gzip");
    free(gz);
    /* a stream followed by bytes that are no stream (for gzip: no member) */
    unsigned char *z = encode(TEXT, strlen(TEXT), 15, &n);
    unsigned char *plus = concat(z, n, "abc", 3);
    expect_error("deflate", plus, n + 3, 1 << 20, RL_ERR_INVALID, "after the end");
    free(z);
    free(plus);
    z = encode(TEXT, strlen(TEXT), 31, &n);
    plus = concat(z, n, "abc", 3);
    expect_error("gzip", plus, n + 3, 1 << 20, RL_ERR_INVALID, "gzip");
    free(z);
    free(plus);
    expect_error("gzip", "", 0, 1024, RL_ERR_INVALID, "ends inside");
}

static void test_bomb_stops_at_the_limit(void **state)
{
    (void)state;
    size_t big = 64u << 20; /* 64 MiB of zeros: ~64 KB compressed */
    unsigned char *zeros = calloc(1, big);
    assert_non_null(zeros);
    size_t n;
    unsigned char *gz = encode(zeros, big, 31, &n);
    free(zeros);
    assert_true(n < big / 500);
    expect_error("gzip", gz, n, 1 << 20, RL_ERR_TOO_LARGE, "exceeds 1048576");
    free(gz);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_needed),
        cmocka_unit_test(test_gzip_deflate_and_raw_deflate),
        cmocka_unit_test(test_gzip_members_are_concatenated),
        cmocka_unit_test(test_codings_undone_last_first),
        cmocka_unit_test(test_identity_only_copies),
        cmocka_unit_test(test_unsupported_and_too_many),
        cmocka_unit_test(test_corrupt_truncated_trailing),
        cmocka_unit_test(test_bomb_stops_at_the_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
