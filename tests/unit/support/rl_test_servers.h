/* rl_test_servers: what the unit tests that run against real servers share:
 * bounded polling, the source tree's files, and private PostgreSQL and
 * nats-server instances, each on a free port in a temporary folder of its own.
 *
 * Servers never outlive the test program: every fixture is registered, and an
 * atexit handler stops what still runs and removes the folders. When the
 * program dies without running it (abort, a sanitizer's report, SIGKILL), a
 * nats-server dies with the thread that started it (PR_SET_PDEATHSIG), and a
 * detached reaper shell per fixture, waiting for the program to go, stops
 * PostgreSQL (which tests/harness/pg.sh daemonises) and removes the folder.
 * A test's teardown should still destroy its fixtures (or stop the server),
 * so each test starts from a known state.
 *
 * Not thread-safe: create, start, stop and destroy fixtures from the test's
 * main thread. Failures return an rl_status_t with context in rl_error_last(). */
#ifndef RL_TEST_SERVERS_H
#define RL_TEST_SERVERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rl_status.h"

/* Bound of the wait for a nats-server to answer or to exit, in milliseconds
 * (pg.sh bounds its own waits at 60 s). */
#define RL_TEST_SERVER_WAIT_MS 20000

/* Milliseconds on the monotonic clock. */
int64_t rl_test_now_ms(void);

/* Sleeps ms milliseconds. */
void rl_test_sleep_ms(int ms);

/* Polls cond(arg) every 5 ms until it holds (true) or timeout_ms pass (false).
 * cond is called at least once. */
bool rl_test_wait_until(bool (*cond)(void *arg), void *arg, int64_t timeout_ms);

/* Writes <source root>/rel into buf: the root is $RL_SOURCE_DIR, else found
 * from this file's own path (CMake compiles it with an absolute one). False
 * when the path does not fit len or is not readable. */
bool rl_test_source_path(const char *rel, char *buf, size_t len);

/* ---- PostgreSQL (tests/harness/pg.sh) ---- */

typedef struct rl_test_pg rl_test_pg_t;

/* Initialises a cluster in a new folder /tmp/<name>.XXXXXX (name borrowed)
 * with a free port chosen; it does not start it. *out is set only on success
 * (free with rl_test_pg_destroy). Errors: RL_ERR_NOT_FOUND (no pg.sh),
 * RL_ERR_IO (folder, port or initdb failed), RL_ERR_NOMEM. */
rl_status_t rl_test_pg_create(const char *name, rl_test_pg_t **out);

/* Starts the server and waits until it answers; a running server is left
 * alone (RL_OK). RL_ERR_UNAVAILABLE when pg.sh start fails. */
rl_status_t rl_test_pg_start(rl_test_pg_t *pg);

/* Begins a start in the background (for a test that connects meanwhile);
 * rl_test_pg_start_wait() finishes it. RL_ERR_CONFLICT when the server runs
 * or a start is under way, RL_ERR_IO when bash cannot be spawned. */
rl_status_t rl_test_pg_start_async(rl_test_pg_t *pg);

/* Waits for the start that rl_test_pg_start_async() began: RL_OK once the
 * server answers, RL_ERR_UNAVAILABLE when it failed, RL_ERR_CONFLICT when no
 * start was under way. */
rl_status_t rl_test_pg_start_wait(rl_test_pg_t *pg);

/* Stops the server (fast shutdown) and waits until it is gone; the data
 * stays. Stopping a stopped server is RL_OK. */
rl_status_t rl_test_pg_stop(rl_test_pg_t *pg);

/* Stops and starts the server on the same port with the same data. */
rl_status_t rl_test_pg_restart(rl_test_pg_t *pg);

/* True between a successful start and the next stop. */
bool rl_test_pg_running(const rl_test_pg_t *pg);

/* "postgresql://renlayer@127.0.0.1:<port>/postgres"; valid until destroy. */
const char *rl_test_pg_url(const rl_test_pg_t *pg);

/* Stops the server, removes its folder and frees pg. NULL does nothing. */
void rl_test_pg_destroy(rl_test_pg_t *pg);

/* ---- nats-server with JetStream ---- */

typedef struct rl_test_nats rl_test_nats_t;

/* Makes a folder /tmp/<name>.XXXXXX (name borrowed) and chooses a free port;
 * it does not start the server. *out is set only on success (free with
 * rl_test_nats_destroy). Errors: RL_ERR_IO, RL_ERR_NOMEM. */
rl_status_t rl_test_nats_create(const char *name, rl_test_nats_t **out);

/* Starts nats-server -js on 127.0.0.1 with its store in <dir>/js and its log
 * in <dir>/nats.log, and waits until the port answers; a running server is
 * left alone (RL_OK). RL_ERR_IO when it cannot be spawned, RL_ERR_UNAVAILABLE
 * when it exits or does not answer within RL_TEST_SERVER_WAIT_MS. */
rl_status_t rl_test_nats_start(rl_test_nats_t *n);

/* Stops the server (SIGTERM, SIGKILL after RL_TEST_SERVER_WAIT_MS), resuming
 * it first when paused; the store stays. Stopping a stopped server is RL_OK. */
rl_status_t rl_test_nats_stop(rl_test_nats_t *n);

/* Stops and starts the server on the same port with the same store. */
rl_status_t rl_test_nats_restart(rl_test_nats_t *n);

/* Freezes the running server (SIGSTOP) and returns once all its threads are
 * stopped: it keeps its connections and answers nothing. RL_ERR_CONFLICT when
 * it does not run. */
rl_status_t rl_test_nats_pause(rl_test_nats_t *n);

/* Lets a paused server go on (SIGCONT). RL_ERR_CONFLICT when not paused. */
rl_status_t rl_test_nats_resume(rl_test_nats_t *n);

/* True between a successful start and the next stop. */
bool rl_test_nats_running(const rl_test_nats_t *n);

/* True between a pause and the next resume or stop. */
bool rl_test_nats_paused(const rl_test_nats_t *n);

/* "nats://127.0.0.1:<port>"; valid until destroy. */
const char *rl_test_nats_url(const rl_test_nats_t *n);

/* The fixture's folder, where a test may keep files of its own (a spool);
 * removed by destroy. Valid until destroy. */
const char *rl_test_nats_dir(const rl_test_nats_t *n);

/* Stops the server, removes its folder and frees n. NULL does nothing. */
void rl_test_nats_destroy(rl_test_nats_t *n);

#endif
