/* Unit tests of services/api/api_jwt.c: HS256 session tokens. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_jwt.h"
#include "rl_crypto.h"

static const uint8_t key[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

#define NOW 1800000000LL

static api_jwt_claims_t sample(void)
{
    api_jwt_claims_t c = {
        .sub = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        .tid = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c",
        .role = "admin",
        .jti = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d",
        .iat = NOW - 10,
        .exp = NOW + 3600,
    };
    return c;
}

/* Builds a token from arbitrary header and payload JSON, signed with k (or
 * with the literal signature text sig when not NULL): what an attacker, or
 * another implementation, could produce. */
static void craft(const uint8_t k[32], const char *header, const char *payload, const char *sig,
                  char *out, size_t cap)
{
    char h[1024], p[8192];
    assert_int_equal(rl_base64url_encode(header, strlen(header), h, sizeof h), RL_OK);
    assert_int_equal(rl_base64url_encode(payload, strlen(payload), p, sizeof p), RL_OK);
    assert_true(strlen(h) + strlen(p) + 2 < cap);
    memcpy(out, h, strlen(h));
    out[strlen(h)] = '.';
    memcpy(out + strlen(h) + 1, p, strlen(p) + 1);
    if (sig) {
        snprintf(out + strlen(out), cap - strlen(out), ".%s", sig);
        return;
    }
    uint8_t mac[RL_SHA256_LEN];
    assert_int_equal(rl_hmac_sha256(k, 32, out, strlen(out), mac), RL_OK);
    char s[64];
    assert_int_equal(rl_base64url_encode(mac, sizeof mac, s, sizeof s), RL_OK);
    snprintf(out + strlen(out), cap - strlen(out), ".%s", s);
}

