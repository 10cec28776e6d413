/* rl_status: the one status type every fallible function in RenLayer returns,
 * and a per-thread error context that records what went wrong where. */
#ifndef RL_STATUS_H
#define RL_STATUS_H

typedef enum {
    RL_OK = 0,
    RL_ERR_INVALID,     /* the input is malformed or out of range */
    RL_ERR_NOMEM,       /* an allocation failed */
    RL_ERR_TOO_LARGE,   /* the input exceeds a configured bound */
    RL_ERR_NOT_FOUND,   /* the thing asked for does not exist */
    RL_ERR_CONFLICT,    /* the thing exists already, or a state forbids it */
    RL_ERR_UNAVAILABLE, /* a dependency (database, bus, upstream) does not answer */
    RL_ERR_TIMEOUT,     /* a bounded wait ran out */
    RL_ERR_CRYPTO,      /* a cryptographic operation or verification failed */
    RL_ERR_IO,          /* a system call failed */
    RL_ERR_INTERNAL,    /* a broken invariant: a bug */
} rl_status_t;

/* Returns the constant name of s ("RL_ERR_INVALID"); never NULL. */
const char *rl_status_str(rl_status_t s);

/* Records a human-readable context for the calling thread's latest error and
 * returns s, so a failing path reads `return rl_error(RL_ERR_INVALID, "...")`.
 * The message is truncated to 512 bytes. Thread-safe (per-thread storage). */
rl_status_t rl_error_at(rl_status_t s, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define rl_error(s, ...) rl_error_at((s), __FILE__, __LINE__, __VA_ARGS__)

/* The calling thread's latest error context ("" if none); valid until the next
 * rl_error() on this thread. */
const char *rl_error_last(void);

/* The same message without its "file:line: " location: what a client or an
 * operator is shown (an HTTP error body, a stored failure). */
const char *rl_error_message(void);

/* Clears the calling thread's error context. */
void rl_error_clear(void);

#endif
