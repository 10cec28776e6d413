#include "rl_config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rl_log.h"

typedef struct {
    char *buf;
    size_t cap, len;
} err_sink_t;

static void sink_add(err_sink_t *s, const char *name, const char *what, const char *value)
{
    if (s->cap == 0 || s->len >= s->cap - 1)
        return;
    int n = snprintf(s->buf + s->len, s->cap - s->len, "%s%s: %s (got '%.64s')",
                     s->len ? "\n" : "", name, what, value ? value : "");
    if (n > 0)
        s->len += (size_t)n < s->cap - s->len ? (size_t)n : s->cap - s->len - 1;
}

static bool parse_long(const char *s, long *out)
{
    if (*s == '\0')
        return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0)
            return *out = true, true;
        if (strcasecmp(s, no[i]) == 0)
            return *out = false, true;
    }
    return false;
}

static bool has_scheme(const char *url, const char *schemes)
{
    const char *p = schemes;
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (strncasecmp(url, p, n) == 0 && strncmp(url + n, "://", 3) == 0 && url[n + 3] != '\0')
            return true;
        p = comma ? comma + 1 : NULL;
    }
    return false;
}

static bool one_of(const char *v, const char *choices)
{
    const char *p = choices;
    size_t vn = strlen(v);
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n == vn && strncmp(v, p, n) == 0)
            return true;
        p = comma ? comma + 1 : NULL;
    }
    return false;
}

static bool valid_addr(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s)
        return false;
    long port;
    return parse_long(colon + 1, &port) && port >= 0 && port <= 65535;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool parse_hexkey(const char *s, uint8_t out[32])
{
    if (strlen(s) != 64)
        return false;
    for (size_t i = 0; i < 32; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static void load_one(const rl_config_option_t *o, err_sink_t *errs)
{
    const char *v = getenv(o->name);
    if (v == NULL || *v == '\0')
        v = o->default_value;
    if (v == NULL || *v == '\0') {
        if (o->required)
            sink_add(errs, o->name, "is required", "");
        return;
    }
    switch (o->type) {
    case RL_CFG_STRING:
        *(const char **)o->target = v;
        break;
    case RL_CFG_INT: {
        long n;
        if (!parse_long(v, &n)) {
            sink_add(errs, o->name, "must be an integer", v);
        } else if ((o->min || o->max) && (n < o->min || n > o->max)) {
            char what[96];
            snprintf(what, sizeof what, "must be between %ld and %ld", o->min, o->max);
            sink_add(errs, o->name, what, v);
        } else {
            *(long *)o->target = n;
        }
        break;
    }
    case RL_CFG_BOOL:
        if (!parse_bool(v, (bool *)o->target))
            sink_add(errs, o->name, "must be true or false", v);
        break;
    case RL_CFG_URL:
        if (!has_scheme(v, o->schemes ? o->schemes : "http,https")) {
            char what[128];
            snprintf(what, sizeof what, "must be a URL with scheme %s", o->schemes ? o->schemes : "http,https");
            sink_add(errs, o->name, what, v);
        } else {
            *(const char **)o->target = v;
        }
        break;
    case RL_CFG_ADDR:
        if (!valid_addr(v))
            sink_add(errs, o->name, "must be host:port", v);
        else
            *(const char **)o->target = v;
        break;
    case RL_CFG_LOGLEVEL:
        if (rl_log_level_parse(v, (rl_log_level_t *)o->target) != RL_OK)
            sink_add(errs, o->name, "must be one of error, warn, info, debug, trace", v);
        break;
    case RL_CFG_ENUM:
        if (!one_of(v, o->schemes ? o->schemes : "")) {
            char what[160];
            snprintf(what, sizeof what, "must be one of %s", o->schemes ? o->schemes : "");
            sink_add(errs, o->name, what, v);
        } else {
            *(const char **)o->target = v;
        }
        break;
    case RL_CFG_HEXKEY:
        if (!parse_hexkey(v, (uint8_t *)o->target))
            sink_add(errs, o->name, "must be 64 hexadecimal characters (32 bytes)", "<hidden>");
        break;
    }
}

rl_status_t rl_config_load(const rl_config_option_t *opts, size_t n, char *errbuf, size_t cap)
{
    err_sink_t errs = {errbuf, cap, 0};
    if (cap > 0)
        errbuf[0] = '\0';
    for (size_t i = 0; i < n; i++)
        load_one(&opts[i], &errs);
    if (errs.len > 0)
        return rl_error(RL_ERR_INVALID, "invalid configuration");
    return RL_OK;
}

void rl_config_print_table(const rl_config_option_t *opts, size_t n, void *file)
{
    FILE *f = file;
    fprintf(f, "| variable | default | description |\n|---|---|---|\n");
    for (size_t i = 0; i < n; i++) {
        const char *def = opts[i].default_value;
        fprintf(f, "| `%s` | %s%s%s | %s%s |\n", opts[i].name, def ? "`" : "", def ? def : (opts[i].required ? "required" : "unset"),
                def ? "`" : "", opts[i].help ? opts[i].help : "", "");
    }
}