static const char GOOD_HEADER[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static void sign_then_verify_round_trips(void **state)
{
    (void)state;
    api_jwt_claims_t c = sample(), got;
    char tok[API_JWT_SIZE];
    assert_int_equal(api_jwt_sign(key, &c, tok, sizeof tok), RL_OK);
    assert_int_equal(strncmp(tok, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.", 37), 0);
    memset(&got, 0xAA, sizeof got);
    assert_int_equal(api_jwt_verify(key, tok, NOW, &got), RL_OK);
    assert_string_equal(got.sub, c.sub);
    assert_string_equal(got.tid, c.tid);
    assert_string_equal(got.role, c.role);
    assert_string_equal(got.jti, c.jti);
    assert_int_equal(got.iat, c.iat);
    assert_int_equal(got.exp, c.exp);
}

static void a_token_from_another_encoder_verifies(void **state)
{
    (void)state;
    /* Claims in another order, with whitespace: only the bytes signed matter. */
    char tok[API_JWT_SIZE];
    craft(key, "{\"typ\":\"JWT\", \"alg\":\"HS256\"}",
          "{\"exp\": 1800003600, \"iat\": 1799999990, \"role\": \"viewer\","
          " \"jti\": \"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d\","
          " \"tid\": \"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c\","
          " \"sub\": \"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\", \"extra\": true}",
          NULL, tok, sizeof tok);
    api_jwt_claims_t got;
    assert_int_equal(api_jwt_verify(key, tok, NOW, &got), RL_OK);
    assert_string_equal(got.role, "viewer");
}

static void tampering_any_character_of_any_segment_is_refused(void **state)
{
    (void)state;
    api_jwt_claims_t c = sample(), got;
    char tok[API_JWT_SIZE], bad[API_JWT_SIZE + 1];
    assert_int_equal(api_jwt_sign(key, &c, tok, sizeof tok), RL_OK);
    size_t n = strlen(tok);
    int segment = 0;
    int tampered[3] = {0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        if (tok[i] == '.') {
            segment++;
            continue;
        }
        memcpy(bad, tok, n + 1);
        bad[i] = tok[i] == 'A' ? 'B' : 'A';
        memset(&got, 0x55, sizeof got);
        rl_status_t st = api_jwt_verify(key, bad, NOW, &got);
        if (st == RL_OK)
            fail_msg("tampered character %zu (segment %d) was accepted", i, segment);
        assert_true(st == RL_ERR_CRYPTO || st == RL_ERR_INVALID);
        assert_int_equal((unsigned char)got.sub[0], 0x55); /* *out untouched */
        tampered[segment]++;
    }
    assert_true(tampered[0] > 0 && tampered[1] > 0 && tampered[2] > 0);
    /* Truncating or extending the signature too. */
    memcpy(bad, tok, n + 1);
    bad[n - 1] = '\0';
    assert_int_not_equal(api_jwt_verify(key, bad, NOW, &got), RL_OK);
    memcpy(bad, tok, n);
    bad[n] = 'A';
    bad[n + 1] = '\0';
    assert_int_not_equal(api_jwt_verify(key, bad, NOW, &got), RL_OK);
}

static void another_key_is_refused(void **state)
{
    (void)state;
    api_jwt_claims_t c = sample(), got;
    char tok[API_JWT_SIZE];
    uint8_t other[32];
    memcpy(other, key, sizeof other);
    other[31] ^= 1;
    assert_int_equal(api_jwt_sign(other, &c, tok, sizeof tok), RL_OK);
    assert_int_equal(api_jwt_verify(key, tok, NOW, &got), RL_ERR_CRYPTO);
}

static void alg_none_and_other_headers_are_refused(void **state)
{
    (void)state;
    api_jwt_claims_t got;
    char tok[API_JWT_SIZE];
    const char *payload = "{\"sub\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\","
                          "\"tid\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c\",\"role\":\"owner\","
                          "\"jti\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d\","
                          "\"iat\":1799999990,\"exp\":1800003600}";
    /* The classic: alg none, empty signature. */
    craft(key, "{\"alg\":\"none\",\"typ\":\"JWT\"}", payload, "", tok, sizeof tok);
    assert_int_equal(api_jwt_verify(key, tok, NOW, &got), RL_ERR_INVALID);
    /* Even with a valid HMAC, any header but exactly HS256/JWT is refused. */
    static const char *const headers[] = {
        "{\"alg\":\"none\",\"typ\":\"JWT\"}",
        "{\"alg\":\"None\",\"typ\":\"JWT\"}",
        "{\"alg\":\"HS512\",\"typ\":\"JWT\"}",
        "{\"alg\":\"RS256\",\"typ\":\"JWT\"}",
        "{\"alg\":\"HS256\"}",
        "{\"alg\":\"HS256\",\"typ\":\"jwt+at\"}",
        "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"x\"}",
        "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"alg\":\"HS256\"}",
        "{\"alg\":[\"HS256\"],\"typ\":\"JWT\"}",
        "[\"HS256\",\"JWT\"]",
        "not json",
    };
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        craft(key, headers[i], payload, NULL, tok, sizeof tok);
        if (api_jwt_verify(key, tok, NOW, &got) != RL_ERR_INVALID)
            fail_msg("header %s was not refused", headers[i]);
    }
    /* The control: the same payload with the right header passes. */
    craft(key, GOOD_HEADER, payload, NULL, tok, sizeof tok);
    assert_int_equal(api_jwt_verify(key, tok, NOW, &got), RL_OK);
}

static void malformed_shapes_are_refused(void **state)
{
    (void)state;
    api_jwt_claims_t c = sample(), got;
    char tok[API_JWT_SIZE], bad[API_JWT_SIZE + 16];
    assert_int_equal(api_jwt_sign(key, &c, tok, sizeof tok), RL_OK);
    static const char *const shapes[] = {"", ".", "..", "...", "a", "a.b", "a.b.c.d", "a..c"};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        assert_int_equal(api_jwt_verify(key, shapes[i], NOW, &got), RL_ERR_INVALID);
    assert_int_equal(api_jwt_verify(key, NULL, NOW, &got), RL_ERR_INVALID);
    /* Four segments: the good token with one more. */
    snprintf(bad, sizeof bad, "%s.%s", tok, "AAAA");
    assert_int_equal(api_jwt_verify(key, bad, NOW, &got), RL_ERR_INVALID);
    /* Padding, standard-base64 characters and whitespace in the signature. */
    snprintf(bad, sizeof bad, "%s=", tok);
    assert_int_equal(api_jwt_verify(key, bad, NOW, &got), RL_ERR_INVALID);
    snprintf(bad, sizeof bad, "%s ", tok);
    assert_int_equal(api_jwt_verify(key, bad, NOW, &got), RL_ERR_INVALID);
    memcpy(bad, tok, strlen(tok) + 1);
    bad[strlen(bad) - 3] = '+';
    assert_int_equal(api_jwt_verify(key, bad, NOW, &got), RL_ERR_INVALID);
    /* A correctly signed header segment that is not base64url. */
    const char *dot = strchr(tok, '.');
    snprintf(bad, sizeof bad, "eyJ*%s", dot);
    assert_int_not_equal(api_jwt_verify(key, bad, NOW, &got), RL_OK);
}

static void oversize_tokens_are_refused_before_any_work(void **state)
{
    (void)state;
    api_jwt_claims_t got;
    char *big = malloc(API_JWT_MAX_LEN + 2);
    assert_non_null(big);
    memset(big, 'A', API_JWT_MAX_LEN + 1);
    big[10] = '.';
    big[20] = '.';
    big[API_JWT_MAX_LEN + 1] = '\0';
    assert_int_equal(api_jwt_verify(key, big, NOW, &got), RL_ERR_TOO_LARGE);
    /* A correctly signed token over the bound is refused as well. */
    char *payload = malloc(API_JWT_MAX_LEN + 256), *tok = malloc(2 * API_JWT_MAX_LEN);
    assert_non_null(payload);
    assert_non_null(tok);
    int n = snprintf(payload, API_JWT_MAX_LEN, "{\"pad\":\"");
    memset(payload + n, 'x', 3200);
    snprintf(payload + n + 3200, 256,
             "\",\"sub\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\","
             "\"tid\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c\",\"role\":\"owner\","
             "\"jti\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d\",\"iat\":1,\"exp\":1900000000}");
    craft(key, GOOD_HEADER, payload, NULL, tok, 2 * API_JWT_MAX_LEN);
    assert_true(strlen(tok) > API_JWT_MAX_LEN);
    assert_int_equal(api_jwt_verify(key, tok, NOW, &got), RL_ERR_TOO_LARGE);
    free(big);
    free(payload);
    free(tok);
}

static void expired_tokens_are_refused(void **state)
{
    (void)state;
    api_jwt_claims_t c = sample(), got;
    char tok[API_JWT_SIZE];
    c.iat = NOW - 7200;
    c.exp = NOW - 1;
    assert_int_equal(api_jwt_sign(key, &c, tok, sizeof tok), RL_OK);
    assert_int_equal(api_jwt_verify(key, tok, NOW, &got), RL_ERR_TIMEOUT);
    /* exp is exclusive: a token is dead at its exp second. */
    c.exp = NOW;
    assert_int_equal(api_jwt_sign(key, &c, tok, sizeof tok), RL_OK);
    assert_int_equal(api_jwt_verify(key, tok, NOW, &got), RL_ERR_TIMEOUT);
    assert_int_equal(api_jwt_verify(key, tok, NOW - 1, &got), RL_OK);
}

static void not_yet_valid_tokens_are_refused(void **state)
{
    (void)state;
    api_jwt_claims_t got;
    char tok[API_JWT_SIZE], payload[512];
#define NBF_PAYLOAD                                                                                \
    "{\"sub\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\","                                           \
    "\"tid\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c\",\"role\":\"owner\","                         \
    "\"jti\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d\","                                            \
    "\"iat\":1799999990,\"exp\":1800003600,\"nbf\":%lld}"
    snprintf(payload, sizeof payload, NBF_PAYLOAD, NOW + 600);
    craft(key, GOOD_HEADER, payload, NULL, tok, sizeof tok);
    assert_int_equal(api_jwt_verify(key, tok, NOW, &got), RL_ERR_TIMEOUT);
    /* Within the clock-skew leeway: accepted. */
    snprintf(payload, sizeof payload, NBF_PAYLOAD, NOW + API_JWT_LEEWAY_S);
    craft(key, GOOD_HEADER, payload, NULL, tok, sizeof tok);
    assert_int_equal(api_jwt_verify(key, tok, NOW, &got), RL_OK);
    /* nbf of the wrong type. */
    snprintf(payload, sizeof payload,
             "{\"sub\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\","
             "\"tid\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c\",\"role\":\"owner\","
             "\"jti\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d\","
             "\"iat\":1799999990,\"exp\":1800003600,\"nbf\":\"soon\"}");
    craft(key, GOOD_HEADER, payload, NULL, tok, sizeof tok);
    assert_int_equal(api_jwt_verify(key, tok, NOW, &got), RL_ERR_INVALID);
}

static void missing_or_mistyped_claims_are_refused(void **state)
{
    (void)state;
    static const char *const payloads[] = {
        /* each of the six claims missing */
        "{\"tid\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c\",\"role\":\"owner\","
        "\"jti\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d\",\"iat\":1,\"exp\":1900000000}",
        "{\"sub\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\",\"role\":\"owner\","
        "\"jti\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d\",\"iat\":1,\"exp\":1900000000}",
        "{\"sub\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\","
        "\"tid\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c\","
        "\"jti\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d\",\"iat\":1,\"exp\":1900000000}",
        "{\"sub\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\","
        "\"tid\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c\",\"role\":\"owner\","
        "\"iat\":1,\"exp\":1900000000}",
        "{\"sub\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\","
        "\"tid\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c\",\"role\":\"owner\","
        "\"jti\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d\",\"exp\":1900000000}",
        "{\"sub\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\","
        "\"tid\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c\",\"role\":\"owner\","
        "\"jti\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d\",\"iat\":1}",
        /* mistyped or malformed */
        "{\"sub\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\","
        "\"tid\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c\",\"role\":\"owner\","
        "\"jti\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d\",\"iat\":1,\"exp\":\"1900000000\"}",
        "{\"sub\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\","
        "\"tid\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c\",\"role\":\"owner\","
        "\"jti\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d\",\"iat\":1,\"exp\":1.9e9}",
        "{\"sub\":\"not-a-uuid\","
        "\"tid\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c\",\"role\":\"owner\","
        "\"jti\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d\",\"iat\":1,\"exp\":1900000000}",
        "{\"sub\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\","
        "\"tid\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c\",\"role\":\"root\","
        "\"jti\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d\",\"iat\":1,\"exp\":1900000000}",
        "{\"sub\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\","
        "\"tid\":42,\"role\":\"owner\","
        "\"jti\":\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d\",\"iat\":1,\"exp\":1900000000}",
        "[1,2,3]",
        "{}",
    };
    api_jwt_claims_t got;
    char tok[API_JWT_SIZE];
    for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++) {
        craft(key, GOOD_HEADER, payloads[i], NULL, tok, sizeof tok);
        if (api_jwt_verify(key, tok, NOW, &got) != RL_ERR_INVALID)
            fail_msg("payload %zu was not refused: %s", i, payloads[i]);
    }
}

static void sign_refuses_bad_claims_and_short_buffers(void **state)
{
    (void)state;
    api_jwt_claims_t c = sample();
    char tok[API_JWT_SIZE], small[64];
    assert_int_equal(api_jwt_sign(key, &c, small, sizeof small), RL_ERR_TOO_LARGE);
    c.role[0] = 'x';
    assert_int_equal(api_jwt_sign(key, &c, tok, sizeof tok), RL_ERR_INVALID);
    c = sample();
    c.exp = c.iat;
    assert_int_equal(api_jwt_sign(key, &c, tok, sizeof tok), RL_ERR_INVALID);
    c = sample();
    snprintf(c.jti, sizeof c.jti, "abc");
    assert_int_equal(api_jwt_sign(key, &c, tok, sizeof tok), RL_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sign_then_verify_round_trips),
        cmocka_unit_test(a_token_from_another_encoder_verifies),
        cmocka_unit_test(tampering_any_character_of_any_segment_is_refused),
        cmocka_unit_test(another_key_is_refused),
        cmocka_unit_test(alg_none_and_other_headers_are_refused),
        cmocka_unit_test(malformed_shapes_are_refused),
        cmocka_unit_test(oversize_tokens_are_refused_before_any_work),
        cmocka_unit_test(expired_tokens_are_refused),
        cmocka_unit_test(not_yet_valid_tokens_are_refused),
        cmocka_unit_test(missing_or_mistyped_claims_are_refused),
        cmocka_unit_test(sign_refuses_bad_claims_and_short_buffers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
