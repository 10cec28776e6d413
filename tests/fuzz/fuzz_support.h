/* What the fuzz targets share: reading choices off the front of an input,
 * a deterministic chunking of the rest, and a check that stops the run with
 * the property that failed (libFuzzer then keeps the input as a crash). */
#ifndef FUZZ_SUPPORT_H
#define FUZZ_SUPPORT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rl_buf.h"
#include "rl_crypto.h"
#include "rl_status.h"

#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: property failed: %s: ", __FILE__, __LINE__, #cond);            \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Whether two byte ranges are equal (either pointer may be NULL when empty). */
static inline int fuzz_same_bytes(const void *a, size_t an, const void *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

typedef struct {
    const uint8_t *p;
    size_t n;
} fuzz_input_t;

/* The next byte (0 once the input is used up). */
static inline uint8_t fuzz_byte(fuzz_input_t *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

/* A string of up to max bytes taken off the input (a length byte first);
 * owned (free). Cut at its first NUL, as the C strings it stands for are. */
static inline char *fuzz_take_str(fuzz_input_t *in, size_t max)
{
    size_t n = fuzz_byte(in) % (max + 1);
    n = n < in->n ? n : in->n;
    char *s = malloc(n + 1);
    memcpy(s, in->p, n);
    s[n] = '\0';
    in->p += n, in->n -= n;
    return s;
}

/* Whether s[0..n) is valid UTF-8 without NUL: text that every encoder
 * under test must pass through unchanged (jansson's reading of UTF-8). */
static inline bool fuzz_plain_utf8(const void *s, size_t n)
{
    if (memchr(s, '\0', n) != NULL)
        return false;
    json_t *v = json_stringn((const char *)s, n);
    json_decref(v);
    return v != NULL;
}

/* Chunk lengths for feeding n bytes in pieces: 1..max bytes each, drawn from
 * a generator seeded by seed, so one input always splits the same way. */
typedef struct {
    uint32_t state;
    size_t max;
} fuzz_chunks_t;

static inline void fuzz_chunks_init(fuzz_chunks_t *c, uint8_t seed, size_t max)
{
    c->state = 0x9e3779b9u ^ ((uint32_t)seed * 0x01000193u);
    c->max = max < 1 ? 1 : max;
}

static inline size_t fuzz_chunk(fuzz_chunks_t *c, size_t left)
{
    c->state ^= c->state << 13;
    c->state ^= c->state >> 17;
    c->state ^= c->state << 5;
    size_t len = 1 + c->state % c->max;
    return len < left ? len : left;
}

/* Appends s[0..n) with the escapes of printable ASCII that a byte scanner
 * would miss decoded ("\/" and "\u00XX" but for '"' and '\'), every other
 * escape kept: the text a JSON reader reads, in the same layout. */
static inline void fuzz_unescape_ascii(const char *s, size_t n, rl_buf_t *out)
{
    for (size_t i = 0; i < n;) {
        uint8_t c;
        size_t one;
        if (s[i] == '\\' && i + 1 < n && s[i + 1] == '/') {
            rl_buf_append(out, "/", 1);
            i += 2;
        } else if (s[i] == '\\' && i + 5 < n && s[i + 1] == 'u' && s[i + 2] == '0' &&
                   s[i + 3] == '0' && rl_hex_decode(s + i + 4, 2, &c, 1, &one) == RL_OK &&
                   c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            rl_buf_append(out, (const char *)&c, 1);
            i += 6;
        } else {
            size_t k = s[i] == '\\' && i + 1 < n ? 2 : 1; /* an escape kept whole */
            rl_buf_append(out, s + i, k);
            i += k;
        }
        rl_error_clear();
    }
}

#endif
