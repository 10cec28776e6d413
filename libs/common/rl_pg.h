/* rl_pg: RenLayer's PostgreSQL access on libpq. A connection object that
 * connects lazily and reconnects by itself, a fixed-size thread-safe pool of
 * them, a LISTEN/NOTIFY listener thread with its own connection, and session
 * advisory locks (the migrator's).
 *
 * User data reaches the server only as statement parameters (rl_pg_query);
 * rl_pg_exec_simple() is for constant statements written in our own code.
 *
 * A failed statement maps to a status as follows (its SQLSTATE is kept for
 * rl_pg_sqlstate(), and the primary message is recorded with rl_error()):
 *   connection lost, class 08, 57P01..57P03   RL_ERR_UNAVAILABLE
 *   23505 unique_violation                     RL_ERR_CONFLICT
 *   40001, 40P01 (serialization, deadlock)     RL_ERR_CONFLICT: retry the transaction
 *   57014 query_canceled (statement_timeout)   RL_ERR_TIMEOUT
 *   other class 22 and 23 (data, constraints)  RL_ERR_INVALID
 *   anything else (42601 syntax error, ...)    RL_ERR_IO
 *   client-side query_timeout_ms ran out       RL_ERR_TIMEOUT (the connection is closed)
 *
 * Reconnection. A connection found dead (before a statement, by a cheap
 * non-blocking read) is replaced by one new connection attempt. A statement
 * that failed because the connection went away is retried once on a new
 * connection only when it cannot have taken effect: the server said it ended
 * the session (SQLSTATE 57P01..57P03 or class 08) or the statement was never
 * sent, no transaction was open and no session advisory lock was held. A
 * connection lost inside a transaction, or while holding advisory locks, is
 * not silently replaced: statements fail with RL_ERR_UNAVAILABLE until the
 * caller acknowledges with rl_pg_rollback() / rl_pg_commit() (transaction) or
 * rl_pg_advisory_unlock() for each lock (locks), or calls rl_pg_reset().
 *
 * Threads: an rl_pg_t is used by one thread at a time (like a PGconn); the
 * pool and the listener are thread-safe. Library code here never logs. */
#ifndef RL_PG_H
#define RL_PG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "rl_status.h"

/* Most channels one listener listens on. */
#define RL_PG_LISTENER_MAX_CHANNELS 64
/* Longest channel name, in bytes (PostgreSQL's identifier limit). */
#define RL_PG_CHANNEL_MAX 63
/* Largest pool. */
#define RL_PG_POOL_MAX 1024

typedef struct rl_pg rl_pg_t;
typedef struct rl_pg_pool rl_pg_pool_t;
typedef struct rl_pg_listener rl_pg_listener_t;

/* Options of rl_pg_create() and rl_pg_pool_create(). Zero means the default;
 * the struct is borrowed during the call only (strings are copied). */
typedef struct {
    const char *application_name; /* shown in pg_stat_activity; default: the conninfo's,
                                     else "renlayer" */
    int connect_timeout_ms;       /* bound on one connection attempt; default 5000 (also
                                    sent as libpq connect_timeout, in whole seconds, min 2) */
    int backoff_min_ms;           /* first pause between connection attempts; default 100 */
    int backoff_max_ms;           /* pause cap (doubled per attempt, jittered to 50..100%);
                                    default 5000 */
    int query_timeout_ms;         /* client-side bound on one statement; default 0: none (put
                                    `options=-c statement_timeout=N` in the conninfo for a
                                    server-side one) */
    int ping_timeout_ms;          /* rl_pg_ping() with timeout 0; default 2000 */
    int keepalive_idle_s;         /* TCP keepalive idle time unless the conninfo sets
                                    keepalives_*; default 30 (then every 10 s, 3 probes) */
} rl_pg_options_t;

/* ---- connection ---------------------------------------------------------- */

/* Creates a connection object without connecting (the first statement or
 * rl_pg_connect() does), so it succeeds while the server is down. conninfo is
 * a libpq URI or key=value string (copied). *out is set only on success (free
 * with rl_pg_destroy). RL_ERR_INVALID for a malformed conninfo or bad options,
 * RL_ERR_NOMEM. */
rl_status_t rl_pg_create(const char *conninfo, const rl_pg_options_t *opts, rl_pg_t **out);

/* Closes the connection and frees pg. NULL does nothing. */
void rl_pg_destroy(rl_pg_t *pg);

