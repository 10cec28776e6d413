/* Tests libs/common/rl_crypto.c: known-answer vectors (FIPS 180-2, RFC 4231,
 * the GCM specification, RFC 4648), tamper detection and malformed input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rl_crypto.h"

/* Decodes known-good hex from a test vector into out; returns the length. */
static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0;
    assert_int_equal(rl_hex_decode(hex, strlen(hex), out, cap, &n), RL_OK);
    return n;
}

static void assert_digest(const uint8_t *digest, size_t n, const char *expected_hex)
{
    char hex[RL_HEX_ENC_SIZE(64)];
    assert_int_equal(rl_hex_encode(digest, n, hex, sizeof hex), RL_OK);
    assert_string_equal(hex, expected_hex);
}

static void test_sha256_vectors(void **state)
{
    (void)state;
    uint8_t d[RL_SHA256_LEN];
    assert_int_equal(rl_sha256(NULL, 0, d), RL_OK);
    assert_digest(d, sizeof d, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_int_equal(rl_sha256("abc", 3, d), RL_OK);
    assert_digest(d, sizeof d, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    assert_int_equal(rl_sha256(two_blocks, strlen(two_blocks), d), RL_OK);
    assert_digest(d, sizeof d, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void test_hmac_rfc4231(void **state)
{
    (void)state;
    static const struct {
        const char *key_hex;
        const char *data;
        const char *data_hex;
        const char *mac_hex; /* test case 5 is truncated to 128 bits */
    } cases[] = {
        {"0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "Hi There", NULL,
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
        {"4a656665", "what do ya want for nothing?", NULL,
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", NULL,
         "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
         "dddddddddddddddd",
         "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
        {"0102030405060708090a0b0c0d0e0f10111213141516171819", NULL,
         "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
         "cdcdcdcdcdcdcdcd",
         "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
        {"0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c", "Test With Truncation", NULL,
         "a3b6167473100ee06e0c796c2955552b"},
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaa",
         "Test Using Larger Than Block-Size Key - Hash Key First", NULL,
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaa",
         "This is a test using a larger than block-size key and a larger than block-size data. "
         "The key needs to be hashed before being used by the HMAC algorithm.",
         NULL, "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t key[131], data[64], mac[RL_SHA256_LEN];
        size_t keylen = unhex(cases[i].key_hex, key, sizeof key);
        const void *d = cases[i].data;
        size_t dlen = d ? strlen(cases[i].data) : unhex(cases[i].data_hex, data, sizeof data);
        if (d == NULL)
            d = data;
        assert_int_equal(rl_hmac_sha256(key, keylen, d, dlen, mac), RL_OK);
        assert_digest(mac, strlen(cases[i].mac_hex) / 2, cases[i].mac_hex);
        /* a keyed context gives the same MAC every time it is reused */
        rl_hmac_t *h = NULL;
        assert_int_equal(rl_hmac_new(key, keylen, &h), RL_OK);
        for (int round = 0; round < 3; round++) {
            memset(mac, 0, sizeof mac);
            assert_int_equal(rl_hmac_compute(h, "other message", 13, mac), RL_OK);
            assert_int_equal(rl_hmac_compute(h, d, dlen, mac), RL_OK);
            assert_digest(mac, strlen(cases[i].mac_hex) / 2, cases[i].mac_hex);
        }
        rl_hmac_free(h);
    }
}

static void test_hmac_empty_key_and_data(void **state)
{
    (void)state;
    uint8_t mac[RL_SHA256_LEN];
    assert_int_equal(rl_hmac_sha256(NULL, 0, NULL, 0, mac), RL_OK);
    assert_digest(mac, sizeof mac,
                  "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

static void test_ct_equal(void **state)
{
    (void)state;
    assert_true(rl_ct_equal("abcdef", "abcdef", 6));
    assert_false(rl_ct_equal("abcdef", "abcdeg", 6));
    assert_false(rl_ct_equal("xbcdef", "abcdef", 6));
    assert_true(rl_ct_equal(NULL, NULL, 0));
}

static void test_random_bytes(void **state)
{
    (void)state;
    uint8_t a[32] = {0}, b[32] = {0}, zero[32] = {0};
    assert_int_equal(rl_random_bytes(a, sizeof a), RL_OK);
    assert_int_equal(rl_random_bytes(b, sizeof b), RL_OK);
    assert_memory_not_equal(a, b, sizeof a);
    assert_memory_not_equal(a, zero, sizeof a);
    assert_int_equal(rl_random_bytes(NULL, 0), RL_OK);
}

static const char GCM_KEY[] = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";

/* The GCM specification's test case 16 (256-bit key, 96-bit IV, AAD), laid
 * out as rl_aead_seal output: nonce || ciphertext || tag. */
static void test_aead_open_known_answer(void **state)
{
    (void)state;
    uint8_t key[32], aad[20], sealed[128], expect[64];
    unhex(GCM_KEY, key, sizeof key);
    size_t aadlen = unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2", aad, sizeof aad);
    size_t n = unhex("cafebabefacedbaddecaf888"
                     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
                     "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
                     "76fc6ece0f4e1768cddf8853bb2d551b",
                     sealed, sizeof sealed);
    size_t elen = unhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
                        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
                        expect, sizeof expect);
    uint8_t *plain = NULL;
    size_t plen = 0;
    assert_int_equal(rl_aead_open(key, sealed, n, aad, aadlen, &plain, &plen), RL_OK);
    assert_int_equal(plen, elen);
    assert_memory_equal(plain, expect, elen);
    free(plain);

    /* All-zero key, nonce, empty plaintext: the tag alone. */
    uint8_t zkey[32] = {0};
    n = unhex("000000000000000000000000530f8afbc74536b9a963b4f1c4cb738b", sealed, sizeof sealed);
    assert_int_equal(rl_aead_open(zkey, sealed, n, NULL, 0, &plain, &plen), RL_OK);
    assert_non_null(plain);
    assert_int_equal(plen, 0);
    free(plain);
}

static void test_aead_round_trip(void **state)
{
    (void)state;
    uint8_t key[32];
    unhex(GCM_KEY, key, sizeof key);
    const char *msg = "upstream secret: sk-live-1234567890";
    const char *aad = "tenant=7;upstream=openai";
    uint8_t *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    assert_int_equal(rl_aead_seal(key, msg, strlen(msg), aad, strlen(aad), &a, &alen), RL_OK);
    assert_int_equal(alen, strlen(msg) + RL_AEAD_OVERHEAD);
    assert_int_equal(rl_aead_seal(key, msg, strlen(msg), aad, strlen(aad), &b, &blen), RL_OK);
    /* A fresh nonce each time: the same message never seals alike. */
    assert_memory_not_equal(a, b, RL_AEAD_NONCE_LEN);
    assert_memory_not_equal(a + RL_AEAD_NONCE_LEN, b + RL_AEAD_NONCE_LEN, strlen(msg));

    uint8_t *plain = NULL;
    size_t plen = 0;
    assert_int_equal(rl_aead_open(key, a, alen, aad, strlen(aad), &plain, &plen), RL_OK);
    assert_int_equal(plen, strlen(msg));
    assert_memory_equal(plain, msg, plen);
    free(plain);
    free(a);
    free(b);

    assert_int_equal(rl_aead_seal(key, NULL, 0, NULL, 0, &a, &alen), RL_OK);
    assert_int_equal(alen, RL_AEAD_OVERHEAD);
    assert_int_equal(rl_aead_open(key, a, alen, NULL, 0, &plain, &plen), RL_OK);
    assert_int_equal(plen, 0);
    free(plain);
    free(a);
}

static void test_aead_tampering(void **state)
{
    (void)state;
    uint8_t key[32], other[32];
    unhex(GCM_KEY, key, sizeof key);
    memcpy(other, key, sizeof other);
    other[31] ^= 1;
    const char *msg = "a secret of some length";
    uint8_t *sealed = NULL;
    size_t n = 0;
    assert_int_equal(rl_aead_seal(key, msg, strlen(msg), "aad", 3, &sealed, &n), RL_OK);

    uint8_t *sentinel = (uint8_t *)"untouched";
    uint8_t *plain = sentinel;
    size_t plen = 12345;
    /* A flipped bit anywhere (nonce, ciphertext, tag) is refused. */
    for (size_t i = 0; i < n; i++) {
        for (int bit = 0; bit < 8; bit += 7) {
            sealed[i] ^= (uint8_t)(1u << bit);
            assert_int_equal(rl_aead_open(key, sealed, n, "aad", 3, &plain, &plen), RL_ERR_CRYPTO);
            sealed[i] ^= (uint8_t)(1u << bit);
        }
    }
    assert_int_equal(rl_aead_open(key, sealed, n, "aae", 3, &plain, &plen), RL_ERR_CRYPTO);
    assert_int_equal(rl_aead_open(key, sealed, n, "aad", 2, &plain, &plen), RL_ERR_CRYPTO);
    assert_int_equal(rl_aead_open(key, sealed, n, NULL, 0, &plain, &plen), RL_ERR_CRYPTO);
    assert_int_equal(rl_aead_open(other, sealed, n, "aad", 3, &plain, &plen), RL_ERR_CRYPTO);
    for (size_t cut = 0; cut < n; cut++)
        assert_int_equal(rl_aead_open(key, sealed, cut, "aad", 3, &plain, &plen), RL_ERR_CRYPTO);
    /* Bytes appended after the tag move the tag: refused too. */
    uint8_t longer[128];
    memcpy(longer, sealed, n);
    longer[n] = 0;
    assert_int_equal(rl_aead_open(key, longer, n + 1, "aad", 3, &plain, &plen), RL_ERR_CRYPTO);
    assert_ptr_equal(plain, sentinel);
    assert_int_equal(plen, 12345);

    assert_int_equal(rl_aead_open(key, sealed, n, "aad", 3, &plain, &plen), RL_OK);
    free(plain);
    free(sealed);
}

static void test_aead_too_large(void **state)
{
    (void)state;
    uint8_t key[32] = {0};
    uint8_t *out = NULL;
    size_t n = 0;
    assert_int_equal(rl_aead_seal(key, "", RL_AEAD_MAX_LEN + 1, NULL, 0, &out, &n),
                     RL_ERR_TOO_LARGE);
    assert_int_equal(rl_aead_seal(key, "", 0, "", RL_AEAD_MAX_LEN + 1, &out, &n), RL_ERR_TOO_LARGE);
    assert_null(out);
}

static void test_key_from_hex(void **state)
{
    (void)state;
    uint8_t key[32], expect[32];
    unhex(GCM_KEY, expect, sizeof expect);
    assert_int_equal(rl_key_from_hex(GCM_KEY, key), RL_OK);
    assert_memory_equal(key, expect, 32);
    assert_int_equal(
        rl_key_from_hex("FEFFE9928665731C6D6A8F9467308308FEFFE9928665731C6D6A8F9467308308", key),
        RL_OK);
    assert_memory_equal(key, expect, 32);

    static const char *bad[] = {
        "",
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f946730830",   /* 63 */
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f94673083080", /* 65 */
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f946730830g",
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f946730830 ",
        "0xffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
    };
    uint8_t before[32];
    memset(key, 0x5a, sizeof key);
    memcpy(before, key, sizeof key);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(rl_key_from_hex(bad[i], key), RL_ERR_INVALID);
        assert_memory_equal(key, before, sizeof key);
    }
    assert_int_equal(rl_key_from_hex(NULL, key), RL_ERR_INVALID);
    /* The error context never echoes the key. */
    assert_int_equal(rl_key_from_hex(bad[3], key), RL_ERR_INVALID);
    assert_null(strstr(rl_error_last(), "feffe99"));
}

static void test_key_from_env(void **state)
{
    (void)state;
    uint8_t key[32], expect[32];
    unhex(GCM_KEY, expect, sizeof expect);
    unsetenv("RL_TEST_SECRET_KEY");
    assert_int_equal(rl_key_from_env("RL_TEST_SECRET_KEY", key), RL_ERR_NOT_FOUND);
    setenv("RL_TEST_SECRET_KEY", "", 1);
    assert_int_equal(rl_key_from_env("RL_TEST_SECRET_KEY", key), RL_ERR_NOT_FOUND);
    setenv("RL_TEST_SECRET_KEY", "abcd", 1);
    assert_int_equal(rl_key_from_env("RL_TEST_SECRET_KEY", key), RL_ERR_INVALID);
    assert_non_null(strstr(rl_error_last(), "RL_TEST_SECRET_KEY"));
    setenv("RL_TEST_SECRET_KEY", GCM_KEY, 1);
    assert_int_equal(rl_key_from_env("RL_TEST_SECRET_KEY", key), RL_OK);
    assert_memory_equal(key, expect, 32);
    unsetenv("RL_TEST_SECRET_KEY");
}

static void test_hex(void **state)
{
    (void)state;
    char out[RL_HEX_ENC_SIZE(6)];
    assert_int_equal(rl_hex_encode("foobar", 6, out, sizeof out), RL_OK);
    assert_string_equal(out, "666f6f626172");
    assert_int_equal(rl_hex_encode("\x00\xff\x0a", 3, out, sizeof out), RL_OK);
    assert_string_equal(out, "00ff0a");
    assert_int_equal(rl_hex_encode(NULL, 0, out, 1), RL_OK);
    assert_string_equal(out, "");
    char small[12];
    memset(small, 'x', sizeof small);
    assert_int_equal(rl_hex_encode("foobar", 6, small, sizeof small), RL_ERR_TOO_LARGE);
    assert_int_equal(small[0], 'x');

    uint8_t buf[8];
    size_t n = 99;
    assert_int_equal(rl_hex_decode("666F6f626172", 12, buf, sizeof buf, &n), RL_OK);
    assert_int_equal(n, 6);
    assert_memory_equal(buf, "foobar", 6);
    assert_int_equal(rl_hex_decode(NULL, 0, NULL, 0, &n), RL_OK);
    assert_int_equal(n, 0);
    n = 99;
    assert_int_equal(rl_hex_decode("abc", 3, buf, sizeof buf, &n), RL_ERR_INVALID);
    assert_int_equal(rl_hex_decode("zz", 2, buf, sizeof buf, &n), RL_ERR_INVALID);
    assert_int_equal(rl_hex_decode("a ", 2, buf, sizeof buf, &n), RL_ERR_INVALID);
    assert_int_equal(rl_hex_decode("0a\0b", 4, buf, sizeof buf, &n), RL_ERR_INVALID);
    assert_int_equal(rl_hex_decode("00112233", 8, buf, 3, &n), RL_ERR_TOO_LARGE);
    assert_int_equal(n, 99);
    /* A slice of a longer string decodes without a NUL. */
    assert_int_equal(rl_hex_decode("6f6fzz", 4, buf, sizeof buf, &n), RL_OK);
    assert_int_equal(n, 2);
}

/* RFC 4648 section 10. */
static const char *const B64_VECTORS[][2] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

static void test_base64_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof B64_VECTORS / sizeof B64_VECTORS[0]; i++) {
        const char *plain = B64_VECTORS[i][0], *text = B64_VECTORS[i][1];
        size_t n = strlen(plain);
        char enc[16];
        assert_int_equal(rl_base64_encode(plain, n, enc, RL_BASE64_ENC_SIZE(n)), RL_OK);
        assert_string_equal(enc, text);
        uint8_t dec[8];
        size_t dlen = 99;
        assert_int_equal(rl_base64_decode(text, strlen(text), dec, sizeof dec, &dlen), RL_OK);
        assert_int_equal(dlen, n);
        assert_memory_equal(dec, plain, n);

        /* base64url: the same text without the padding. */
        size_t unpadded = strcspn(text, "=");
        assert_int_equal(rl_base64url_encode(plain, n, enc, RL_BASE64URL_ENC_SIZE(n)), RL_OK);
        assert_int_equal(strlen(enc), unpadded);
        assert_memory_equal(enc, text, unpadded);
        assert_int_equal(rl_base64url_decode(text, unpadded, dec, sizeof dec, &dlen), RL_OK);
        assert_int_equal(dlen, n);
        assert_memory_equal(dec, plain, n);
    }
}

static void test_base64_alphabets(void **state)
{
    (void)state;
    const uint8_t raw[] = {0xfb, 0xff, 0xbf};
    char enc[8];
    assert_int_equal(rl_base64_encode(raw, 3, enc, sizeof enc), RL_OK);
    assert_string_equal(enc, "+/+/");
    assert_int_equal(rl_base64url_encode(raw, 3, enc, sizeof enc), RL_OK);
    assert_string_equal(enc, "-_-_");
    assert_int_equal(rl_base64url_encode(raw, 2, enc, sizeof enc), RL_OK);
    assert_string_equal(enc, "-_8");

    uint8_t dec[8];
    size_t n = 0;
    assert_int_equal(rl_base64url_decode("-_-_", 4, dec, sizeof dec, &n), RL_OK);
    assert_memory_equal(dec, raw, 3);
    assert_int_equal(rl_base64url_decode("+/+/", 4, dec, sizeof dec, &n), RL_ERR_INVALID);
    assert_int_equal(rl_base64_decode("-_-_", 4, dec, sizeof dec, &n), RL_ERR_INVALID);

    /* Every byte value round-trips through both. */
    uint8_t all[256], back[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    char text[RL_BASE64_ENC_SIZE(256)];
    for (size_t len = 0; len <= 256; len += 37) {
        assert_int_equal(rl_base64_encode(all, len, text, sizeof text), RL_OK);
        assert_int_equal(rl_base64_decode(text, strlen(text), back, sizeof back, &n), RL_OK);
        assert_int_equal(n, len);
        assert_memory_equal(back, all, len);
        assert_int_equal(rl_base64url_encode(all, len, text, sizeof text), RL_OK);
        assert_int_equal(rl_base64url_decode(text, strlen(text), back, sizeof back, &n), RL_OK);
        assert_int_equal(n, len);
        assert_memory_equal(back, all, len);
    }
}

static void test_base64_malformed(void **state)
{
    (void)state;
    uint8_t dec[16];
    size_t n = 77;
    static const char *bad_std[] = {
        "Zg",       /* padding missing */
        "Zg=",      /* length not a multiple of 4 */
        "Z===",     /* three pads */
        "Zh==",     /* unused bits set: only "Zg==" is canonical */
        "Zm9=",     /* unused bits set */
        "Zg==Zg==", /* padding in the middle */
        "Zm 9v",    "Zm9v\n", "Zm$v", "=Zm9",
    };
    for (size_t i = 0; i < sizeof bad_std / sizeof bad_std[0]; i++)
        assert_int_equal(rl_base64_decode(bad_std[i], strlen(bad_std[i]), dec, sizeof dec, &n),
                         RL_ERR_INVALID);
    static const char *bad_url[] = {"Z", "Zg==", "Zh", "Zm9", "Zm9v+", "Zm9v/", "Zm.v", "Zm9vZ"};
    for (size_t i = 0; i < sizeof bad_url / sizeof bad_url[0]; i++)
        assert_int_equal(rl_base64url_decode(bad_url[i], strlen(bad_url[i]), dec, sizeof dec, &n),
                         RL_ERR_INVALID);
    assert_int_equal(n, 77);
    assert_int_equal(rl_base64_decode("Zm9vYmFy", 8, dec, 5, &n), RL_ERR_TOO_LARGE);
    assert_int_equal(rl_base64url_decode("Zm9vYmE", 7, dec, 4, &n), RL_ERR_TOO_LARGE);
    char enc[8];
    assert_int_equal(rl_base64_encode("foob", 4, enc, RL_BASE64_ENC_SIZE(4) - 1), RL_ERR_TOO_LARGE);
    assert_int_equal(rl_base64url_encode("foob", 4, enc, RL_BASE64URL_ENC_SIZE(4) - 1),
                     RL_ERR_TOO_LARGE);
    /* A JWT segment is a slice: decoding stops at len, not at a NUL. */
    assert_int_equal(rl_base64url_decode("Zm9v.Zm9v", 4, dec, sizeof dec, &n), RL_OK);
    assert_int_equal(n, 3);
}

/* Expected texts computed independently (Python big integers). */
static void test_base62_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *hex;
        const char *text;
    } v[] = {
        {"", ""},
        {"00", "0"},
        {"000001", "001"},
        {"01", "1"},
        {"ff", "47"},
        {"48656c6c6f2c20576f726c6421", "1wJfrzvdbtXUOlUjUf"},
        {"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
         "03aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBIDlf"},
        {"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
         "yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp1"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t raw[32], back[32];
        size_t n = unhex(v[i].hex, raw, sizeof raw);
        char text[RL_BASE62_ENC_SIZE(32)];
        assert_int_equal(rl_base62_encode(raw, n, text, RL_BASE62_ENC_SIZE(n)), RL_OK);
        assert_string_equal(text, v[i].text);
        size_t m = 99;
        assert_int_equal(rl_base62_decode(text, strlen(text), back, n, &m), RL_OK);
        assert_int_equal(m, n);
        assert_memory_equal(back, raw, n);
    }
}

static void test_base62_round_trip_and_malformed(void **state)
{
    (void)state;
    uint8_t raw[RL_BASE62_MAX_BYTES], back[RL_BASE62_MAX_BYTES];
    char text[RL_BASE62_ENC_SIZE(RL_BASE62_MAX_BYTES)];
    size_t n = 0;
    for (size_t len = 0; len <= RL_BASE62_MAX_BYTES; len += 17) {
        assert_int_equal(rl_random_bytes(raw, len), RL_OK);
        if (len > 2)
            raw[0] = raw[1] = 0; /* leading zero bytes must survive */
        assert_int_equal(rl_base62_encode(raw, len, text, sizeof text), RL_OK);
        assert_int_equal(rl_base62_decode(text, strlen(text), back, sizeof back, &n), RL_OK);
        assert_int_equal(n, len);
        assert_memory_equal(back, raw, len);
    }
    memset(raw, 0xff, sizeof raw);
    assert_int_equal(rl_base62_encode(raw, sizeof raw, text, sizeof text), RL_OK);
    assert_true(strlen(text) < sizeof text);
    assert_int_equal(rl_base62_encode(raw, RL_BASE62_MAX_BYTES + 1, text, sizeof text),
                     RL_ERR_TOO_LARGE);
    assert_int_equal(rl_base62_encode(raw, 4, text, RL_BASE62_ENC_SIZE(4) - 1), RL_ERR_TOO_LARGE);

    n = 55;
    assert_int_equal(rl_base62_decode("ab-c", 4, back, sizeof back, &n), RL_ERR_INVALID);
    assert_int_equal(rl_base62_decode("ab c", 4, back, sizeof back, &n), RL_ERR_INVALID);
    assert_int_equal(rl_base62_decode("abc_", 4, back, sizeof back, &n), RL_ERR_INVALID);
    assert_int_equal(rl_base62_decode("47", 2, back, 0, &n), RL_ERR_TOO_LARGE);
    assert_int_equal(rl_base62_decode("48", 2, back, 1, &n), RL_ERR_TOO_LARGE); /* 256 */
    assert_int_equal(rl_base62_decode("000", 3, back, 2, &n), RL_ERR_TOO_LARGE);
    assert_int_equal(n, 55);
    memset(text, 'z', sizeof text);
    assert_int_equal(rl_base62_decode(text, sizeof text, back, sizeof back, &n), RL_ERR_TOO_LARGE);
}

static void test_token_generate(void **state)
{
    (void)state;
    assert_int_equal(rl_token_body_len(16), 22);
    assert_int_equal(rl_token_body_len(24), 33);
    assert_int_equal(rl_token_body_len(32), 43);
    assert_int_equal(rl_token_body_len(64), 86);
    assert_int_equal(rl_token_body_len(15), 0);
    assert_int_equal(rl_token_body_len(65), 0);

    char a[RL_TOKEN_MAX_SIZE], b[RL_TOKEN_MAX_SIZE];
    assert_int_equal(rl_token_generate("rl_live_", RL_TOKEN_DEFAULT_BYTES, a, sizeof a), RL_OK);
    assert_int_equal(rl_token_generate("rl_live_", RL_TOKEN_DEFAULT_BYTES, b, sizeof b), RL_OK);
    assert_int_equal(strlen(a), 8 + 33);
    assert_memory_equal(a, "rl_live_", 8);
    assert_int_equal(
        strspn(a + 8, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"), 33);
    assert_string_not_equal(a, b);

    /* Fixed width whatever the value: many draws, one length. */
    for (int i = 0; i < 2000; i++) {
        assert_int_equal(rl_token_generate("", 16, a, sizeof a), RL_OK);
        assert_int_equal(strlen(a), 22);
    }
    char longest_prefix[RL_TOKEN_PREFIX_MAX + 1];
    memset(longest_prefix, 'p', RL_TOKEN_PREFIX_MAX);
    longest_prefix[RL_TOKEN_PREFIX_MAX] = '\0';
    assert_int_equal(rl_token_generate(longest_prefix, RL_TOKEN_MAX_BYTES, a, sizeof a), RL_OK);
    assert_int_equal(strlen(a), RL_TOKEN_PREFIX_MAX + 86);

    char exact[8 + 33 + 1];
    assert_int_equal(rl_token_generate("rl_test_", 24, exact, sizeof exact), RL_OK);
    assert_int_equal(rl_token_generate("rl_test_", 24, exact, sizeof exact - 1), RL_ERR_TOO_LARGE);
    assert_int_equal(rl_token_generate("rl-live", 24, a, sizeof a), RL_ERR_INVALID);
    assert_int_equal(rl_token_generate("rl live", 24, a, sizeof a), RL_ERR_INVALID);
    assert_int_equal(rl_token_generate(NULL, 24, a, sizeof a), RL_ERR_INVALID);
    char too_long[RL_TOKEN_PREFIX_MAX + 2];
    memset(too_long, 'p', RL_TOKEN_PREFIX_MAX + 1);
    too_long[RL_TOKEN_PREFIX_MAX + 1] = '\0';
    assert_int_equal(rl_token_generate(too_long, 24, a, sizeof a), RL_ERR_INVALID);
    assert_int_equal(rl_token_generate("rl_", 8, a, sizeof a), RL_ERR_INVALID);
    assert_int_equal(rl_token_generate("rl_", 65, a, sizeof a), RL_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_hmac_rfc4231),
        cmocka_unit_test(test_hmac_empty_key_and_data),
        cmocka_unit_test(test_ct_equal),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_aead_open_known_answer),
        cmocka_unit_test(test_aead_round_trip),
        cmocka_unit_test(test_aead_tampering),
        cmocka_unit_test(test_aead_too_large),
        cmocka_unit_test(test_key_from_hex),
        cmocka_unit_test(test_key_from_env),
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_base64_vectors),
        cmocka_unit_test(test_base64_alphabets),
        cmocka_unit_test(test_base64_malformed),
        cmocka_unit_test(test_base62_vectors),
        cmocka_unit_test(test_base62_round_trip_and_malformed),
        cmocka_unit_test(test_token_generate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
