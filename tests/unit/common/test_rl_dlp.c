/* Unit tests for libs/common/rl_dlp.c and rl_dlp_validate.c: validators,
 * names, detection and placeholders, overrides, custom rules and their
 * limits, the verdict, redaction, streaming (a secret split at every byte)
 * and concurrent scans of one engine. The precision/recall gate over the
 * labelled corpus is test_rl_dlp_corpus.c.
 * Key-shaped literals are split ("sk_" "live_") so secret scanners do not
 * mistake this file for a leak; every value is synthetic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rl_crypto.h"
#include "rl_dlp.h"

static rl_dlp_engine_t *default_engine(void)
{
    rl_dlp_engine_t *e = NULL;
    assert_int_equal(rl_dlp_engine_create(NULL, &e), RL_OK);
    return e;
}

/* Scans s as a request; returns the number of findings of detector det
 * (NULL: all) and, for the first, its span. */
static size_t count(const rl_dlp_engine_t *e, const char *s, const char *det, size_t *start,
                    size_t *end)
{
    rl_dlp_findings_t f;
    rl_dlp_findings_init(&f, 256);
    assert_int_equal(rl_dlp_scan(e, RL_DLP_SCOPE_REQUEST, s, strlen(s), NULL, &f), RL_OK);
    size_t n = 0;
    for (size_t i = 0; i < f.len; i++)
        if (det == NULL || strcmp(f.items[i].detector, det) == 0) {
            if (n == 0 && start)
                *start = f.items[i].start;
            if (n == 0 && end)
                *end = f.items[i].end;
            n++;
        }
    rl_dlp_findings_free(&f);
    return n;
}

/* Asserts s has exactly one finding of det, spanning the substring want. */
/* An engine of the built-ins and one custom rule. */
static rl_dlp_engine_t *engine_with_rule(const rl_dlp_rule_t *r)
{
    rl_dlp_config_t *cfg;
    assert_int_equal(rl_dlp_config_create(&cfg), RL_OK);
    assert_int_equal(rl_dlp_config_add_rule(cfg, r), RL_OK);
    rl_dlp_engine_t *e;
    assert_int_equal(rl_dlp_engine_create(cfg, &e), RL_OK);
    rl_dlp_config_destroy(cfg);
    return e;
}

static void expect_one(const rl_dlp_engine_t *e, const char *s, const char *det, const char *want)
{
    size_t a = 0, b = 0;
    size_t n = count(e, s, det, &a, &b);
    if (n != 1)
        fail_msg("%s: %zu findings in \"%s\"", det, n, s);
    const char *at = strstr(s, want);
    assert_non_null(at);
    if (a != (size_t)(at - s) || b != a + strlen(want))
        fail_msg("%s: span [%zu,%zu) in \"%s\", want \"%s\"", det, a, b, s, want);
}

static void expect_none(const rl_dlp_engine_t *e, const char *s, const char *det)
{
    size_t n = count(e, s, det, NULL, NULL);
    if (n != 0)
        fail_msg("%s: %zu unexpected findings in \"%s\"", det ? det : "any", n, s);
}

/* The digit-count gate and the '.'/':' stem filters only skip texts that
 * cannot match: values with exactly the fewest digits their detector needs
 * are found at every alignment of the text (the digit count reads 8 bytes
 * at a time), after multi-byte UTF-8 and after JSON full of '.' and ':'. */
static void prefilters_keep_every_match(void **state)
{
    (void)state;
    rl_dlp_engine_t *e = default_engine();
    static const struct {
        const char *text, *det, *want;
    } cases[] = {
        {"SSN 536-22-1234.", "US_SSN", "536-22-1234"},            /* 9 digits */
        {"call (415) 867-2671 now", "PHONE", "(415) 867-2671"},   /* 10 */
        {"tel +44 20 7946 1234.", "PHONE", "+44 20 7946 1234"},   /* 12 */
        {"card 4539 5787 6362 1486 exp", "CREDIT_CARD", "4539 5787 6362 1486"},
        {"IBAN BE68 5390 0754 7034 THEN pay", "IBAN", "BE68 5390 0754 7034"},
        {"host 10.20.30.40:5432", "IP_ADDRESS", "10.20.30.40"},    /* 8 */
        {"{\"a\":\"b\",\"v6\":\"2a00:1450:4001:81c::200e\"}", "IP_ADDRESS",
         "2a00:1450:4001:81c::200e"},
        {"{\"a\":\"b\",\"v6\":\"fd12:3456:789a::1\"}", "IP_ADDRESS", "fd12:3456:789a::1"},
    };
    char text[1024];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (size_t pad = 0; pad < 300; pad += 1 + pad / 16) {
            size_t n = 0;
            for (size_t i = 0; i < pad; i++) /* prose with "é" and JSON punctuation */
                n += (size_t)snprintf(text + n, sizeof text - n, "%s",
                                      i % 7 == 3 ? "\xc3\xa9" : i % 5 == 1 ? ":" : i % 9 == 2 ? "." : "x");
            snprintf(text + n, sizeof text - n, " %s", cases[c].text);
            expect_one(e, text, cases[c].det, cases[c].want);
        }
    /* below the fewest digits: nothing, wherever the digits are */
    expect_none(e, "SSN 536-22-123 and 7", "US_SSN");
    expect_none(e, "{\"x\":\"1.2\",\"y\":\"3.4\"}", "IP_ADDRESS");
    rl_dlp_engine_release(e);
}

/* ---- validators ----------------------------------------------------------- */

static void luhn_and_cards(void **state)
{
    (void)state;
    assert_true(rl_dlp_luhn_valid("79927398713", 11));
    assert_false(rl_dlp_luhn_valid("79927398710", 11));
    assert_true(rl_dlp_luhn_valid("4539 5787 6362 1486", 19));
    assert_false(rl_dlp_luhn_valid("4539x5787", 9));
    assert_false(rl_dlp_luhn_valid("0", 1));
    assert_true(rl_dlp_card_valid("4539578763621486", 16));    /* Visa 16 */
    assert_true(rl_dlp_card_valid("4539-5787-6362-1486", 19)); /* separators */
    assert_true(rl_dlp_card_valid("371449635398431", 15));     /* Amex */
    assert_true(rl_dlp_card_valid("5555555555554444", 16));    /* Mastercard (Luhn ok) */
    assert_true(rl_dlp_card_valid("2223003122003222", 16));    /* Mastercard 2-series */
    assert_true(rl_dlp_card_valid("36227206271667", 14));      /* Diners */
    assert_false(rl_dlp_card_valid("4539578763621487", 16));   /* Luhn fails */
    assert_false(rl_dlp_card_valid("37144963539843", 14));     /* Amex must be 15 */
    assert_false(rl_dlp_card_valid("9539578763621486", 16));   /* no network starts 9 */
    assert_false(rl_dlp_card_valid("1234567812345670", 16));   /* Luhn ok, no network */
    assert_false(rl_dlp_card_valid("45395787", 8));            /* too short */
}

