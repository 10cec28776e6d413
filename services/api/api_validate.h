/* api_validate: reading fields of a JSON request body, each problem recorded
 * by field name in an errors object so a 400 names every bad field at once. */
#ifndef API_VALIDATE_H
#define API_VALIDATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Reads a string field of 1..max characters (after no trimming). Absent or
 * null: *out = NULL, and an error only when required. Returns true when the
 * field is fine (present and valid, or absent and optional). */
bool api_field_str(const json_t *in, const char *key, bool required, size_t max,
                   json_t *errors, const char **out);

/* A string that must be one of the NULL-terminated choices. */
bool api_field_enum(const json_t *in, const char *key, bool required,
                    const char *const *choices, json_t *errors, const char **out);

/* A canonical UUID string. */
bool api_field_uuid(const json_t *in, const char *key, bool required, json_t *errors,
                    const char **out);

/* An ISO 8601 / RFC 3339 timestamp ("2030-01-01T00:00:00Z", offsets
 * allowed, a date alone too), not PostgreSQL's words like 'tomorrow'. */
bool api_field_timestamp(const json_t *in, const char *key, bool required, json_t *errors,
                         const char **out);

/* True for a timestamp api_field_timestamp accepts. */
bool api_valid_timestamp(const char *s);

/* An http(s) URL without whitespace, at most 2048 characters. */
bool api_field_url(const json_t *in, const char *key, bool required, json_t *errors,
                   const char **out);

/* A number > 0 (when present): *present tells whether it was given. */
bool api_field_positive(const json_t *in, const char *key, json_t *errors, double *out,
                        bool *present);

/* An integer in [min, max] (when present). */
bool api_field_int(const json_t *in, const char *key, long min, long max, json_t *errors,
                   long *out, bool *present);

/* A boolean (when present). */
bool api_field_bool(const json_t *in, const char *key, json_t *errors, bool *out, bool *present);

/* An object (when present); borrowed. */
bool api_field_object(const json_t *in, const char *key, json_t *errors, json_t **out);

/* True for a plausible e-mail address (one '@', something on each side, a
 * dot in the domain, no spaces, at most 320 characters). */
bool api_valid_email(const char *s);

/* True for a canonical UUID string. */
bool api_valid_uuid(const char *s);

/* Records message for key in errors (first message per field wins). */
void api_field_error(json_t *errors, const char *key, const char *message);

#endif
