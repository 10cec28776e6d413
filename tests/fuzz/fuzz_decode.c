/* Fuzzes px_decode_body, the decoder of request bodies an agent compressed.
 *
 * Input: [mode][Content-Encoding value] NUL [bytes].
 * - mode bit 0 clear: the bytes are decoded as the header says. Whatever they
 *   are, the result is one of the documented statuses, the output stays
 *   within its limit, and on an error the output is empty.
 * - mode bit 0 set: the bytes are a plaintext that zlib's encoder wraps in 1-3
 *   layers (bits 1-6: gzip, zlib deflate or raw deflate each); decoding with
 *   the matching header must give the plaintext back exactly. */
#include <zlib.h>

#include "fuzz_support.h"
#include "px_decode.h"

#define LIMIT (256 * 1024)

static unsigned char *encode(const unsigned char *in, size_t n, int kind, size_t *out_len)
{
    int window = kind == 0 ? 31 : kind == 1 ? 15 : -15;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, 1, Z_DEFLATED, window, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        abort();
    size_t cap = deflateBound(&zs, (uLong)n) + 32;
    unsigned char *out = malloc(cap);
    FUZZ_CHECK(out != NULL, "malloc");
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    FUZZ_CHECK(deflate(&zs, Z_FINISH) == Z_STREAM_END, "deflate");
    *out_len = cap - zs.avail_out;
    deflateEnd(&zs);
    return out;
}

static void round_trip(uint8_t mode, const uint8_t *data, size_t n)
{
    if (n > LIMIT)
        return;
    int layers = 1 + (mode >> 1) % 3;
    char header[64] = "";
    size_t hlen = 0;
    unsigned char *cur = malloc(n ? n : 1);
    FUZZ_CHECK(cur != NULL, "malloc");
    memcpy(cur, data, n);
    size_t len = n;
    for (int i = 0; i < layers; i++) {
        int kind = (mode >> (2 + 2 * i)) % 3;
        size_t next_len;
        unsigned char *next = encode(cur, len, kind, &next_len);
        free(cur);
        cur = next;
        len = next_len;
        hlen += (size_t)snprintf(header + hlen, sizeof header - hlen, "%s%s", i ? ", " : "",
                                 kind == 0 ? "gzip" : "deflate");
    }
    rl_buf_t out;
    rl_buf_init(&out, LIMIT);
    rl_status_t st = px_decode_body(header, cur, len, &out);
    FUZZ_CHECK(st == RL_OK, "%s: %s", header, rl_error_last());
    FUZZ_CHECK(fuzz_same_bytes(out.data, out.len, data, n), "%s: %zu bytes back for %zu", header,
               out.len, n);
    rl_buf_free(&out);
    free(cur);
}

static void decode_as_given(const uint8_t *data, size_t n)
{
    const uint8_t *nul = memchr(data, 0, n);
    if (nul == NULL)
        return;
    char header[128];
    size_t hlen = (size_t)(nul - data);
    if (hlen >= sizeof header)
        return;
    memcpy(header, data, hlen);
    header[hlen] = '\0';
    const uint8_t *body = nul + 1;
    size_t blen = n - hlen - 1;
    rl_buf_t out;
    rl_buf_init(&out, LIMIT);
    rl_status_t st = px_decode_body(header, body, blen, &out);
    FUZZ_CHECK(st == RL_OK || st == RL_ERR_NOT_FOUND || st == RL_ERR_INVALID ||
                   st == RL_ERR_TOO_LARGE,
               "status %s", rl_status_str(st));
    FUZZ_CHECK(out.len <= LIMIT, "%zu bytes out", out.len);
    FUZZ_CHECK(st == RL_OK || out.len == 0, "output left behind an error");
    if (st == RL_OK && !px_decode_needed(header))
        FUZZ_CHECK(fuzz_same_bytes(out.data, out.len, body, blen), "identity changed the body");
    rl_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    if (mode & 1)
        round_trip(mode, data + 1, size - 1);
    else
        decode_as_given(data + 1, size - 1);
    return 0;
}
