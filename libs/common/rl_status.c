#include "rl_status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_error[512];
static _Thread_local size_t last_error_text; /* where the message starts, after "file:line: " */

const char *rl_status_str(rl_status_t s)
{
    switch (s) {
    case RL_OK: return "RL_OK";
    case RL_ERR_INVALID: return "RL_ERR_INVALID";
    case RL_ERR_NOMEM: return "RL_ERR_NOMEM";
    case RL_ERR_TOO_LARGE: return "RL_ERR_TOO_LARGE";
    case RL_ERR_NOT_FOUND: return "RL_ERR_NOT_FOUND";
    case RL_ERR_CONFLICT: return "RL_ERR_CONFLICT";
    case RL_ERR_UNAVAILABLE: return "RL_ERR_UNAVAILABLE";
    case RL_ERR_TIMEOUT: return "RL_ERR_TIMEOUT";
    case RL_ERR_CRYPTO: return "RL_ERR_CRYPTO";
    case RL_ERR_IO: return "RL_ERR_IO";
    case RL_ERR_INTERNAL: return "RL_ERR_INTERNAL";
    }
    return "RL_ERR_UNKNOWN";
}

rl_status_t rl_error_at(rl_status_t s, const char *file, int line, const char *fmt, ...)
{
    const char *base = strrchr(file, '/');
    int n = snprintf(last_error, sizeof last_error, "%s:%d: ", base ? base + 1 : file, line);
    if (n < 0 || (size_t)n >= sizeof last_error)
        n = 0;
    last_error_text = (size_t)n;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error + n, sizeof last_error - (size_t)n, fmt, ap);
    va_end(ap);
    return s;
}

const char *rl_error_last(void)
{
    return last_error;
}

const char *rl_error_message(void)
{
    return last_error + last_error_text;
}

void rl_error_clear(void)
{
    last_error[0] = '\0';
    last_error_text = 0;
}