static void iban(void **state)
{
    (void)state;
    const char *ok[] = {"DE89370400440532013000",
                        "GB82WEST12345698765432",
                        "GB82 WEST 1234 5698 7654 32",
                        "FR1420041010050500013M02606",
                        "NL91ABNA0417164300",
                        "BE68539007547034",
                        "NO9386011117947",
                        "CH9300762011623852957"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (!rl_dlp_iban_valid(ok[i], strlen(ok[i])))
            fail_msg("valid IBAN rejected: %s", ok[i]);
    const char *bad[] = {"DE89370400440532013001",   /* check digits */
                         "DE8937040044053201300",    /* length for DE */
                         "XX89370400440532013000",   /* no such country */
                         "de89370400440532013000",   /* lower case */
                         "GB82  WEST12345698765432", /* double space */
                         "DE89-3704-0044-0532-0130-00"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (rl_dlp_iban_valid(bad[i], strlen(bad[i])))
            fail_msg("invalid IBAN accepted: %s", bad[i]);
}

static void ssn(void **state)
{
    (void)state;
    assert_true(rl_dlp_ssn_valid("536-22-1234", 11));
    assert_true(rl_dlp_ssn_valid("536 22 1234", 11));
    assert_true(rl_dlp_ssn_valid("536221234", 9));
    assert_true(rl_dlp_ssn_valid("899-99-9999", 11));
    assert_false(rl_dlp_ssn_valid("000-22-1234", 11)); /* area 000 */
    assert_false(rl_dlp_ssn_valid("666-22-1234", 11)); /* area 666 */
    assert_false(rl_dlp_ssn_valid("900-22-1234", 11)); /* area 9xx */
    assert_false(rl_dlp_ssn_valid("999-22-1234", 11));
    assert_false(rl_dlp_ssn_valid("536-00-1234", 11)); /* group 00 */
    assert_false(rl_dlp_ssn_valid("536-22-0000", 11)); /* serial 0000 */
    assert_false(rl_dlp_ssn_valid("536-22 1234", 11)); /* mixed separators */
    assert_false(rl_dlp_ssn_valid("53622123", 8));
}

static void ip_addresses(void **state)
{
    (void)state;
    const char *v4ok[] = {"10.0.0.1", "192.168.1.254", "255.255.255.255", "0.0.0.0", "8.8.4.4"};
    for (size_t i = 0; i < sizeof v4ok / sizeof v4ok[0]; i++)
        assert_true(rl_dlp_ipv4_valid(v4ok[i], strlen(v4ok[i])));
    const char *v4bad[] = {"256.1.1.1", "1.2.3",      "1.2.3.4.5", "01.2.3.4",
                           "1..2.3",    "1.2.3.1000", "a.b.c.d",   ""};
    for (size_t i = 0; i < sizeof v4bad / sizeof v4bad[0]; i++)
        if (rl_dlp_ipv4_valid(v4bad[i], strlen(v4bad[i])))
            fail_msg("bad IPv4 accepted: %s", v4bad[i]);
    const char *v6ok[] = {"::1", "fe80::1", "2001:db8::8a2e:370:7334", "::ffff:192.0.2.1",
                          "2606:4700:4700:0:0:0:0:1111"};
    for (size_t i = 0; i < sizeof v6ok / sizeof v6ok[0]; i++)
        assert_true(rl_dlp_ipv6_valid(v6ok[i], strlen(v6ok[i])));
    const char *v6bad[] = {"12:30:45", "1::2::3", "gggg::1", "00:1a:2b:3c:4d:5e", ":"};
    for (size_t i = 0; i < sizeof v6bad / sizeof v6bad[0]; i++)
        if (rl_dlp_ipv6_valid(v6bad[i], strlen(v6bad[i])))
            fail_msg("bad IPv6 accepted: %s", v6bad[i]);
}

/* b64url(header) "." b64url(payload) "." sig into out */
static void make_jwt(const char *header, const char *payload, const char *sig, char *out,
                     size_t cap)
{
    char h[512], p[8192];
    assert_int_equal(rl_base64url_encode(header, strlen(header), h, sizeof h), RL_OK);
    assert_int_equal(rl_base64url_encode(payload, strlen(payload), p, sizeof p), RL_OK);
    int n = snprintf(out, cap, "%s.%s.%s", h, p, sig);
    assert_true(n > 0 && (size_t)n < cap);
}

static void jwt(void **state)
{
    (void)state;
    char t[1024];
    const char *sig = "Qm9ndXNTaWduYXR1cmVGb3JUZXN0c19fX2FiY2RlZg";
    make_jwt("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", "{\"sub\":\"42\"}", sig, t, sizeof t);
    assert_true(rl_dlp_jwt_valid(t, strlen(t)));
    make_jwt("{\"typ\":\"JWT\"}", "{\"sub\":\"42\"}", sig, t, sizeof t); /* no alg */
    assert_false(rl_dlp_jwt_valid(t, strlen(t)));
    make_jwt("{\"alg\":7}", "{\"sub\":\"42\"}", sig, t, sizeof t); /* alg not a string */
    assert_false(rl_dlp_jwt_valid(t, strlen(t)));
    make_jwt("not json at all", "{\"sub\":\"42\"}", sig, t, sizeof t);
    assert_false(rl_dlp_jwt_valid(t, strlen(t)));
    make_jwt("{\"alg\":\"HS256\"}", "{\"sub\":\"42\"}", "", t, sizeof t); /* no signature */
    assert_false(rl_dlp_jwt_valid(t, strlen(t)));
    assert_false(rl_dlp_jwt_valid("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0", 36)); /* 2 parts */
    make_jwt("{\"alg\":\"HS256\"}", "{}", "a!b", t, sizeof t);                  /* bad sig */
    assert_false(rl_dlp_jwt_valid(t, strlen(t)));
}

static void entropy(void **state)
{
    (void)state;
    assert_true(rl_dlp_entropy("", 0) == 0.0);
    assert_true(rl_dlp_entropy("aaaa", 4) == 0.0);
    assert_true(rl_dlp_entropy("abab", 4) == 1.0);
    char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (char)i;
    assert_true(rl_dlp_entropy(all, 256) > 7.999 && rl_dlp_entropy(all, 256) < 8.001);
}

/* ---- names ---------------------------------------------------------------- */

static void names(void **state)
{
    (void)state;
    rl_dlp_builtin_t d;
    assert_string_equal(rl_dlp_builtin_id(RL_DLP_CREDIT_CARD), "CREDIT_CARD");
    assert_null(rl_dlp_builtin_id(RL_DLP_BUILTIN_COUNT));
    assert_int_equal(rl_dlp_builtin_parse("credit_card", &d), RL_OK);
    assert_int_equal(d, RL_DLP_CREDIT_CARD);
    assert_int_equal(rl_dlp_builtin_parse("SOURCE_CODE", &d), RL_OK);
    assert_int_equal(d, RL_DLP_SOURCE_CODE);
    assert_int_equal(rl_dlp_builtin_parse("nope", &d), RL_ERR_NOT_FOUND);
    for (int i = 0; i < RL_DLP_BUILTIN_COUNT; i++) {
        assert_non_null(rl_dlp_builtin_id(i));
        assert_true(rl_dlp_builtin_severity(i) >= RL_DLP_SEVERITY_LOW);
        assert_true(rl_dlp_builtin_action(i) >= RL_DLP_ACTION_WARN);
    }
    assert_int_equal(rl_dlp_builtin_severity(RL_DLP_AWS_ACCESS_KEY), RL_DLP_SEVERITY_CRITICAL);
    assert_int_equal(rl_dlp_builtin_action(RL_DLP_AWS_ACCESS_KEY), RL_DLP_ACTION_BLOCK);
    assert_int_equal(rl_dlp_builtin_action(RL_DLP_EMAIL), RL_DLP_ACTION_REDACT);
    rl_dlp_severity_t s;
    rl_dlp_action_t a;
    rl_dlp_scope_t sc;
    assert_int_equal(rl_dlp_severity_parse("critical", &s), RL_OK);
    assert_int_equal(s, RL_DLP_SEVERITY_CRITICAL);
    assert_int_equal(rl_dlp_severity_parse("CRITICAL", &s), RL_ERR_INVALID);
    assert_int_equal(rl_dlp_action_parse("redact", &a), RL_OK);
    assert_int_equal(a, RL_DLP_ACTION_REDACT);
    assert_int_equal(rl_dlp_scope_parse("both", &sc), RL_OK);
    assert_int_equal(sc, RL_DLP_SCOPE_BOTH);
    assert_int_equal(rl_dlp_scope_parse("", &sc), RL_ERR_INVALID);
    assert_string_equal(rl_dlp_severity_str(RL_DLP_SEVERITY_HIGH), "high");
    assert_string_equal(rl_dlp_action_str(RL_DLP_ACTION_BLOCK), "block");
    assert_string_equal(rl_dlp_scope_str(RL_DLP_SCOPE_RESPONSE), "response");
    assert_string_equal(rl_dlp_verdict_str(RL_DLP_BLOCKED), "DLP_BLOCKED");
    assert_string_equal(rl_dlp_verdict_str(RL_DLP_WARNED), "DLP_WARNED");
    assert_string_equal(rl_dlp_severity_str(0), "?");
}

/* ---- detection ------------------------------------------------------------- */

static void detects_and_spans(void **state)
{
    (void)state;
    rl_dlp_engine_t *e = default_engine();
    expect_one(e, "write to ana.lopez+q3@acme-corp.io today", "EMAIL", "ana.lopez+q3@acme-corp.io");
    expect_one(e, "call (415) 867-2671 now", "PHONE", "(415) 867-2671");
    expect_one(e, "tel +44 20 7946 1234.", "PHONE", "+44 20 7946 1234");
    expect_one(e, "SSN 536-22-1234.", "US_SSN", "536-22-1234");
    expect_one(e, "ssn: 536221234", "US_SSN", "536221234");
    expect_one(e, "card 4539 5787 6362 1486 exp", "CREDIT_CARD", "4539 5787 6362 1486");
    expect_one(e, "IBAN BE68 5390 0754 7034 THEN pay", "IBAN", "BE68 5390 0754 7034");
    expect_one(e, "host 10.20.30.40:5432", "IP_ADDRESS", "10.20.30.40");
    expect_one(e, "host [2a00:1450:4001:81c::200e]:443", "IP_ADDRESS", "2a00:1450:4001:81c::200e");
    expect_one(e,
               "id="
               "AKIA"
               "Q7ZJ4XK2M9TBL3WP",
               "AWS_ACCESS_KEY",
               "AKIA"
               "Q7ZJ4XK2M9TBL3WP");
    /* a JSON "\n" escape before a key is a line break, not a letter */
    expect_one(e,
               "{\"content\":\"keys:\\n"
               "AKIA"
               "Q7ZJ4XK2M9TBL3WP\"}",
               "AWS_ACCESS_KEY",
               "AKIA"
               "Q7ZJ4XK2M9TBL3WP");
    expect_one(e,
               "aws_secret_access_key = "
               "kX9/2mQpL7vR4tYzW1nB8cD3fG6hJ0sA5eU+iO2q",
               "AWS_SECRET_KEY", "kX9/2mQpL7vR4tYzW1nB8cD3fG6hJ0sA5eU+iO2q");
    expect_one(e,
               "token "
               "ghp_"
               "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5",
               "GITHUB_TOKEN",
               "ghp_"
               "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5");
    expect_one(e,
               "SLACK="
               "xoxb-"
               "482913374521-1837462938475-Zq8Wm2Kp9Rt4Lx7Nc3Vb6Hj1",
               "SLACK_TOKEN",
               "xoxb-"
               "482913374521-1837462938475-Zq8Wm2Kp9Rt4Lx7Nc3Vb6Hj1");
    expect_one(e,
               "key "
               "sk_"
               "live_"
               "9Fq2Lm7Rx4Tz8Wb3Nc6Vh1Jk5P",
               "STRIPE_KEY",
               "sk_"
               "live_"
               "9Fq2Lm7Rx4Tz8Wb3Nc6Vh1Jk5P");
    expect_one(e,
               "key "
               "sk-"
               "Ab3De5Fg7Hj9Kl1Mn3PqT3BlbkFJRs5Tu7Vw9Xy1Za3Bc5De",
               "OPENAI_KEY",
               "sk-"
               "Ab3De5Fg7Hj9Kl1Mn3PqT3BlbkFJRs5Tu7Vw9Xy1Za3Bc5De");
    expect_one(
        e,
        "k="
        "sk-"
        "ant-api03-Xq9Lm2Rt7Vb4Nc8Wz1Kp5Hj3Fg6Ds0Ae9Yu2Io4Pl7Mk1Nj5Bh8Gv3Cf6Dx0Sz2Aq9Wr4Et7Ty1AA",
        "ANTHROPIC_KEY",
        "sk-"
        "ant-api03-Xq9Lm2Rt7Vb4Nc8Wz1Kp5Hj3Fg6Ds0Ae9Yu2Io4Pl7Mk1Nj5Bh8Gv3Cf6Dx0Sz2Aq9Wr4Et7Ty1AA");
    expect_one(e,
               "maps "
               "AIza"
               "SyQ7xL2mR9tV4bN8cW1kP5hJ3fG6dS0aE9y",
               "GOOGLE_API_KEY",
               "AIza"
               "SyQ7xL2mR9tV4bN8cW1kP5hJ3fG6dS0aE9y");
    expect_one(e, "DB_PASSWORD=Xq9#Lm2!Rt7v\n", "GENERIC_SECRET", "Xq9#Lm2!Rt7v");
    expect_one(e, "postgres://app:Zt8Kw2Qx9@db.internal/app", "GENERIC_SECRET", "Zt8Kw2Qx9");
    expect_one(e, "see:\n```\ndef load(path):\n    pass\n```", "SOURCE_CODE", "def load(path):");
    char t[1024], s[1200];
    make_jwt("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", "{\"sub\":\"1042\",\"exp\":1900000000}",
             "c2lnbmF0dXJlLWJ5dGVzLWZvci10aGUtdGVzdC1vbmx5", t, sizeof t);
    snprintf(s, sizeof s, "Authorization: Bearer %s\n", t);
    expect_one(e, s, "JWT", t);
    expect_none(e, s, "GENERIC_SECRET"); /* the JWT outranks the bearer token */
    rl_dlp_engine_release(e);
}

static void placeholders_and_hard_negatives(void **state)
{
    (void)state;
    rl_dlp_engine_t *e = default_engine();
    const char *clean[] = {
        "mail user@example.com or ops@mail.example.org; jane@test; git@github.com:a/b.git",
        "icon@2x.png, lodash@4.17.21, @decorator",
        "test cards 4111 1111 1111 1111 and 4242424242424242",
        "order 4539578763621487 (Luhn fails)",
        "SSNs 123-45-6789, 000-12-3456, 666-12-3456, 912-34-5678, 123-00-4567",
        "version 1.2.3.4, 127.0.0.1, 0.0.0.0, 255.255.255.0, 192.0.2.1, 2001:db8::1, ::1",
        "12:30:45 and 00:1a:2b:3c:4d:5e and OID 1.3.6.1.4.1.2021",
        "AKIA"
        "IOSFODNN7EXAMPLE",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCY"
        "EXAMPLEKEY",
        "sk-"
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "OPENAI_API_KEY=sk-... YOUR_API_KEY",
        "sk_"
        "test_4eC39HqLyjWDarjtT1zdp7dc",
        "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----",
        "password=${DB_PASSWORD} password: changeme api_key = os.environ[\"API_KEY\"]",
        "{\"max_tokens\": 4096, \"token_count\": 1500}",
        "Authorization: Bearer <token>",
        "550e8400-e29b-41d4-a716-446655440000 "
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "2024-11-23T10:15:30.123456Z epoch 1732356930 ms 1732356930123",
        "(212) 555-0199 is a movie number",
        "In Python you use def to define a function.",
    };
    for (size_t i = 0; i < sizeof clean / sizeof clean[0]; i++)
        expect_none(e, clean[i], NULL);
    rl_dlp_engine_release(e);
}

/* ---- configuration ---------------------------------------------------------- */

static const char *TEXT = "mail ana@acme-corp.io, key "
                          "AKIA"
                          "Q7ZJ4XK2M9TBL3WP";

static void overrides(void **state)
{
    (void)state;
    rl_dlp_config_t *cfg;
    assert_int_equal(rl_dlp_config_create(&cfg), RL_OK);
    assert_int_equal(rl_dlp_config_set_builtin(cfg, RL_DLP_EMAIL, false, 0, 0), RL_OK);
    assert_int_equal(rl_dlp_config_set_builtin(cfg, RL_DLP_AWS_ACCESS_KEY, true,
                                               RL_DLP_SEVERITY_MEDIUM, RL_DLP_ACTION_REDACT),
                     RL_OK);
    assert_int_equal(rl_dlp_config_set_builtin(cfg, RL_DLP_BUILTIN_COUNT, true, 0, 0),
                     RL_ERR_INVALID);
    assert_int_equal(rl_dlp_config_set_builtin(cfg, RL_DLP_JWT, true, 9, 0), RL_ERR_INVALID);
    rl_dlp_engine_t *e;
    assert_int_equal(rl_dlp_engine_create(cfg, &e), RL_OK);
    rl_dlp_config_destroy(cfg); /* the engine does not borrow it */
    rl_dlp_findings_t f;
    rl_dlp_findings_init(&f, 16);
    assert_int_equal(rl_dlp_scan(e, RL_DLP_SCOPE_REQUEST, TEXT, strlen(TEXT), NULL, &f), RL_OK);
    assert_int_equal(f.len, 1);
    assert_string_equal(f.items[0].detector, "AWS_ACCESS_KEY");
    assert_int_equal(f.items[0].builtin, RL_DLP_AWS_ACCESS_KEY);
    assert_int_equal(f.items[0].severity, RL_DLP_SEVERITY_MEDIUM);
    assert_int_equal(f.items[0].action, RL_DLP_ACTION_REDACT);
    assert_int_equal(rl_dlp_verdict(&f), RL_DLP_WARNED); /* was BLOCKED by default */
    rl_dlp_findings_free(&f);
    rl_dlp_engine_release(e);

    /* severity only: the default action stays */
    assert_int_equal(rl_dlp_config_create(&cfg), RL_OK);
    assert_int_equal(
        rl_dlp_config_set_builtin(cfg, RL_DLP_EMAIL, true, RL_DLP_SEVERITY_CRITICAL, 0), RL_OK);
    assert_int_equal(rl_dlp_engine_create(cfg, &e), RL_OK);
    rl_dlp_findings_init(&f, 16);
    assert_int_equal(rl_dlp_scan(e, RL_DLP_SCOPE_REQUEST, TEXT, 21, NULL, &f), RL_OK);
    assert_int_equal(f.len, 1);
    assert_int_equal(f.items[0].severity, RL_DLP_SEVERITY_CRITICAL);
    assert_int_equal(f.items[0].action, RL_DLP_ACTION_REDACT);
    assert_int_equal(rl_dlp_verdict(&f), RL_DLP_WARNED); /* critical, but redacted */
    rl_dlp_findings_free(&f);
    rl_dlp_engine_release(e);
    rl_dlp_config_destroy(cfg);
    rl_dlp_config_destroy(NULL);
}

static void custom_rules(void **state)
{
    (void)state;
    rl_dlp_config_t *cfg;
    assert_int_equal(rl_dlp_config_create(&cfg), RL_OK);
    rl_dlp_rule_t r = {"0191c9a4-7b1e-7c3a-9f1e-2b6c8d4e5f64",
                       "project codenames",
                       "(?i)\\bproject[ -](?:falcon|osprey)\\b",
                       RL_DLP_SEVERITY_HIGH,
                       RL_DLP_ACTION_BLOCK,
                       RL_DLP_SCOPE_REQUEST,
                       true};
    assert_int_equal(rl_dlp_config_add_rule(cfg, &r), RL_OK);
    assert_int_equal(rl_dlp_config_add_rule(cfg, &r), RL_ERR_CONFLICT);
    rl_dlp_rule_t emp = {"emp",
                         "employee ids",
                         "EMP-\\d{6}",
                         RL_DLP_SEVERITY_LOW,
                         RL_DLP_ACTION_REDACT,
                         RL_DLP_SCOPE_BOTH,
                         true};
    assert_int_equal(rl_dlp_config_add_rule(cfg, &emp), RL_OK);
    rl_dlp_rule_t off = {"off",
                         "disabled",
                         "secret sauce",
                         RL_DLP_SEVERITY_LOW,
                         RL_DLP_ACTION_WARN,
                         RL_DLP_SCOPE_BOTH,
                         false};
    assert_int_equal(rl_dlp_config_add_rule(cfg, &off), RL_OK);
    /* rejected rules leave the configuration as it was */
    rl_dlp_rule_t bad = emp;
    bad.id = "bad";
    bad.pattern = "EMP-(\\d{6}";
    assert_int_equal(rl_dlp_config_add_rule(cfg, &bad), RL_ERR_INVALID);
    assert_non_null(strstr(rl_error_last(), "bad"));
    assert_non_null(strstr(rl_error_last(), "offset 10"));
    bad.pattern = "x*";
    assert_int_equal(rl_dlp_config_add_rule(cfg, &bad), RL_ERR_INVALID);
    assert_non_null(strstr(rl_error_last(), "empty"));
    bad.pattern = "";
    assert_int_equal(rl_dlp_config_add_rule(cfg, &bad), RL_ERR_INVALID);
    bad.pattern = "abc";
    bad.id = "EMAIL";
    assert_int_equal(rl_dlp_config_add_rule(cfg, &bad), RL_ERR_INVALID);
    bad.id = "has space";
    assert_int_equal(rl_dlp_config_add_rule(cfg, &bad), RL_ERR_INVALID);
    bad.id = "ok";
    bad.action = 0;
    assert_int_equal(rl_dlp_config_add_rule(cfg, &bad), RL_ERR_INVALID);
    bad.action = RL_DLP_ACTION_WARN;
    bad.name = "";
    assert_int_equal(rl_dlp_config_add_rule(cfg, &bad), RL_ERR_INVALID);

    rl_dlp_engine_t *e;
    assert_int_equal(rl_dlp_engine_create(cfg, &e), RL_OK);
    rl_dlp_config_destroy(cfg);
    const char *text = "Project Falcon ships with EMP-123456 and the secret sauce.";
    rl_dlp_findings_t f;
    rl_dlp_findings_init(&f, 16);
    assert_int_equal(rl_dlp_scan(e, RL_DLP_SCOPE_REQUEST, text, strlen(text), NULL, &f), RL_OK);
    assert_int_equal(f.len, 2);
    assert_string_equal(f.items[0].detector, r.id);
    assert_int_equal(f.items[0].builtin, -1);
    assert_int_equal(f.items[0].start, 0);
    assert_int_equal(f.items[0].end, 14);
    assert_int_equal(f.items[0].action, RL_DLP_ACTION_BLOCK);
    assert_string_equal(f.items[1].detector, "emp");
    assert_int_equal(rl_dlp_verdict(&f), RL_DLP_BLOCKED);
    /* request-only rule is not applied to a response */
    assert_int_equal(rl_dlp_scan(e, RL_DLP_SCOPE_RESPONSE, text, strlen(text), NULL, &f), RL_OK);
    assert_int_equal(f.len, 1);
    assert_string_equal(f.items[0].detector, "emp");
    assert_int_equal(rl_dlp_verdict(&f), RL_DLP_WARNED);
    assert_int_equal(rl_dlp_scan(e, RL_DLP_SCOPE_BOTH, text, strlen(text), NULL, &f),
                     RL_ERR_INVALID);
    /* UTF-8 patterns and text */
    rl_dlp_findings_free(&f);
    rl_dlp_engine_release(e);
}

static void validate_pattern(void **state)
{
    (void)state;
    char err[200];
    assert_int_equal(rl_dlp_validate_pattern("\\bACME-\\d{4}\\b", err, sizeof err), RL_OK);
    assert_string_equal(err, "");
    assert_int_equal(rl_dlp_validate_pattern("(?i)caf\xc3\xa9 \\p{Lu}+", err, sizeof err), RL_OK);
    assert_int_equal(rl_dlp_validate_pattern("ab(c", err, sizeof err), RL_ERR_INVALID);
    assert_string_equal(err, "pattern error at offset 4: missing closing parenthesis");
    assert_int_equal(rl_dlp_validate_pattern("a{2,1}", err, sizeof err), RL_ERR_INVALID);
    assert_non_null(strstr(err, "offset 5"));
    assert_int_equal(rl_dlp_validate_pattern("", err, sizeof err), RL_ERR_INVALID);
    assert_string_equal(err, "pattern is empty");
    assert_int_equal(rl_dlp_validate_pattern("(a|)", err, sizeof err), RL_ERR_INVALID);
    assert_string_equal(err, "pattern can match an empty string");
    assert_int_equal(rl_dlp_validate_pattern("(?=x)", err, sizeof err), RL_ERR_INVALID);
    assert_int_equal(rl_dlp_validate_pattern("(?<=a{100})b", err, sizeof err), RL_ERR_INVALID);
    assert_non_null(strstr(err, "lookbehind"));
    assert_int_equal(rl_dlp_validate_pattern("\\C", err, sizeof err), RL_ERR_INVALID);
    char big[RL_DLP_PATTERN_MAX + 2];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(rl_dlp_validate_pattern(big, err, sizeof err), RL_ERR_TOO_LARGE);
    assert_int_equal(rl_dlp_validate_pattern("ab(c", NULL, 0), RL_ERR_INVALID);
    char tiny[8];
    assert_int_equal(rl_dlp_validate_pattern("ab(c", tiny, sizeof tiny), RL_ERR_INVALID);
    assert_int_equal(strlen(tiny), sizeof tiny - 1);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* (a+)+$ on a long run of a's that ends wrong is exponential: the match
 * limit stops it in milliseconds with RL_ERR_TIMEOUT, other rules still run */
static void catastrophic_pattern_is_stopped(void **state)
{
    (void)state;
    rl_dlp_rule_t r = {"redos",
                       "catastrophic",
                       "(a+)+$",
                       RL_DLP_SEVERITY_LOW,
                       RL_DLP_ACTION_WARN,
                       RL_DLP_SCOPE_BOTH,
                       true};
    rl_dlp_engine_t *e = engine_with_rule(&r);
    size_t n = 100000;
    char *text = malloc(n + 64);
    assert_non_null(text);
    size_t at = (size_t)snprintf(text, n + 64, "mail ana@acme-corp.io ");
    memset(text + at, 'a', n);
    snprintf(text + at + n, 64 - at, "!");
    rl_dlp_findings_t f;
    rl_dlp_findings_init(&f, 16);
    double t0 = now_s();
    rl_status_t st = rl_dlp_scan(e, RL_DLP_SCOPE_REQUEST, text, strlen(text), NULL, &f);
    double took = now_s() - t0;
    assert_int_equal(st, RL_ERR_TIMEOUT);
    assert_non_null(strstr(rl_error_last(), "redos"));
    assert_non_null(strstr(rl_error_last(), "match limit"));
    assert_true(took < 1.0);
    assert_int_equal(f.len, 1);
    assert_string_equal(f.items[0].detector, "EMAIL");
    /* the same in a stream: an error, and the stream stays usable */
    rl_dlp_stream_t *s;
    assert_int_equal(rl_dlp_stream_create(e, RL_DLP_SCOPE_RESPONSE, &s), RL_OK);
    rl_dlp_findings_reset(&f);
    assert_int_equal(rl_dlp_stream_feed(s, text, strlen(text), NULL, &f), RL_ERR_TIMEOUT);
    assert_int_equal(rl_dlp_stream_finish(s, NULL, &f), RL_OK);
    rl_dlp_stream_destroy(s);
    rl_dlp_findings_free(&f);
    free(text);
    rl_dlp_engine_release(e);
}

/* ---- verdict and bounds ----------------------------------------------------------- */

static void verdict_rule(void **state)
{
    (void)state;
    struct {
        rl_dlp_severity_t s;
        rl_dlp_action_t a;
        rl_dlp_verdict_t v;
    } cases[] = {
        {RL_DLP_SEVERITY_LOW, RL_DLP_ACTION_WARN, RL_DLP_WARNED},
        {RL_DLP_SEVERITY_HIGH, RL_DLP_ACTION_REDACT, RL_DLP_WARNED},
        {RL_DLP_SEVERITY_CRITICAL, RL_DLP_ACTION_REDACT, RL_DLP_WARNED},
        {RL_DLP_SEVERITY_CRITICAL, RL_DLP_ACTION_WARN, RL_DLP_BLOCKED},
        {RL_DLP_SEVERITY_CRITICAL, RL_DLP_ACTION_BLOCK, RL_DLP_BLOCKED},
        {RL_DLP_SEVERITY_LOW, RL_DLP_ACTION_BLOCK, RL_DLP_BLOCKED},
    };
    rl_dlp_findings_t f;
    rl_dlp_findings_init(&f, 4);
    assert_int_equal(rl_dlp_verdict(&f), RL_DLP_CLEAN);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rl_dlp_finding_t x = {"X", -1, cases[i].s, cases[i].a, 0, 1};
        assert_int_equal(rl_dlp_finding_verdict(&x), cases[i].v);
        f.len = 0;
        f.items = &x;
        f.cap = 1;
        f.len = 1;
        assert_int_equal(rl_dlp_verdict(&f), cases[i].v);
    }
    f.items = NULL;
    f.len = f.cap = 0;
    /* dropped findings still count */
    rl_dlp_engine_t *e = default_engine();
    const char *text = "a@acme-corp.io b@acme-corp.io c@acme-corp.io "
                       "AKIA"
                       "Q7ZJ4XK2M9TBL3WP";
    rl_dlp_findings_init(&f, 2);
    assert_int_equal(rl_dlp_scan(e, RL_DLP_SCOPE_REQUEST, text, strlen(text), NULL, &f), RL_OK);
    assert_int_equal(f.len, 2);
    assert_int_equal(f.dropped, 2);
    assert_int_equal(f.dropped_verdict, RL_DLP_BLOCKED);
    assert_int_equal(rl_dlp_verdict(&f), RL_DLP_BLOCKED);
    rl_buf_t out;
    rl_buf_init(&out, 4096);
    assert_int_equal(rl_dlp_redact(text, strlen(text), 0, &f, &out), RL_ERR_TOO_LARGE);
    assert_int_equal(out.len, 0);
    rl_buf_free(&out);
    rl_dlp_findings_free(&f);
    rl_dlp_engine_release(e);
}

/* ---- redaction -------------------------------------------------------------------- */

static void redaction_exact(void **state)
{
    (void)state;
    /* overlaps the e-mail address: merged into one marker */
    rl_dlp_rule_t r = {"acme",
                       "acme domain",
                       "acme-corp\\.io/\\w+",
                       RL_DLP_SEVERITY_LOW,
                       RL_DLP_ACTION_REDACT,
                       RL_DLP_SCOPE_BOTH,
                       true};
    rl_dlp_engine_t *e = engine_with_rule(&r);
    const char *text = "Hi, I'm ana@acme-corp.io/team, card 4539-5787-6362-1486, "
                       "ssn 536-22-1234, key "
                       "AKIA"
                       "Q7ZJ4XK2M9TBL3WP, host 10.1.2.3. Merci é!";
    rl_dlp_findings_t f;
    rl_dlp_findings_init(&f, 32);
    assert_int_equal(rl_dlp_scan(e, RL_DLP_SCOPE_REQUEST, text, strlen(text), NULL, &f), RL_OK);
    rl_buf_t out;
    rl_buf_init(&out, 4096);
    assert_int_equal(rl_buf_append_str(&out, ">"), RL_OK);
    assert_int_equal(rl_dlp_redact(text, strlen(text), 0, &f, &out), RL_OK);
    assert_string_equal(out.data, ">Hi, I'm [REDACTED:EMAIL], card [REDACTED:CREDIT_CARD], "
                                  "ssn [REDACTED:US_SSN], key "
                                  "AKIA"
                                  "Q7ZJ4XK2M9TBL3WP, host "
                                  "10.1.2.3. Merci é!");
    assert_int_equal(rl_dlp_verdict(&f), RL_DLP_BLOCKED); /* the key blocks, not redacted */
    /* every finding, whatever its action: the blocking key too (a trace's copy) */
    rl_buf_reset(&out);
    assert_int_equal(rl_dlp_redact_every(text, strlen(text), 0, &f, &out), RL_OK);
    assert_non_null(strstr(out.data, "card [REDACTED:CREDIT_CARD], ssn [REDACTED:US_SSN], key "
                                     "[REDACTED:AWS_ACCESS_KEY], host"));
    /* a bound too small: error and out as it was */
    rl_buf_t small;
    rl_buf_init(&small, 40);
    assert_int_equal(rl_buf_append_str(&small, "keep"), RL_OK);
    assert_int_equal(rl_dlp_redact(text, strlen(text), 0, &f, &small), RL_ERR_TOO_LARGE);
    assert_string_equal(small.data, "keep");
    /* a slice at a base offset: findings are clipped to it */
    rl_buf_reset(&out);
    size_t base = 12; /* inside the merged e-mail span */
    assert_int_equal(rl_dlp_redact(text + base, 20, base, &f, &out), RL_OK);
    assert_string_equal(out.data, "[REDACTED:acme], c"); /* clipped: acme is now first */
    rl_buf_free(&small);
    rl_buf_free(&out);
    rl_dlp_findings_free(&f);
    rl_dlp_engine_release(e);
}

/* ---- streaming -------------------------------------------------------------------- */

static char *private_key_text(void)
{
    unsigned char raw[300];
    for (size_t i = 0; i < sizeof raw; i++)
        raw[i] = (unsigned char)(i * 37 + 11);
    char b64[RL_BASE64_ENC_SIZE(sizeof raw)];
    assert_int_equal(rl_base64_encode(raw, sizeof raw, b64, sizeof b64), RL_OK);
    char *out = malloc(1024);
    snprintf(out, 1024,
             "-----BEGIN "
             "RSA PRIVATE KEY-----\n%.64s\n%.64s\n%s\n-----END RSA PRIVATE KEY-----",
             b64, b64 + 64, b64 + 128);
    return out;
}

typedef struct {
    rl_dlp_findings_t f;
    rl_buf_t released;
} stream_result_t;

/* Feeds text cut at the given points, releasing after every feed; checks
 * that findings are reported before their bytes are released. */
static void run_stream(rl_dlp_engine_t *e, rl_dlp_scratch_t *sc, const char *text, size_t len,
                       const size_t *cuts, size_t ncuts, stream_result_t *res)
{
    rl_dlp_stream_t *s;
    assert_int_equal(rl_dlp_stream_create(e, RL_DLP_SCOPE_RESPONSE, &s), RL_OK);
    size_t at = 0, last_safe = 0;
    for (size_t c = 0; c <= ncuts; c++) {
        size_t to = c < ncuts ? cuts[c] : len;
        size_t before = res->f.len;
        if (c < ncuts || to > at) {
            assert_int_equal(rl_dlp_stream_feed(s, text + at, to - at, sc, &res->f), RL_OK);
        }
        for (size_t i = before; i < res->f.len; i++)
            assert_true(res->f.items[i].start >= rl_dlp_stream_released(s));
        assert_true(rl_dlp_stream_safe(s) >= last_safe);
        assert_true(rl_dlp_stream_safe(s) <= rl_dlp_stream_total(s));
        last_safe = rl_dlp_stream_safe(s);
        assert_int_equal(rl_dlp_stream_release(s, &res->released), RL_OK);
        at = to;
    }
    size_t before = res->f.len;
    assert_int_equal(rl_dlp_stream_finish(s, sc, &res->f), RL_OK);
    for (size_t i = before; i < res->f.len; i++)
        assert_true(res->f.items[i].start >= rl_dlp_stream_released(s));
    assert_int_equal(rl_dlp_stream_safe(s), len);
    assert_int_equal(rl_dlp_stream_release(s, &res->released), RL_OK);
    assert_int_equal(rl_dlp_stream_released(s), len);
    assert_int_equal(rl_dlp_stream_feed(s, "x", 1, sc, &res->f), RL_ERR_CONFLICT);
    rl_dlp_stream_destroy(s);
}

static int finding_cmp(const void *x, const void *y)
{
    const rl_dlp_finding_t *a = x, *b = y;
    if (a->start != b->start)
        return a->start < b->start ? -1 : 1;
    if (a->end != b->end)
        return a->end > b->end ? -1 : 1;
    return strcmp(a->detector, b->detector);
}

/* The stream's findings (sorted) and released bytes equal the one-shot
 * scan's findings and redaction. */
static void check_stream_equals_scan(rl_dlp_engine_t *e, rl_dlp_scratch_t *sc, const char *text,
                                     size_t len, const rl_dlp_findings_t *want,
                                     const char *want_redacted, const size_t *cuts, size_t ncuts)
{
    stream_result_t res;
    rl_dlp_findings_init(&res.f, 256);
    rl_buf_init(&res.released, 1 << 20);
    run_stream(e, sc, text, len, cuts, ncuts, &res);
    if (res.f.len > 1)
        qsort(res.f.items, res.f.len, sizeof *res.f.items, finding_cmp);
    if (res.f.len != want->len) {
        for (size_t i = 0; i < res.f.len; i++)
            printf("  got %s [%zu,%zu)\n", res.f.items[i].detector, res.f.items[i].start,
                   res.f.items[i].end);
        fail_msg("cut at %zu (of %zu cuts): %zu findings, want %zu", ncuts ? cuts[0] : 0, ncuts,
                 res.f.len, want->len);
    }
    for (size_t i = 0; i < want->len; i++) {
        const rl_dlp_finding_t *a = &res.f.items[i], *b = &want->items[i];
        if (strcmp(a->detector, b->detector) != 0 || a->start != b->start || a->end != b->end)
            fail_msg("cut at %zu: finding %zu is %s [%zu,%zu), want %s [%zu,%zu)",
                     ncuts ? cuts[0] : 0, i, a->detector, a->start, a->end, b->detector, b->start,
                     b->end);
    }
    assert_int_equal(res.released.len, strlen(want_redacted));
    assert_memory_equal(res.released.data, want_redacted, res.released.len);
    rl_dlp_findings_free(&res.f);
    rl_buf_free(&res.released);
}

static void scan_and_redact(rl_dlp_engine_t *e, const char *text, size_t len,
                            rl_dlp_findings_t *want, rl_buf_t *redacted)
{
    if (want->len > 1)
        qsort(want->items, want->len, sizeof *want->items, finding_cmp);
    assert_int_equal(rl_dlp_scan(e, RL_DLP_SCOPE_RESPONSE, text, len, NULL, want), RL_OK);
    qsort(want->items, want->len, sizeof *want->items, finding_cmp);
    assert_int_equal(rl_dlp_redact(text, len, 0, want, redacted), RL_OK);
}

/* Each secret alone, split into two chunks at every byte: found once, at
 * the same absolute offsets as the one-shot scan. */
static void stream_split_every_byte(void **state)
{
    (void)state;
    rl_dlp_engine_t *e = default_engine();
    rl_dlp_scratch_t *sc;
    assert_int_equal(rl_dlp_scratch_create(&sc), RL_OK);
    char jwtbuf[1024];
    make_jwt("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", "{\"sub\":\"42\",\"role\":\"admin\"}",
             "Qm9ndXNTaWduYXR1cmVGb3JUZXN0c19fX2FiY2RlZg", jwtbuf, sizeof jwtbuf);
    char *pk = private_key_text();
    const char *secrets[][2] = {
        {"EMAIL", "ana.lopez@acme-corp.io"},
        {"PHONE", "+1 (415) 867-2671"},
        {"US_SSN", "536-22-1234"},
        {"CREDIT_CARD", "4539 5787 6362 1486"},
        {"IBAN", "GB82 WEST 1234 5698 7654 32"},
        {"IP_ADDRESS", "2a00:1450:4001:81c::200e"},
        {"AWS_ACCESS_KEY", "AKIA"
                           "Q7ZJ4XK2M9TBL3WP"},
        {"GITHUB_TOKEN", "ghp_"
                         "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"},
        {"SLACK_TOKEN", "xoxb-"
                        "482913374521-1837462938475-Zq8Wm2Kp9Rt4Lx7Nc3Vb6Hj1"},
        {"STRIPE_KEY", "rk_"
                       "live_"
                       "9Fq2Lm7Rx4Tz8Wb3Nc6Vh1Jk5P"},
        {"OPENAI_KEY",
         "sk-"
         "proj-Ab3De5Fg7Hj9Kl1Mn3Pq5Rs7Tu9Vw1Xy3Za5Bc7De9T3BlbkFJFg1Hj3Kl5Mn7Pq9Rs1Tu3Vw5Xy7Za9"},
        {"GOOGLE_API_KEY", "AIza"
                           "SyQ7xL2mR9tV4bN8cW1kP5hJ3fG6dS0aE9y"},
        {"JWT", jwtbuf},
        {"PRIVATE_KEY", pk},
    };
    char text[2048];
    for (size_t k = 0; k < sizeof secrets / sizeof secrets[0]; k++) {
        int pre = snprintf(text, sizeof text, "{\"delta\":\"Here it is: ");
        snprintf(text + pre, sizeof text - (size_t)pre, "%s and more text.\"}", secrets[k][1]);
        size_t len = strlen(text), slen = strlen(secrets[k][1]);
        rl_dlp_findings_t want;
        rl_dlp_findings_init(&want, 64);
        rl_buf_t red;
        rl_buf_init(&red, 1 << 16);
        scan_and_redact(e, text, len, &want, &red);
        size_t hits = 0;
        for (size_t i = 0; i < want.len; i++)
            if (strcmp(want.items[i].detector, secrets[k][0]) == 0) {
                hits++;
                assert_int_equal(want.items[i].start, (size_t)pre);
                assert_int_equal(want.items[i].end, (size_t)pre + slen);
            }
        if (hits != 1)
            fail_msg("%s: %zu findings in one-shot scan", secrets[k][0], hits);
        for (size_t cut = 0; cut <= len; cut++)
            check_stream_equals_scan(e, sc, text, len, &want, red.data, &cut, 1);
        rl_dlp_findings_free(&want);
        rl_buf_free(&red);
    }
    free(pk);
    rl_dlp_scratch_destroy(sc);
    rl_dlp_engine_release(e);
}

/* A document with many detectors, fed byte by byte, in random chunks, and
 * cut at every byte into two: the same findings and redaction as one scan. */
static void stream_mixed_document(void **state)
{
    (void)state;
    rl_dlp_engine_t *e = default_engine();
    rl_dlp_scratch_t *sc;
    assert_int_equal(rl_dlp_scratch_create(&sc), RL_OK);
    char *pk = private_key_text();
    char text[4096];
    snprintf(text, sizeof text,
             "Customer ana.lopez@acme-corp.io (+44 20 7946 1234) paid with 4539 5787 6362 1486 "
             "from 10.20.30.40; ssn 536-22-1234; IBAN DE89 3704 0044 0532 0130 00.\n"
             "aws_access_key_id = "
             "AKIA"
             "Q7ZJ4XK2M9TBL3WP\naws_secret_access_key = "
             "kX9/2mQpL7vR4tYzW1nB8cD3fG6hJ0sA5eU+iO2q\nDB_PASSWORD=Xq9#Lm2!Rt7v\n"
             "Authorization: Bearer Zq8Wm2Kp9Rt4Lx7Nc3Vb6Hj1Ty5Ui8Op\n%s\n"
             "```\ndef load(path):\n    return open(path).read()\n```\nThanks, bye ✓",
             pk);
    size_t len = strlen(text);
    rl_dlp_findings_t want;
    rl_dlp_findings_init(&want, 64);
    rl_buf_t red;
    rl_buf_init(&red, 1 << 16);
    scan_and_redact(e, text, len, &want, &red);
    assert_int_equal(want.len, 12); /* 11 detectors, GENERIC_SECRET twice */
    for (size_t cut = 0; cut <= len; cut++)
        check_stream_equals_scan(e, sc, text, len, &want, red.data, &cut, 1);
    size_t *cuts = malloc(len * sizeof *cuts);
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    check_stream_equals_scan(e, sc, text, len, &want, red.data, cuts, len);
    srand(7);
    for (int round = 0; round < 50; round++) {
        size_t n = 0, at = 0;
        while (at < len) {
            at += 1 + (size_t)rand() % 97;
            if (at > len)
                at = len;
            cuts[n++] = at;
        }
        check_stream_equals_scan(e, sc, text, len, &want, red.data, cuts, n);
    }
    free(cuts);
    free(pk);
    rl_dlp_findings_free(&want);
    rl_buf_free(&red);
    rl_dlp_scratch_destroy(sc);
    rl_dlp_engine_release(e);
}

/* Plain prose is released almost as it arrives: the stream holds back only
 * what may still become a match, and its buffer stays small. */
static void stream_holds_back_little(void **state)
{
    (void)state;
    rl_dlp_engine_t *e = default_engine();
    rl_dlp_stream_t *s;
    assert_int_equal(rl_dlp_stream_create(e, RL_DLP_SCOPE_RESPONSE, &s), RL_OK);
    rl_dlp_findings_t f;
    rl_dlp_findings_init(&f, 16);
    const char *chunk = "The quarterly numbers look good overall; revenue grew in every region. ";
    size_t worst = 0;
    for (int i = 0; i < 2000; i++) {
        assert_int_equal(rl_dlp_stream_feed(s, chunk, strlen(chunk), NULL, &f), RL_OK);
        size_t held = rl_dlp_stream_total(s) - rl_dlp_stream_safe(s);
        if (held > worst)
            worst = held;
        assert_int_equal(rl_dlp_stream_release(s, NULL), RL_OK);
    }
    assert_int_equal(f.len, 0);
    printf("stream: at most %zu bytes held back over %zu bytes of prose\n", worst,
           rl_dlp_stream_total(s));
    assert_true(worst < 64);
    rl_dlp_findings_free(&f);
    rl_dlp_stream_destroy(s);
    rl_dlp_engine_release(e);
}

/* Built-in patterns run on PCRE2's default JIT stack: the longest matches
 * (a 7 KB private key block, a 4 KB JWT payload) must still be found. */
static void long_matches_fit_default_stack(void **state)
{
    (void)state;
    rl_dlp_engine_t *e = default_engine();
    size_t body = 7000;
    size_t cap = body + 512;
    char *text = malloc(cap);
    assert_non_null(text);
    int n = snprintf(text, cap, "key:\n-----BEGIN PRIVATE KEY-----\n");
    for (size_t i = 0; i < body; i++)
        text[n + (int)i] =
            (i % 65 == 64) ? '\n' : "QWERTYuiop1234567890asdfGHJKLzxcvbnm+/"[(i * 7) % 38];
    snprintf(text + n + body, cap - (size_t)n - body, "\n-----END PRIVATE KEY-----\nthanks");
    size_t a = 0, b = 0;
    assert_int_equal(count(e, text, "PRIVATE_KEY", &a, &b), 1);
    assert_int_equal(a, 5);
    assert_int_equal(b, strlen(text) - strlen("\nthanks"));
    free(text);
    char payload[4000], jwtbuf[6000];
    memset(payload, 0, sizeof payload);
    size_t at = (size_t)snprintf(payload, sizeof payload, "{\"claims\":\"");
    for (; at < 2900; at++) /* ~3.9 KB of base64url */
        payload[at] = (char)('a' + at % 26);
    snprintf(payload + at, sizeof payload - at, "\"}");
    make_jwt("{\"alg\":\"HS256\"}", payload, "Qm9ndXNTaWduYXR1cmVGb3JUZXN0c19fX2FiY2RlZg", jwtbuf,
             sizeof jwtbuf);
    expect_one(e, jwtbuf, "JWT", jwtbuf);
    rl_dlp_engine_release(e);
}

/* A custom rule in UTF-8 mode, streamed with the text cut at every byte
 * (inside multi-byte characters too). */
static void stream_custom_utf8_rule(void **state)
{
    (void)state;
    rl_dlp_rule_t r = {"code-name",
                       "code names",
                       "(?i)\\bprojet[ -]caf\\x{e9}-\\d{2,}\\b",
                       RL_DLP_SEVERITY_MEDIUM,
                       RL_DLP_ACTION_REDACT,
                       RL_DLP_SCOPE_RESPONSE,
                       true};
    rl_dlp_engine_t *e = engine_with_rule(&r);
    rl_dlp_scratch_t *sc;
    assert_int_equal(rl_dlp_scratch_create(&sc), RL_OK);
    const char *text = "Réunion 🚀: le PROJET CAFÉ-2024 démarre; projet-café-7 non.";
    size_t len = strlen(text);
    rl_dlp_findings_t want;
    rl_dlp_findings_init(&want, 16);
    rl_buf_t red;
    rl_buf_init(&red, 4096);
    scan_and_redact(e, text, len, &want, &red);
    assert_int_equal(want.len, 1);
    assert_string_equal(red.data, "Réunion 🚀: le [REDACTED:code-name] démarre; projet-café-7 non.");
    for (size_t cut = 0; cut <= len; cut++)
        check_stream_equals_scan(e, sc, text, len, &want, red.data, &cut, 1);
    rl_dlp_findings_free(&want);
    rl_buf_free(&red);
    rl_dlp_scratch_destroy(sc);
    rl_dlp_engine_release(e);
}

/* A candidate that keeps growing without ever matching is held at most
 * RL_DLP_STREAM_HOLD_MAX bytes, then decided on what has arrived. */
static void stream_hold_is_bounded(void **state)
{
    (void)state;
    rl_dlp_rule_t r = {
        "zz", "z-quoted", "Z[a-y]+Z", RL_DLP_SEVERITY_LOW, RL_DLP_ACTION_WARN, RL_DLP_SCOPE_BOTH,
        true};
    rl_dlp_engine_t *e = engine_with_rule(&r);
    rl_dlp_stream_t *s;
    assert_int_equal(rl_dlp_stream_create(e, RL_DLP_SCOPE_RESPONSE, &s), RL_OK);
    rl_dlp_findings_t f;
    rl_dlp_findings_init(&f, 16);
    char chunk[512];
    memset(chunk, 'a', sizeof chunk);
    assert_int_equal(rl_dlp_stream_feed(s, "Z", 1, NULL, &f), RL_OK);
    size_t worst = 0;
    for (int i = 0; i < 100; i++) {
        assert_int_equal(rl_dlp_stream_feed(s, chunk, sizeof chunk, NULL, &f), RL_OK);
        size_t held = rl_dlp_stream_total(s) - rl_dlp_stream_safe(s);
        if (held > worst)
            worst = held;
        assert_int_equal(rl_dlp_stream_release(s, NULL), RL_OK);
    }
    assert_true(worst <= RL_DLP_STREAM_HOLD_MAX + sizeof chunk);
    assert_true(rl_dlp_stream_safe(s) > 0);
    assert_int_equal(rl_dlp_stream_finish(s, NULL, &f), RL_OK);
    assert_int_equal(f.len, 0);
    rl_dlp_findings_free(&f);
    rl_dlp_stream_destroy(s);
    rl_dlp_engine_release(e);
}

/* An empty response body: the stream is finished without a single feed. */
static void stream_finished_unfed(void **state)
{
    (void)state;
    rl_dlp_engine_t *e = default_engine();
    rl_dlp_stream_t *s;
    assert_int_equal(rl_dlp_stream_create(e, RL_DLP_SCOPE_RESPONSE, &s), RL_OK);
    rl_dlp_findings_t f;
    rl_dlp_findings_init(&f, 4);
    assert_int_equal(rl_dlp_stream_finish(s, NULL, &f), RL_OK);
    assert_int_equal(f.len, 0);
    assert_int_equal(rl_dlp_stream_total(s), 0);
    rl_dlp_findings_free(&f);
    rl_dlp_stream_destroy(s);
    rl_dlp_engine_release(e);
}

/* Every SOURCE_CODE form on its own, so that each pattern's literal
 * prefilter (rl_dlp.c: stems and lead) is proven: at the very start of the
 * text, after prose, and with the indentation or type before its literal. */
static void source_code_each_form(void **state)
{
    (void)state;
    rl_dlp_engine_t *e = default_engine();
    static const char *const forms[] = {
        "#include <stdio.h>",
        "def load(path):",
        "class Loader:\n",
        "public static int count(String s) {",
        "function parse(text) {",
        "const parse = (text) =>",
        "func (s *Server) Handle(w http.ResponseWriter) {",
        "fn checksum(data: &[u8]) -> u32 {",
        "interface Shape extends Base {",
        "import numpy as np",
        "            from collections import defaultdict",
        "int\t\t\tmain(void) {",
        "#!/usr/bin/env python3",
    };
    for (size_t i = 0; i < sizeof forms / sizeof *forms; i++) {
        char text[256];
        size_t a = 0, b = 0;
        if (count(e, forms[i], "SOURCE_CODE", &a, &b) != 1)
            fail_msg("SOURCE_CODE not found alone in \"%s\"", forms[i]);
        snprintf(text, sizeof text, "Here is what I wrote yesterday:\n%s", forms[i]);
        if (count(e, text, "SOURCE_CODE", &a, &b) != 1)
            fail_msg("SOURCE_CODE not found after prose in \"%s\"", text);
        assert_true(a >= strlen("Here is what I wrote yesterday:\n"));
        /* past STEM_PROSE_MAX the prose-word prefilters are off: same answer */
        char longer[2048];
        size_t n = 0;
        while (n < 1200)
            n += (size_t)snprintf(longer + n, sizeof longer - n, "%s", "notes on the quarter. ");
        snprintf(longer + n, sizeof longer - n, "\n%s", forms[i]);
        if (count(e, longer, "SOURCE_CODE", &a, &b) != 1 || a < n)
            fail_msg("SOURCE_CODE not found after 1200 bytes of prose in \"%s\"", forms[i]);
    }
    /* the literals alone in prose are not code */
    expect_none(e, "Let me define the class of functions we import from the main package.",
                "SOURCE_CODE");
    rl_dlp_engine_release(e);
}

/* ---- threads ------------------------------------------------------------------------ */

typedef struct {
    const rl_dlp_engine_t *e;
    const char *text;
    size_t len;
    const rl_dlp_findings_t *want;
    bool own_scratch;
    int errors;
} worker_t;

static void *worker(void *arg)
{
    worker_t *w = arg;
    rl_dlp_scratch_t *sc = NULL;
    if (w->own_scratch && rl_dlp_scratch_create(&sc) != RL_OK)
        w->errors++;
    rl_dlp_findings_t f;
    rl_dlp_findings_init(&f, 256);
    for (int i = 0; i < 200; i++) {
        if (rl_dlp_scan(w->e, RL_DLP_SCOPE_REQUEST, w->text, w->len, sc, &f) != RL_OK ||
            f.len != w->want->len) {
            w->errors++;
            continue;
        }
        for (size_t k = 0; k < f.len; k++)
            if (f.items[k].start != w->want->items[k].start ||
                f.items[k].end != w->want->items[k].end ||
                strcmp(f.items[k].detector, w->want->items[k].detector) != 0)
                w->errors++;
    }
    rl_dlp_findings_free(&f);
    rl_dlp_scratch_destroy(sc);
    return NULL;
}

static void four_threads_one_engine(void **state)
{
    (void)state;
    rl_dlp_engine_t *e = default_engine();
    char text[2048];
    snprintf(text, sizeof text,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"mail ana@acme-corp.io, call "
             "(415) 867-2671, card 4539 5787 6362 1486, key "
             "AKIA"
             "Q7ZJ4XK2M9TBL3WP, token "
             "ghp_"
             "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5, host 10.1.2.3\\n```\\ndef f(x):\\n  "
             "return x\\n```\"}]}");
    rl_dlp_findings_t want;
    rl_dlp_findings_init(&want, 256);
    assert_int_equal(rl_dlp_scan(e, RL_DLP_SCOPE_REQUEST, text, strlen(text), NULL, &want), RL_OK);
    assert_int_equal(want.len, 7);
    pthread_t th[4];
    worker_t w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker_t){e, text, strlen(text), &want, i != 3, 0};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].errors, 0);
    }
    rl_dlp_findings_free(&want);
    /* references: the engine outlives the caller's reference while retained */
    rl_dlp_engine_t *again = rl_dlp_engine_retain(e);
    rl_dlp_engine_release(e);
    assert_true(rl_dlp_engine_rule_count(again) > RL_DLP_BUILTIN_COUNT);
    rl_dlp_engine_release(again);
    rl_dlp_engine_release(NULL);
}