/* Ensures a live connection, retrying with exponential backoff and jitter
 * until deadline_ms milliseconds from now have passed; deadline_ms <= 0 makes
 * one attempt bounded by connect_timeout_ms. RL_OK at once when connected.
 * RL_ERR_UNAVAILABLE (with libpq's last reason) when the deadline passes. */
rl_status_t rl_pg_connect(rl_pg_t *pg, int deadline_ms);

/* True when pg holds a connection that was alive at its last use. No I/O. */
bool rl_pg_is_connected(const rl_pg_t *pg);

/* Runs one statement with text parameters ($1..$n; values[i] NULL is SQL
 * NULL; values borrowed during the call). On RL_OK *out is an owned PGresult
 * (PGRES_TUPLES_OK or PGRES_COMMAND_OK; free with PQclear); otherwise *out is
 * untouched and the status follows the table at the top of this file.
 * Connects (one attempt) if needed. COPY is refused with RL_ERR_INVALID (use
 * rl_pg_conn). RL_ERR_INVALID also for sql NULL or nparams < 0. */
rl_status_t rl_pg_query(rl_pg_t *pg, const char *sql, int nparams, const char *const *values,
                        PGresult **out);

/* Rows a command touched (PQcmdTuples: INSERT, UPDATE, DELETE, COPY...);
 * 0 for a command that reports none or an unreadable count. */
uint64_t rl_pg_rows_affected(const PGresult *r);

/* The integer in (row, col): false when it is out of range, SQL NULL or not
 * a whole base-10 integer (then *out is untouched). */
bool rl_pg_get_i64(const PGresult *r, int row, int col, int64_t *out);

/* Runs constant SQL written in our own code (DDL, SET, a migration file; it
 * may hold several statements) over the simple query protocol, discarding
 * results. Never build sql from user data: use rl_pg_query() parameters.
 * Not retried after it was sent. Errors as rl_pg_query(). */
rl_status_t rl_pg_exec_simple(rl_pg_t *pg, const char *sql);

/* Opens a transaction. RL_ERR_CONFLICT if one is open already. */
rl_status_t rl_pg_begin(rl_pg_t *pg);

/* Commits the open transaction. RL_ERR_CONFLICT when none is open, or when it
 * had failed (the server rolled it back); RL_ERR_UNAVAILABLE when the
 * connection was lost inside it (nothing committed) or during the COMMIT (the
 * outcome is unknown: the message says which). Either way the transaction is
 * over afterwards. */
rl_status_t rl_pg_commit(rl_pg_t *pg);

/* Rolls back the open transaction; RL_OK when none is open or it ended with a
 * lost connection (the server rolled it back). */
rl_status_t rl_pg_rollback(rl_pg_t *pg);

/* Checks that the server answers: connects if needed (one attempt), then runs
 * SELECT 1; the whole bounded by timeout_ms (<= 0: ping_timeout_ms). RL_OK,
 * RL_ERR_UNAVAILABLE or RL_ERR_TIMEOUT. Meant for /readyz on an idle object. */
rl_status_t rl_pg_ping(rl_pg_t *pg, int timeout_ms);

/* Closes the connection and forgets lost transactions and advisory locks: pg
 * is as new (it reconnects on next use). */
void rl_pg_reset(rl_pg_t *pg);

/* The borrowed PGconn for COPY and other libpq-level work, NULL while not
 * connected (call rl_pg_connect first). Valid until the next rl_pg_* call on
 * pg. Leave it idle and outside a transaction you did not open through rl_pg;
 * never PQfinish it. */
PGconn *rl_pg_conn(rl_pg_t *pg);

/* The 5-character SQLSTATE of the latest failed statement on pg, "" when the
 * latest call succeeded or failed on the client side (no server answer).
 * Valid until the next call on pg. */
const char *rl_pg_sqlstate(const rl_pg_t *pg);

/* ---- session advisory locks ---------------------------------------------- */

/* Takes session-level advisory lock key (pg_advisory_lock), waiting while
 * another session holds it (bounded only by query_timeout_ms). Locks stack:
 * unlock as many times as locked. If the connection is lost the locks are
 * gone; see the top of this file. */
rl_status_t rl_pg_advisory_lock(rl_pg_t *pg, int64_t key);

/* Takes lock key if free now: *acquired true if taken, false if another
 * session holds it (pg_try_advisory_lock). */
rl_status_t rl_pg_advisory_try_lock(rl_pg_t *pg, int64_t key, bool *acquired);

/* Releases one hold of lock key. RL_ERR_NOT_FOUND if this session does not
 * hold it; RL_ERR_UNAVAILABLE if it was lost with the connection (this call
 * acknowledges the loss of one lock). */
