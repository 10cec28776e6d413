/* px_decode: Content-Encoding of request bodies, decoded with zlib. */
#include "px_decode.h"

#include <limits.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#define MAX_CODINGS 4 /* "deflate, gzip" is already unusual; more is an attack */

typedef enum { CODING_GZIP, CODING_DEFLATE } coding_t;

static const char *coding_name(coding_t c)
{
    return c == CODING_GZIP ? "gzip" : "deflate";
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

/* Splits the header value into the codings to undo, in the order they were
 * applied (identity needs nothing and is left out). RL_ERR_NOT_FOUND for an
 * unknown coding, RL_ERR_INVALID for more than MAX_CODINGS listed. */
static rl_status_t parse_codings(const char *value, coding_t *out, size_t *n)
{
    *n = 0;
    size_t listed = 0;
    const char *p = value;
    while (*p) {
        while (is_space(*p) || *p == ',')
            p++;
        if (!*p)
            break;
        const char *start = p;
        while (*p && *p != ',')
            p++;
        const char *end = p;
        while (end > start && is_space(end[-1]))
            end--;
        size_t len = (size_t)(end - start);
        bool identity = len == 8 && strncasecmp(start, "identity", 8) == 0;
        coding_t c = CODING_GZIP;
        if (len == 7 && strncasecmp(start, "deflate", 7) == 0)
            c = CODING_DEFLATE;
        else if (!identity && !(len == 4 && strncasecmp(start, "gzip", 4) == 0) &&
                 !(len == 6 && strncasecmp(start, "x-gzip", 6) == 0))
            return rl_error(RL_ERR_NOT_FOUND,
                            "Content-Encoding %.*s is not supported (gzip, deflate, identity are)",
                            (int)(len > 40 ? 40 : len), start);
        if (listed++ == MAX_CODINGS)
            return rl_error(RL_ERR_INVALID, "Content-Encoding lists more than %d codings",
                            MAX_CODINGS);
        if (!identity)
            out[(*n)++] = c;
    }
    return RL_OK;
}

bool px_decode_needed(const char *content_encoding)
{
    coding_t codings[MAX_CODINGS];
    size_t n;
    /* a value that does not parse goes to px_decode_body, which reports it */
    return content_encoding != NULL &&
           (parse_codings(content_encoding, codings, &n) != RL_OK || n > 0);
}

/* RFC 1950's header: compression method 8 and a check value. Without it,
 * "deflate" is a raw stream, as some clients send it. */
static bool has_zlib_header(const unsigned char *in, size_t n)
{
    return n >= 2 && (in[0] & 0x0f) == 8 && (in[0] >> 4) <= 7 && ((in[0] << 8) | in[1]) % 31 == 0;
}

/* Inflates all of in into out (appending). gzip may hold several members
 * (RFC 1952 2.2); anything after the last stream end is an error. */
static rl_status_t inflate_all(coding_t coding, const unsigned char *in, size_t n, rl_buf_t *out)
{
    int window = coding == CODING_GZIP ? 16 + MAX_WBITS
                 : has_zlib_header(in, n) ? MAX_WBITS
                                          : -MAX_WBITS;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    int rc = inflateInit2(&zs, window);
    if (rc != Z_OK)
        return rl_error(rc == Z_MEM_ERROR ? RL_ERR_NOMEM : RL_ERR_INTERNAL,
                        "%s: inflateInit2 failed (%d)", coding_name(coding), rc);
    const unsigned char *next = in;
    size_t left = n;
    unsigned char chunk[16384];
    rl_status_t st = RL_OK;
    for (;;) {
        if (zs.avail_in == 0 && left > 0) {
            uInt take = left > UINT_MAX ? UINT_MAX : (uInt)left;
            zs.next_in = (Bytef *)next; /* zlib does not write through it */
            zs.avail_in = take;
            next += take;
            left -= take;
        }
        zs.next_out = chunk;
        zs.avail_out = sizeof chunk;
        rc = inflate(&zs, Z_NO_FLUSH);
        size_t got = sizeof chunk - zs.avail_out;
        if (got > 0 && (st = rl_buf_append(out, chunk, got)) != RL_OK) {
            if (st == RL_ERR_TOO_LARGE)
                st = rl_error(RL_ERR_TOO_LARGE, "%s: the decoded body exceeds %zu bytes",
                              coding_name(coding), out->max);
            break;
        }
        if (rc == Z_STREAM_END) {
            if (zs.avail_in == 0 && left == 0)
                break;
            if (coding != CODING_GZIP) {
                st = rl_error(RL_ERR_INVALID, "%s: bytes after the end of the stream",
                              coding_name(coding));
                break;
            }
            rc = inflateReset(&zs); /* the next gzip member */
            if (rc != Z_OK) {
                st = rl_error(RL_ERR_INTERNAL, "gzip: inflateReset failed (%d)", rc);
                break;
            }
            continue;
        }
        if (rc == Z_OK)
            continue;
        if (rc == Z_BUF_ERROR && zs.avail_in == 0 && left == 0)
            st = rl_error(RL_ERR_INVALID, "%s: the body ends inside the stream",
                          coding_name(coding));
        else if (rc == Z_MEM_ERROR)
            st = rl_error(RL_ERR_NOMEM, "%s: out of memory", coding_name(coding));
        else
            st = rl_error(RL_ERR_INVALID, "%s: %s", coding_name(coding),
                          zs.msg ? zs.msg : "not a valid stream");
        break;
    }
    inflateEnd(&zs);
    return st;
}

rl_status_t px_decode_body(const char *content_encoding, const void *in, size_t n, rl_buf_t *out)
{
    coding_t codings[MAX_CODINGS];
    size_t ncodings = 0;
    rl_status_t st = parse_codings(content_encoding ? content_encoding : "", codings, &ncodings);
    rl_buf_reset(out);
    if (st != RL_OK)
        return st;
    /* the last coding applied is undone first, each step into the other of
     * out and a scratch buffer, so that the step undoing codings[0] writes out */
    rl_buf_t scratch;
    rl_buf_init(&scratch, out->max);
    const unsigned char *src = in;
    size_t srclen = n;
    for (size_t i = ncodings; i-- > 0;) {
        rl_buf_t *dst = i % 2 == 0 ? out : &scratch;
        rl_buf_reset(dst);
        st = inflate_all(codings[i], src, srclen, dst);
        if (st != RL_OK)
            break;
        src = (const unsigned char *)dst->data;
        srclen = dst->len;
    }
    if (st == RL_OK && ncodings == 0 && n > 0 && (st = rl_buf_append(out, in, n)) == RL_ERR_TOO_LARGE)
        st = rl_error(st, "the body exceeds %zu bytes", out->max);
    rl_buf_free(&scratch);
    if (st != RL_OK)
        rl_buf_reset(out);
    return st;
}