/* Merging keeps dst's bound: what does not fit is dropped with its verdict,
 * and src's own dropped findings carry over. */
static void findings_merge_bounded(void **state)
{
    (void)state;
    rl_dlp_engine_t *e = default_engine();
    const char *text = "a@acme-corp.io b@acme-corp.io AKIA"
                       "Q7ZJ4XK2M9TBL3WP";
    rl_dlp_findings_t src, dst;
    rl_dlp_findings_init(&src, 2); /* the key is dropped: 2 e-mails listed */
    assert_int_equal(rl_dlp_scan(e, RL_DLP_SCOPE_REQUEST, text, strlen(text), NULL, &src), RL_OK);
    assert_int_equal(src.len, 2);
    assert_int_equal(src.dropped, 1);
    rl_dlp_findings_init(&dst, 3);
    assert_int_equal(rl_dlp_findings_merge(&dst, &src), RL_OK);
    assert_int_equal(dst.len, 2);
    assert_int_equal(dst.dropped, 1);
    assert_int_equal(dst.dropped_verdict, RL_DLP_BLOCKED);
    assert_int_equal(rl_dlp_findings_merge(&dst, &src), RL_OK); /* 1 of 2 fits */
    assert_int_equal(dst.len, 3);
    assert_int_equal(dst.dropped, 3);
    assert_string_equal(dst.items[2].detector, "EMAIL");
    assert_int_equal(dst.items[2].start, src.items[0].start);
    rl_dlp_findings_free(&src);
    rl_dlp_findings_free(&dst);
    rl_dlp_engine_release(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(luhn_and_cards),
        cmocka_unit_test(iban),
        cmocka_unit_test(ssn),
        cmocka_unit_test(ip_addresses),
        cmocka_unit_test(prefilters_keep_every_match),
        cmocka_unit_test(jwt),
        cmocka_unit_test(entropy),
        cmocka_unit_test(names),
        cmocka_unit_test(detects_and_spans),
        cmocka_unit_test(placeholders_and_hard_negatives),
        cmocka_unit_test(overrides),
        cmocka_unit_test(custom_rules),
        cmocka_unit_test(validate_pattern),
        cmocka_unit_test(catastrophic_pattern_is_stopped),
        cmocka_unit_test(verdict_rule),
        cmocka_unit_test(findings_merge_bounded),
        cmocka_unit_test(redaction_exact),
        cmocka_unit_test(stream_split_every_byte),
        cmocka_unit_test(stream_mixed_document),
        cmocka_unit_test(stream_holds_back_little),
        cmocka_unit_test(long_matches_fit_default_stack),
        cmocka_unit_test(stream_custom_utf8_rule),
        cmocka_unit_test(stream_hold_is_bounded),
        cmocka_unit_test(stream_finished_unfed),
        cmocka_unit_test(source_code_each_form),
        cmocka_unit_test(four_threads_one_engine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
