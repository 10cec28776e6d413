#include "rl_buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rl_buf_init(rl_buf_t *b, size_t max)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->max = max;
}

static rl_status_t reserve(rl_buf_t *b, size_t extra)
{
    if (extra > b->max - b->len)
        return rl_error(RL_ERR_TOO_LARGE, "buffer limit of %zu bytes reached", b->max);
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return RL_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (cap > b->max + 1)
        cap = b->max + 1;
    char *p = realloc(b->data, cap);
    if (p == NULL)
        return rl_error(RL_ERR_NOMEM, "buffer growth to %zu bytes failed", cap);
    b->data = p;
    b->cap = cap;
    return RL_OK;
}

rl_status_t rl_buf_append_grow(rl_buf_t *b, const void *data, size_t n)
{
    rl_status_t st = reserve(b, n);
    if (st != RL_OK)
        return st;
    if (n > 0)
        memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
    return RL_OK;
}

rl_status_t rl_buf_append_str(rl_buf_t *b, const char *s)
{
    return rl_buf_append(b, s, strlen(s));
}

rl_status_t rl_buf_appendf(rl_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return rl_error(RL_ERR_INVALID, "bad format");
    rl_status_t st = reserve(b, (size_t)n);
    if (st != RL_OK)
        return st;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return RL_OK;
}

void rl_buf_reset(rl_buf_t *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void rl_buf_recycle(rl_buf_t *b, size_t keep, size_t max)
{
    if (b->cap > keep)
        rl_buf_free(b);
    rl_buf_reset(b);
    b->max = max;
}

char *rl_buf_take(rl_buf_t *b, size_t *len)
{
    char *p = b->data;
    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

void rl_buf_free(rl_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void rl_buf_move(rl_buf_t *dst, rl_buf_t *src)
{
    rl_buf_free(dst);
    *dst = *src;
    rl_buf_init(src, dst->max);
}
