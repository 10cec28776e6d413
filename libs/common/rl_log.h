/* rl_log: structured logging, one JSON object per line on stderr.
 *
 *   rl_log(RL_LOG_INFO, "listening", "{s:s,s:i}", "addr", host, "port", port);
 *
 * emits {"ts":"2026-11-23T07:40:01.123Z","level":"info","service":"api",
 *        "msg":"listening","addr":"127.0.0.1","port":8080}.
 * Thread-safe: each event is formatted privately and written with one write(2). */
#ifndef RL_LOG_H
#define RL_LOG_H

#include <stdbool.h>

#include "rl_status.h"

typedef enum {
    RL_LOG_ERROR = 0,
    RL_LOG_WARN,
    RL_LOG_INFO,
    RL_LOG_DEBUG,
    RL_LOG_TRACE,
} rl_log_level_t;

/* Parses "error", "warn", "info", "debug" or "trace" (case-insensitive).
 * RL_ERR_INVALID for anything else; *out untouched then. */
rl_status_t rl_log_level_parse(const char *s, rl_log_level_t *out);

/* Returns the lower-case name of a level. */
const char *rl_log_level_name(rl_log_level_t level);

/* Sets the service name stamped on every line (borrowed: must outlive logging)
 * and the most verbose level written. Call once at startup; before it the
 * service is "renlayer" and the level info. */
void rl_log_init(const char *service, rl_log_level_t level);

/* Redirects output to fd (default 2). For tests. */
void rl_log_set_fd(int fd);

/* True when events at level would be written: guard costly field building. */
bool rl_log_enabled(rl_log_level_t level);

/* Writes one event. fields_fmt is NULL or a jansson json_pack format that
 * builds an object ("{s:s,s:i}"); its keys are merged into the line. A broken
 * format still logs the message with a "log_error" field. */
void rl_log(rl_log_level_t level, const char *msg, const char *fields_fmt, ...);

#endif
