/* rl_json: the few things every service does with jansson, done one way:
 * bounded parsing with a readable error, typed field access that names the
 * bad field, and compact dumping into a bounded rl_buf. */
#ifndef RL_JSON_H
#define RL_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rl_buf.h"
#include "rl_status.h"

/* Parses len bytes (not NUL-terminated necessarily) of JSON text. Rejects
 * duplicate object keys and NUL bytes. Returns owned *out (json_decref) or
 * RL_ERR_TOO_LARGE when len > max (max 0: no limit), RL_ERR_INVALID with
 * "line L column C: reason" in rl_error_last(). */
rl_status_t rl_json_parse(const void *text, size_t len, size_t max, json_t **out);

/* Like rl_json_parse, and the value must also be an object. */
rl_status_t rl_json_parse_object(const void *text, size_t len, size_t max, json_t **out);

/* Field access on an object. Each returns RL_ERR_NOT_FOUND when the key is
 * absent or null (out untouched) and RL_ERR_INVALID when it has another type,
 * naming the key in rl_error_last(). Strings are borrowed from obj. */
rl_status_t rl_json_get_str(const json_t *obj, const char *key, const char **out);
rl_status_t rl_json_get_int(const json_t *obj, const char *key, int64_t *out);
rl_status_t rl_json_get_num(const json_t *obj, const char *key, double *out);
rl_status_t rl_json_get_bool(const json_t *obj, const char *key, bool *out);

/* Returns the string at key, or dflt when absent or not a string. Borrowed. */
const char *rl_json_str_or(const json_t *obj, const char *key, const char *dflt);

/* Appends the compact encoding of v to out (keys in insertion order).
 * RL_ERR_TOO_LARGE when out's limit is reached (out then holds a prefix). */
rl_status_t rl_json_dump(const json_t *v, rl_buf_t *out);

/* When s[0..n) is JSON that spells a printable ASCII character with an
 * escape it does not need (\u0041, or \/ as some encoders write every '/'),
 * appends the same JSON with those characters as themselves (rl_json_dump)
 * to out and returns true. Such text hides what it says from a byte scanner
 * (DLP) while every JSON reader decodes it. False, out unchanged, for text
 * without such escapes, that is not JSON, or that does not fit out. */
bool rl_json_plain_ascii(const char *s, size_t n, rl_buf_t *out);

#endif