rl_status_t rl_pg_advisory_unlock(rl_pg_t *pg, int64_t key);

/* ---- pool ------------------------------------------------------------------ */

/* A snapshot of a pool, for /metrics. */
typedef struct {
    int size;          /* connection objects in the pool */
    int in_use;        /* acquired now */
    int waiting;       /* threads waiting in rl_pg_pool_acquire() now */
    uint64_t timeouts; /* acquires that ran out of time since creation */
} rl_pg_pool_stats_t;

/* Creates a pool of size (1..RL_PG_POOL_MAX) connection objects that connect
 * lazily. *out is set only on success (free with rl_pg_pool_destroy).
 * RL_ERR_INVALID for a bad size, conninfo or options; RL_ERR_NOMEM. */
rl_status_t rl_pg_pool_create(const char *conninfo, int size, const rl_pg_options_t *opts,
                              rl_pg_pool_t **out);

/* Frees the pool and closes its connections. Every acquired connection must
 * have been released. NULL does nothing. */
void rl_pg_pool_destroy(rl_pg_pool_t *pool);

/* Takes a free connection object, waiting up to wait_ms (>= 0) for one to be
 * released. *out is borrowed until rl_pg_pool_release(); it may be
 * disconnected (it connects on first use). RL_ERR_TIMEOUT when none was free
 * in time. Thread-safe. */
rl_status_t rl_pg_pool_acquire(rl_pg_pool_t *pool, int wait_ms, rl_pg_t **out);

/* Gives pg back and wakes one waiter. A connection left inside a transaction
 * is rolled back (bounded by ping_timeout_ms); one that is broken, busy, or
 * lost a transaction or advisory locks is reset. Other session state (SET,
 * LISTEN, held advisory locks) is the caller's to undo: holders of advisory
 * locks are reset. Does not touch the caller's rl_error context. NULL, or a pg
 * not acquired from this pool, does nothing. Thread-safe. */
void rl_pg_pool_release(rl_pg_pool_t *pool, rl_pg_t *pg);

/* Fills *out with a consistent snapshot. Thread-safe. */
void rl_pg_pool_stats(rl_pg_pool_t *pool, rl_pg_pool_stats_t *out);

/* ---- LISTEN/NOTIFY listener ------------------------------------------------ */

/* Callbacks run on the listener's thread, one at a time; strings are borrowed
 * for the call only. A callback may use other rl_pg objects but must not call
 * rl_pg_listener_destroy() on its own listener, and should return promptly:
 * notifications wait while it runs, and destroy waits for it. */
typedef struct {
    /* A notification on one of the channels (payload "" when none). Required. */
    void (*on_notify)(const char *channel, const char *payload, void *ctx);
    /* After every (re)connect, once LISTEN is in place on every channel:
     * notifications sent while disconnected are lost, so resync here; anything
     * committed after this call starts will be notified. Optional. */
    void (*on_connected)(void *ctx);
    /* The connection was lost (not called on destroy). Optional. */
    void (*on_disconnected)(void *ctx);
} rl_pg_listener_callbacks_t;

/* Starts a thread with its own connection that LISTENs on channels (n of
 * them, 1..RL_PG_LISTENER_MAX_CHANNELS; each 1..RL_PG_CHANNEL_MAX bytes of
 * [A-Za-z0-9_.$], not starting with a digit or '.' or '$'; matched exactly,
 * case included, as pg_notify() names them) and reports through cb (copied)
 * with ctx (borrowed until destroy). Returns at once: connecting, and
 * reconnecting with backoff forever (default rl_pg_options_t bounds), happen
 * on the thread. conninfo and channels are copied. *out is set only on success
 * (free with rl_pg_listener_destroy). RL_ERR_INVALID for a bad channel name,
 * count, conninfo or missing on_notify; RL_ERR_NOMEM; RL_ERR_IO if the thread
 * cannot start. */
rl_status_t rl_pg_listener_create(const char *conninfo, const char *const *channels, size_t n,
                                  const rl_pg_listener_callbacks_t *cb, void *ctx,
                                  rl_pg_listener_t **out);

/* Stops the thread and frees the listener. Returns once no callback is running
 * or will run: every wait of the thread (connect, LISTEN, socket, backoff) is
 * woken at once, so this takes only as long as a callback in progress. NULL
 * does nothing. */
void rl_pg_listener_destroy(rl_pg_listener_t *listener);

/* True while LISTEN is in place on a live connection. Thread-safe. */
bool rl_pg_listener_is_connected(const rl_pg_listener_t *listener);

#endif
