/* rl_query: a URL query string as DLP reads and redacts it. */
#include "rl_query.h"

#include <curl/curl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Appends s[0..n) form-decoded to text: '+' is a space, %XX a byte. */
static rl_status_t append_decoded(const char *s, size_t n, rl_buf_t *spaced, rl_buf_t *text)
{
    if (n == 0)
        return RL_OK;
    rl_buf_reset(spaced);
    rl_status_t st = rl_buf_append(spaced, s, n);
    if (st != RL_OK)
        return st;
    for (size_t i = 0; i < n; i++)
        if (spaced->data[i] == '+')
            spaced->data[i] = ' '; /* before unescaping: %2B stays a '+' */
    int len = 0;
    char *plain = curl_easy_unescape(NULL, spaced->data, (int)n, &len);
    if (plain == NULL)
        return rl_error(RL_ERR_NOMEM, "query: decoding");
    st = rl_buf_append(text, plain, (size_t)len);
    curl_free(plain);
    return st;
}

rl_status_t rl_query_decode(const char *q, size_t n, rl_buf_t *text, rl_query_pair_t **pairs,
                            size_t *npairs)
{
    rl_buf_reset(text);
    if (pairs)
        *pairs = NULL;
    if (npairs)
        *npairs = 0;
    if (n == 0)
        return RL_OK;
    if (n > (size_t)INT32_MAX)
        return rl_error(RL_ERR_TOO_LARGE, "query: %zu bytes", n);
    size_t count = 0, cap = 0;
    rl_query_pair_t *list = NULL;
    rl_buf_t spaced;
    rl_buf_init(&spaced, n);
    rl_status_t st = RL_OK;
    for (size_t at = 0; at <= n && st == RL_OK;) {
        const char *amp = memchr(q + at, '&', n - at);
        size_t end = amp ? (size_t)(amp - q) : n;
        const char *eq = memchr(q + at, '=', end - at);
        rl_query_pair_t p = {.raw_start = at, .raw_end = end};
        p.raw_value = eq ? (size_t)(eq - q) + 1 : end;
        if (count > 0)
            st = rl_buf_append(text, "&", 1);
        p.text_start = text->len;
        size_t name_end = eq ? (size_t)(eq - q) : end;
        if (st == RL_OK)
            st = append_decoded(q + at, name_end - at, &spaced, text);
        if (st == RL_OK && eq)
            st = rl_buf_append(text, "=", 1);
        p.text_value = text->len;
        if (st == RL_OK && eq)
            st = append_decoded(q + p.raw_value, end - p.raw_value, &spaced, text);
        p.text_end = text->len;
        if (st == RL_OK && pairs && count == cap) {
            cap = cap ? cap * 2 : 8;
            rl_query_pair_t *grown = realloc(list, cap * sizeof *grown);
            if (grown == NULL)
                st = rl_error(RL_ERR_NOMEM, "query: pairs");
            else
                list = grown;
        }
        if (st == RL_OK && pairs)
            list[count] = p;
        count++;
        at = end + 1;
    }
    rl_buf_free(&spaced);
    if (st != RL_OK) {
        free(list);
        rl_buf_reset(text);
        return st;
    }
    if (pairs)
        *pairs = list;
    else
        free(list);
    if (npairs)
        *npairs = count;
    return RL_OK;
}

/* The first redact finding (any finding when every) of f within text
 * [start, end), or NULL. */
static const rl_dlp_finding_t *redaction_in(const rl_dlp_findings_t *f, bool every, size_t start,
                                            size_t end)
{
    for (size_t i = 0; i < f->len; i++) {
        const rl_dlp_finding_t *x = &f->items[i];
        if ((every || x->action == RL_DLP_ACTION_REDACT) && x->start < end && x->end > start)
            return x;
    }
    return NULL;
}

static rl_status_t append_marker(const rl_dlp_finding_t *x, rl_buf_t *out)
{
    char marker[160];
    int len = snprintf(marker, sizeof marker, RL_DLP_REDACT_PREFIX "%s]", x->detector);
    if (len < 0 || (size_t)len >= sizeof marker)
        return rl_error(RL_ERR_INVALID, "query: detector id too long");
    char *encoded = curl_easy_escape(NULL, marker, len);
    if (encoded == NULL)
        return rl_error(RL_ERR_NOMEM, "query: encoding");
    rl_status_t st = rl_buf_append_str(out, encoded);
    curl_free(encoded);
    return st;
}

rl_status_t rl_query_redact(const char *q, size_t n, const rl_query_pair_t *pairs, size_t npairs,
                            const rl_dlp_findings_t *f, bool every, rl_buf_t *out)
{
    rl_buf_reset(out);
    if (f->dropped > 0) /* as rl_dlp_redact: the redaction would be incomplete */
        return rl_error(RL_ERR_TOO_LARGE, "query: %zu findings dropped", f->dropped);
    rl_status_t st = RL_OK;
    for (size_t i = 0; i < npairs && st == RL_OK; i++) {
        const rl_query_pair_t *p = &pairs[i];
        if (p->raw_end > n) {
            st = rl_error(RL_ERR_INVALID, "query: pair %zu outside the query", i);
            break;
        }
        if (i > 0)
            st = rl_buf_append(out, "&", 1);
        const rl_dlp_finding_t *in_pair = redaction_in(f, every, p->text_start, p->text_end);
        const rl_dlp_finding_t *in_name = redaction_in(f, every, p->text_start, p->text_value);
        if (st != RL_OK || in_pair == NULL) {
            if (st == RL_OK)
                st = rl_buf_append(out, q + p->raw_start, p->raw_end - p->raw_start);
        } else if (in_name) { /* a pair without '=' is all name */
            st = append_marker(in_name, out);
        } else {
            st = rl_buf_append(out, q + p->raw_start, p->raw_value - p->raw_start);
            if (st == RL_OK)
                st = append_marker(in_pair, out);
        }
    }
    if (st != RL_OK)
        rl_buf_reset(out);
    return st;
}

bool rl_query_is_form_type(const char *content_type)
{
    static const char form[] = "application/x-www-form-urlencoded";
    const size_t n = sizeof form - 1;
    return content_type && strncasecmp(content_type, form, n) == 0 &&
           (content_type[n] == '\0' || content_type[n] == ';' || content_type[n] == ' ');
}
