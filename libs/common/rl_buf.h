/* rl_buf: a growable byte buffer with a hard maximum size (after curl's dynbuf).
 * The buffer always keeps a NUL after its content, so text can be read as a
 * C string. Not thread-safe: one owner at a time. */
#ifndef RL_BUF_H
#define RL_BUF_H

#include <stddef.h>
#include <string.h>

#include "rl_status.h"

typedef struct {
    char *data;     /* owned; NULL until the first append */
    size_t len;     /* bytes of content, NUL not counted */
    size_t cap;     /* bytes allocated */
    size_t max;     /* hard limit on len */
} rl_buf_t;

/* Prepares an empty buffer that may hold at most max bytes. Allocates nothing. */
void rl_buf_init(rl_buf_t *b, size_t max);

/* The out-of-line part of rl_buf_append: grows the buffer first. */
rl_status_t rl_buf_append_grow(rl_buf_t *b, const void *data, size_t n);

/* Appends n bytes. RL_ERR_TOO_LARGE when len would pass max (nothing appended),
 * RL_ERR_NOMEM when allocation fails. Inline when the bytes fit the memory
 * already there: encoders append a few bytes at a time, hundreds of times
 * per message. */
static inline rl_status_t rl_buf_append(rl_buf_t *b, const void *data, size_t n)
{
    if (n == 0 || n >= b->cap - b->len || n > b->max - b->len)
        return rl_buf_append_grow(b, data, n);
    memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
    return RL_OK;
}

/* Appends a C string. Same errors as rl_buf_append. */
rl_status_t rl_buf_append_str(rl_buf_t *b, const char *s);

/* Appends printf-formatted text. Same errors; on error nothing is appended. */
rl_status_t rl_buf_appendf(rl_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Empties the buffer and keeps its memory for reuse. */
void rl_buf_reset(rl_buf_t *b);

/* Empties the buffer for another use with limit max: keeps its memory when
 * at most keep bytes were allocated (a pooled object's buffers), frees it
 * otherwise (a one-off large body is not held on to). */
void rl_buf_recycle(rl_buf_t *b, size_t keep, size_t max);

/* Transfers ownership of the content to the caller (free() it; never NULL
 * after a successful append, NULL if nothing was appended) and empties b. */
char *rl_buf_take(rl_buf_t *b, size_t *len);

/* Frees the memory; b may be reused after rl_buf_init(). */
void rl_buf_free(rl_buf_t *b);

/* Frees dst's memory and moves src's content (and limit) into dst; src is
 * left empty, with its limit, ready for reuse. */
void rl_buf_move(rl_buf_t *dst, rl_buf_t *src);

#endif
