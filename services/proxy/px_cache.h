/* px_cache: the proxy's in-memory copy of the configuration it needs on the
 * request path — API keys (by keyed hash), agents, gates (injected header
 * values decrypted in memory), tenants, prices, compiled policy sets (each
 * agent points at its effective set) and one DLP engine per tenant with
 * custom rules or overrides (the others share a default) — loaded from PostgreSQL and
 * kept current by LISTEN/NOTIFY on channel `renlayer_config`, with a
 * periodic full refresh as the safety net.
 *
 * A load builds a complete new snapshot and swaps it in atomically; readers
 * hold a reference to the snapshot they started with, so no request ever
 * sees a half-built configuration. Snapshots are immutable and
 * reference-counted. When the database is unreachable the last snapshot keeps
 * serving (fail open); px_cache_db_up() tells the engine, which refuses the
 * requests of fail-closed tenants.
 *
 * Threads: px_cache_acquire/px_snapshot_* are safe from any thread and never
 * block on the database; loading runs on the cache's own thread. */
#ifndef PX_CACHE_H
#define PX_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "px_types.h"
#include "rl_metrics.h"
#include "rl_status.h"

typedef struct px_cache px_cache_t;
typedef struct px_snapshot px_snapshot_t;

typedef struct {
    const char *database_url;       /* borrowed during create */
    const uint8_t *secret_key;      /* 32 bytes: opens sealed gate header values */
    const uint8_t *hash_key;        /* 32 bytes: rl_apikey_derive_hash_key(secret_key) */
    long refresh_interval_ms;       /* full reload period; 0: 60000 */
    long debounce_ms;               /* wait after a notification to batch a burst; 0: 20 */
    rl_metrics_t *metrics;          /* where renlayer_proxy_config_* go; NULL: nowhere */
} px_cache_options_t;

/* Starts the loader thread (first load, LISTEN, periodic refresh). Returns at
 * once; px_cache_loaded() turns true after the first successful load.
 * *out set only on success. RL_ERR_INVALID, RL_ERR_NOMEM, RL_ERR_IO. */
rl_status_t px_cache_create(const px_cache_options_t *opts, px_cache_t **out);

/* Stops the thread and frees everything (snapshots still referenced are
 * freed by their last release). NULL does nothing. */
void px_cache_destroy(px_cache_t *cache);

/* True once a snapshot has been loaded. */
bool px_cache_loaded(px_cache_t *cache);

/* True while the LISTEN connection is up and the last load succeeded (either
 * failing means the snapshot may be stale). */
bool px_cache_db_up(px_cache_t *cache);

/* Increases with every swapped-in snapshot: a worker compares it with the
 * generation of the snapshot it holds to know when to re-acquire. */
uint64_t px_cache_generation(px_cache_t *cache);

/* Forces a full reload now and waits until it is done (or fails). For tests
 * and admin use; never on the request path. */
rl_status_t px_cache_reload(px_cache_t *cache);

/* What the cache has done, for /metrics and /readyz. */
typedef struct {
    uint64_t loads;           /* successful loads (snapshots swapped in) */
    uint64_t load_failures;   /* failed loads */
    uint64_t notifications;   /* notifications received on renlayer_config */
    uint64_t headers_skipped; /* gate header values in the current snapshot that did not open */
    int64_t last_load_us;     /* duration of the last successful load */
    int64_t last_success_ms;  /* Unix ms of the last successful load; 0: none */
    char last_error[256];     /* why the last load failed; "" after a success */
} px_cache_stats_t;

/* Copies the counters into *out. Thread-safe. */
void px_cache_stats(px_cache_t *cache, px_cache_stats_t *out);

/* Returns a reference to the current snapshot (NULL before the first load).
 * Release it with px_snapshot_release. Cheap; never blocks on I/O. */
px_snapshot_t *px_cache_acquire(px_cache_t *cache);

/* Drops a reference; the last one frees the snapshot (even after
 * px_cache_destroy). NULL does nothing. */
void px_snapshot_release(px_snapshot_t *snap);

/* Takes one more reference to a snapshot the caller already holds one of
 * (lock-free), and returns it. NULL gives NULL. */
px_snapshot_t *px_snapshot_retain(px_snapshot_t *snap);

uint64_t px_snapshot_generation(const px_snapshot_t *snap);

/* The key whose keyed hash is hash, or NULL (unknown, revoked, or its agent
 * deleted). Expiry is the caller's check (expires_at_ms). */
const px_key_t *px_snapshot_find_key(const px_snapshot_t *snap, const uint8_t hash[32]);

/* A gate of agent by name (case-sensitive) or id; NULL when none. */
const px_gate_t *px_snapshot_find_gate(const px_agent_t *agent, const char *name_or_id);

/* The price of model for tenant_id: the tenant's own price, else the list
 * price; exact name first, else the longest "<priced model>-" prefix
 * (gpt-4o-mini-2024-07-18 -> gpt-4o-mini). NULL when unpriced. */
const px_price_t *px_snapshot_price(const px_snapshot_t *snap, const char *tenant_id,
                                    const char *model);

/* Counts for /metrics: keys, agents, gates in the snapshot. */
void px_snapshot_counts(const px_snapshot_t *snap, size_t *keys, size_t *agents, size_t *gates);

/* Cost in USD of usage at price (see docs/schema.md for the formula). */
double px_price_cost(const px_price_t *price, const px_usage_t *usage);

#endif
