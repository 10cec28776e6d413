#include "api_validate.h"

#include <stdio.h>
#include <string.h>

#include "rl_uuid.h"

void api_field_error(json_t *errors, const char *key, const char *message)
{
    if (errors && json_object_get(errors, key) == NULL)
        json_object_set_new(errors, key, json_string(message));
}

static json_t *field(const json_t *in, const char *key)
{
    json_t *v = json_is_object(in) ? json_object_get(in, key) : NULL;
    return json_is_null(v) ? NULL : v;
}

static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

bool api_field_str(const json_t *in, const char *key, bool required, size_t max,
                   json_t *errors, const char **out)
{
    json_t *v = field(in, key);
    *out = NULL;
    if (v == NULL) {
        if (required)
            api_field_error(errors, key, "is required");
        return !required;
    }
    if (!json_is_string(v)) {
        api_field_error(errors, key, "must be a string");
        return false;
    }
    const char *s = json_string_value(v);
    size_t n = utf8_chars(s);
    if (n == 0 && required) {
        api_field_error(errors, key, "must not be empty");
        return false;
    }
    if (n > max) {
        char msg[64];
        snprintf(msg, sizeof msg, "must be at most %zu characters", max);
        api_field_error(errors, key, msg);
        return false;
    }
    *out = s;
    return true;
}

bool api_field_enum(const json_t *in, const char *key, bool required,
                    const char *const *choices, json_t *errors, const char **out)
{
    if (!api_field_str(in, key, required, 64, errors, out))
        return false;
    if (*out == NULL)
        return true;
    for (size_t i = 0; choices[i]; i++) {
        if (strcmp(*out, choices[i]) == 0)
            return true;
    }
    char msg[256];
    size_t len = (size_t)snprintf(msg, sizeof msg, "must be one of");
    for (size_t i = 0; choices[i] && len < sizeof msg; i++)
        len += (size_t)snprintf(msg + len, sizeof msg - len, "%s %s", i ? "," : "", choices[i]);
    api_field_error(errors, key, msg);
    *out = NULL;
    return false;
}

bool api_valid_uuid(const char *s)
{
    rl_uuid_t u;
    return s && rl_uuid_parse(s, &u) == RL_OK;
}

bool api_field_uuid(const json_t *in, const char *key, bool required, json_t *errors,
                    const char **out)
{
    if (!api_field_str(in, key, required, 36, errors, out))
        return false;
    if (*out && !api_valid_uuid(*out)) {
        api_field_error(errors, key, "must be a UUID");
        *out = NULL;
        return false;
    }
    return true;
}

bool api_field_url(const json_t *in, const char *key, bool required, json_t *errors,
                   const char **out)
{
    if (!api_field_str(in, key, required, 2048, errors, out))
        return false;
    if (*out == NULL)
        return true;
    const char *s = *out;
    bool scheme = strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0;
    bool host = scheme && s[strncmp(s, "https://", 8) == 0 ? 8 : 7] != '\0';
    if (!scheme || !host || strpbrk(s, " \t\r\n") != NULL) {
        api_field_error(errors, key, "must be an http:// or https:// URL");
        *out = NULL;
        return false;
    }
    return true;
}

bool api_field_positive(const json_t *in, const char *key, json_t *errors, double *out,
                        bool *present)
{
    json_t *v = field(in, key);
    *present = v != NULL;
    if (v == NULL)
        return true;
    if (!json_is_number(v) || json_number_value(v) <= 0) {
        api_field_error(errors, key, "must be a number greater than 0");
        *present = false;
        return false;
    }
    *out = json_number_value(v);
    return true;
}

bool api_field_int(const json_t *in, const char *key, long min, long max, json_t *errors,
                   long *out, bool *present)
{
    json_t *v = field(in, key);
    *present = v != NULL;
    if (v == NULL)
        return true;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        char msg[96];
        snprintf(msg, sizeof msg, "must be an integer between %ld and %ld", min, max);
        api_field_error(errors, key, msg);
        *present = false;
        return false;
    }
    *out = (long)json_integer_value(v);
    return true;
}

bool api_field_bool(const json_t *in, const char *key, json_t *errors, bool *out, bool *present)
{
    json_t *v = field(in, key);
    *present = v != NULL;
    if (v == NULL)
        return true;
    if (!json_is_boolean(v)) {
        api_field_error(errors, key, "must be true or false");
        *present = false;
        return false;
    }
    *out = json_is_true(v);
    return true;
}

bool api_field_object(const json_t *in, const char *key, json_t *errors, json_t **out)
{
    json_t *v = field(in, key);
    *out = NULL;
    if (v == NULL)
        return true;
    if (!json_is_object(v)) {
        api_field_error(errors, key, "must be an object");
        return false;
    }
    *out = v;
    return true;
}

bool api_valid_email(const char *s)
{
    if (s == NULL)
        return false;
    size_t n = strlen(s);
    const char *at = strchr(s, '@');
    if (n < 3 || n > 320 || at == NULL || at == s || strchr(at + 1, '@') != NULL)
        return false;
    const char *dot = strrchr(at, '.');
    if (dot == NULL || dot == at + 1 || dot[1] == '\0')
        return false;
    for (const char *p = s; *p; p++) {
        if ((unsigned char)*p <= ' ' || *p == '<' || *p == '>' || *p == ',' || *p == ';')
            return false;
    }
    return true;
}

static bool digits(const char *s, int n)
{
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
    }
    return true;
}

bool api_valid_timestamp(const char *s)
{
    if (s == NULL || strlen(s) < 10 || !digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) ||
        s[7] != '-' || !digits(s + 8, 2))
        return false;
    const char *p = s + 10;
    if (*p == '\0')
        return true;
    if ((*p != 'T' && *p != 't' && *p != ' ') || !digits(p + 1, 2) || p[3] != ':' ||
        !digits(p + 4, 2))
        return false;
    p += 6;
    if (*p == ':') {
        if (!digits(p + 1, 2))
            return false;
        p += 3;
        if (*p == '.') {
            p++;
            if (!digits(p, 1))
                return false;
            while (*p >= '0' && *p <= '9')
                p++;
        }
    }
    if (*p == 'Z' || *p == 'z')
        return p[1] == '\0';
    if (*p == '+' || *p == '-') {
        if (!digits(p + 1, 2))
            return false;
        p += 3;
        if (*p == ':')
            p++;
        return *p == '\0' || (digits(p, 2) && p[2] == '\0');
    }
    return *p == '\0';
}

bool api_field_timestamp(const json_t *in, const char *key, bool required, json_t *errors,
                         const char **out)
{
    if (!api_field_str(in, key, required, 64, errors, out))
        return false;
    if (*out && !api_valid_timestamp(*out)) {
        api_field_error(errors, key, "must be an ISO 8601 timestamp such as 2030-01-01T00:00:00Z");
        *out = NULL;
        return false;
    }
    return true;
}
