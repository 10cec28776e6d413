#include "rl_log.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static const char *log_service = "renlayer";
static _Atomic int log_level = RL_LOG_INFO;
static _Atomic int log_fd = 2;

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};

rl_status_t rl_log_level_parse(const char *s, rl_log_level_t *out)
{
    if (s == NULL)
        return rl_error(RL_ERR_INVALID, "log level missing");
    for (int i = 0; i <= RL_LOG_TRACE; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (rl_log_level_t)i;
            return RL_OK;
        }
    }
    return rl_error(RL_ERR_INVALID, "unknown log level '%.32s' (error|warn|info|debug|trace)", s);
}

const char *rl_log_level_name(rl_log_level_t level)
{
    if ((int)level < 0 || level > RL_LOG_TRACE)
        return "unknown";
    return level_names[level];
}

void rl_log_init(const char *service, rl_log_level_t level)
{
    if (service != NULL)
        log_service = service;
    atomic_store(&log_level, (int)level);
}

void rl_log_set_fd(int fd)
{
    atomic_store(&log_fd, fd);
}

bool rl_log_enabled(rl_log_level_t level)
{
    return (int)level <= atomic_load(&log_level);
}

static void format_now(char *out, size_t cap)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, cap - n, ".%03ldZ", ts.tv_nsec / 1000000L);
}

static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w <= 0)
            return;
        buf += w;
        len -= (size_t)w;
    }
}

void rl_log(rl_log_level_t level, const char *msg, const char *fields_fmt, ...)
{
    if (!rl_log_enabled(level))
        return;
    char ts[40];
    format_now(ts, sizeof ts);
    json_t *line = json_pack("{s:s,s:s,s:s,s:s}", "ts", ts, "level", rl_log_level_name(level),
                             "service", log_service, "msg", msg ? msg : "");
    if (line == NULL)
        return;
    if (fields_fmt != NULL) {
        va_list ap;
        va_start(ap, fields_fmt);
        json_error_t err;
        json_t *fields = json_vpack_ex(&err, 0, fields_fmt, ap);
        va_end(ap);
        if (json_is_object(fields))
            json_object_update_missing(line, fields);
        else
            json_object_set_new(line, "log_error", json_string(err.text));
        json_decref(fields);
    }
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(line);
    if (text == NULL)
        return;
    size_t len = strlen(text);
    text[len] = '\n'; /* json_dumps leaves room: we replace the NUL and write len+1 */
    write_all(atomic_load(&log_fd), text, len + 1);
    free(text);
}
