#include "rl_json.h"

#include <string.h>

#include "rl_crypto.h"

rl_status_t rl_json_parse(const void *text, size_t len, size_t max, json_t **out)
{
    if (max > 0 && len > max)
        return rl_error(RL_ERR_TOO_LARGE, "JSON body of %zu bytes exceeds the limit of %zu", len, max);
    if (len == 0)
        return rl_error(RL_ERR_INVALID, "empty JSON body");
    /* JSON text has no NUL byte anywhere, and jansson 2.14 drops one that
     * follows a number ({"a":0<NUL>} parses), which would let through text
     * that nothing downstream reads the same way. */
    const char *nul = memchr(text, '\0', len);
    if (nul != NULL) {
        size_t line = 1, column = 1;
        for (const char *p = text; p < nul; p++, column++)
            if (*p == '\n')
                line++, column = 0;
        return rl_error(RL_ERR_INVALID, "line %zu column %zu: NUL byte in JSON text", line, column);
    }
    json_error_t err;
    json_t *v = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
    if (v == NULL)
        return rl_error(RL_ERR_INVALID, "line %d column %d: %s", err.line, err.column, err.text);
    *out = v;
    return RL_OK;
}

rl_status_t rl_json_parse_object(const void *text, size_t len, size_t max, json_t **out)
{
    json_t *v;
    rl_status_t st = rl_json_parse(text, len, max, &v);
    if (st != RL_OK)
        return st;
    if (!json_is_object(v)) {
        json_decref(v);
        return rl_error(RL_ERR_INVALID, "expected a JSON object");
    }
    *out = v;
    return RL_OK;
}

static rl_status_t field(const json_t *obj, const char *key, json_t **out)
{
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    if (v == NULL || json_is_null(v))
        return rl_error(RL_ERR_NOT_FOUND, "%s: missing", key);
    *out = v;
    return RL_OK;
}

rl_status_t rl_json_get_str(const json_t *obj, const char *key, const char **out)
{
    json_t *v = NULL;
    rl_status_t st = field(obj, key, &v);
    if (st != RL_OK)
        return st;
    if (!json_is_string(v))
        return rl_error(RL_ERR_INVALID, "%s: must be a string", key);
    *out = json_string_value(v);
    return RL_OK;
}

rl_status_t rl_json_get_int(const json_t *obj, const char *key, int64_t *out)
{
    json_t *v = NULL;
    rl_status_t st = field(obj, key, &v);
    if (st != RL_OK)
        return st;
    if (!json_is_integer(v))
        return rl_error(RL_ERR_INVALID, "%s: must be an integer", key);
    *out = (int64_t)json_integer_value(v);
    return RL_OK;
}

rl_status_t rl_json_get_num(const json_t *obj, const char *key, double *out)
{
    json_t *v = NULL;
    rl_status_t st = field(obj, key, &v);
    if (st != RL_OK)
        return st;
    if (!json_is_number(v))
        return rl_error(RL_ERR_INVALID, "%s: must be a number", key);
    *out = json_number_value(v);
    return RL_OK;
}

rl_status_t rl_json_get_bool(const json_t *obj, const char *key, bool *out)
{
    json_t *v = NULL;
    rl_status_t st = field(obj, key, &v);
    if (st != RL_OK)
        return st;
    if (!json_is_boolean(v))
        return rl_error(RL_ERR_INVALID, "%s: must be true or false", key);
    *out = json_is_true(v);
    return RL_OK;
}

const char *rl_json_str_or(const json_t *obj, const char *key, const char *dflt)
{
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    return json_is_string(v) ? json_string_value(v) : dflt;
}

static int dump_cb(const char *chunk, size_t n, void *ctx)
{
    return rl_buf_append(ctx, chunk, n) == RL_OK ? 0 : -1;
}

rl_status_t rl_json_dump(const json_t *v, rl_buf_t *out)
{
    if (json_dump_callback(v, dump_cb, out, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY) != 0)
        return rl_error(RL_ERR_TOO_LARGE, "JSON encoding exceeds the buffer limit of %zu bytes", out->max);
    return RL_OK;
}

/* Whether s holds an escape of a printable ASCII character other than '"'
 * and '\\' (which need one): \u00XX ("\u0041KIA") or the escaped solidus. An
 * escaped backslash before '/' or 'u' ("\\/") may answer yes: the text is
 * then re-encoded for nothing, which changes no value. */
static bool escapes_plain_ascii(const char *s, size_t n)
{
    if (memmem(s, n, "\\/", 2) != NULL)
        return true;
    const char *end = s + n;
    for (const char *p = s; (p = memmem(p, (size_t)(end - p), "\\u00", 4)) != NULL; p++) {
        uint8_t c;
        size_t one;
        if (end - p < 6 || rl_hex_decode(p + 4, 2, &c, 1, &one) != RL_OK) {
            rl_error_clear(); /* not JSON there: the parse will say so */
            continue;
        }
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            return true;
    }
    return false;
}

bool rl_json_plain_ascii(const char *s, size_t n, rl_buf_t *out)
{
    if (!escapes_plain_ascii(s, n))
        return false;
    json_t *v = json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (v == NULL)
        return false;
    size_t mark = out->len;
    rl_status_t st = rl_json_dump(v, out);
    json_decref(v);
    if (st != RL_OK) {
        rl_error_clear();
        out->len = mark;
        if (out->data)
            out->data[mark] = '\0';
        return false;
    }
    return true;
}
