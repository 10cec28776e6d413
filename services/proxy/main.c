/* renlayer-proxy: the agents' data path. Authenticates each agent by its
 * RenLayer key, resolves its gate, forwards the call (streams included),
 * extracts usage and cost, and publishes decisions and traces to the bus.
 * Serves /healthz, /readyz and /metrics on the same port. */
#include <curl/curl.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "px_cache.h"
#include "px_engine.h"
#include "px_trace.h"
#include "rl_apikey.h"
#include "rl_log.h"
#include "rl_service.h"

typedef struct {
    uint8_t secret_key[32];
    long workers, max_connections, max_body, max_header, timeout_ms, connect_timeout_ms;
    long max_attempts, backoff_ms, idle_timeout_s, refresh_ms, body_max, drain_ms;
    long spool_max_mb;
    const char *decisions;
    const char *default_upstream, *openai_url, *anthropic_url, *spool_dir;
} proxy_config_t;

static proxy_config_t cfg;
/* Set once created, cleared before it is freed; read by the bus's ack
 * callback on a libnats thread. */
static _Atomic(px_publisher_t *) publisher;

static const rl_config_option_t options[] = {
    {"RENLAYER_SECRET_KEY", RL_CFG_HEXKEY, NULL, true,
     "32 bytes as 64 hex characters, the same as the api's", 0, 0, NULL, cfg.secret_key},
    {"RENLAYER_PROXY_WORKERS", RL_CFG_INT, "0", false,
     "worker threads, each with its own listener and upstream pool (0: one per core)", 0, 256,
     NULL, &cfg.workers},
    {"RENLAYER_PROXY_MAX_CONNECTIONS", RL_CFG_INT, "4096", false,
     "client connections at once, all workers together", 16, 1000000, NULL,
     &cfg.max_connections},
    {"RENLAYER_PROXY_MAX_BODY_BYTES", RL_CFG_INT, "10485760", false,
     "largest request body (413 beyond)", 1024, 1073741824, NULL, &cfg.max_body},
    {"RENLAYER_PROXY_MAX_HEADER_BYTES", RL_CFG_INT, "32768", false,
     "request line and headers per connection (431 beyond)", 4096, 1048576, NULL,
     &cfg.max_header},
    {"RENLAYER_UPSTREAM_TIMEOUT_MS", RL_CFG_INT, "600000", false,
     "longest upstream transfer, streams included", 1000, 86400000, NULL, &cfg.timeout_ms},
    {"RENLAYER_UPSTREAM_CONNECT_TIMEOUT_MS", RL_CFG_INT, "10000", false,
     "longest upstream connect", 100, 600000, NULL, &cfg.connect_timeout_ms},
    {"RENLAYER_UPSTREAM_MAX_ATTEMPTS", RL_CFG_INT, "3", false,
     "upstream attempts per request along the gate's fallback chain", 1, 8, NULL,
     &cfg.max_attempts},
    {"RENLAYER_UPSTREAM_RETRY_BACKOFF_MS", RL_CFG_INT, "100", false,
     "pause before the first retry, doubled for each further one", 0, 60000, NULL,
     &cfg.backoff_ms},
    {"RENLAYER_CLIENT_IDLE_TIMEOUT_S", RL_CFG_INT, "120", false,
     "idle keep-alive client connections are closed after this", 1, 86400, NULL,
     &cfg.idle_timeout_s},
    {"RENLAYER_DEFAULT_UPSTREAM", RL_CFG_URL, NULL, false,
     "base URL for gates that name none, whatever their kind", 0, 0, "http,https",
     &cfg.default_upstream},
    {"RENLAYER_OPENAI_URL", RL_CFG_URL, "https://api.openai.com", false,
     "default base URL of openai gates", 0, 0, "http,https", &cfg.openai_url},
    {"RENLAYER_ANTHROPIC_URL", RL_CFG_URL, "https://api.anthropic.com", false,
     "default base URL of anthropic gates", 0, 0, "http,https", &cfg.anthropic_url},
    {"RENLAYER_SPOOL_DIR", RL_CFG_STRING, "/var/tmp/renlayer-proxy-spool", false,
     "folder of the on-disk spool that keeps traces while NATS is unreachable", 0, 0, NULL,
     &cfg.spool_dir},
    {"RENLAYER_SPOOL_MAX_MB", RL_CFG_INT, "1024", false, "largest spool on disk", 1, 1048576,
     NULL, &cfg.spool_max_mb},
    {"RENLAYER_TRACE_BODY_MAX_BYTES", RL_CFG_INT, "16384", false,
     "request and response bodies in traces are truncated to this", 0, 16777216, NULL,
     &cfg.body_max},
    {"RENLAYER_CONFIG_REFRESH_MS", RL_CFG_INT, "60000", false,
     "full reload of keys, agents and gates (NOTIFY applies changes at once)", 1000, 86400000,
     NULL, &cfg.refresh_ms},
    {"RENLAYER_PUBLISH_DECISIONS", RL_CFG_ENUM, "blocking", false,
     "`blocking`: a decision message for calls not forwarded as asked (denied, blocked; their "
     "trace follows too); `all`: also for every allowed call, whose trace carries the same verdict",
     0, 0, "blocking,all", &cfg.decisions},
    {"RENLAYER_DRAIN_TIMEOUT_MS", RL_CFG_INT, "10000", false,
     "on SIGTERM, how long requests in flight may take to finish", 0, 600000, NULL,
     &cfg.drain_ms},
};

static void on_ack_failure(rl_bus_t *bus, const rl_bus_nack_t *nack, void *ctx)
{
    (void)bus;
    (void)ctx;
    px_publisher_t *pub = atomic_load(&publisher);
    if (pub)
        px_publisher_nack(pub, nack);
}

static px_cache_t *cache;

static bool cache_loaded(rl_service_t *svc, void *ctx)
{
    (void)svc;
    (void)ctx;
    return cache && px_cache_loaded(cache);
}

/* Two descriptors per request (client and upstream) and some room. */
static void raise_fd_limit(long connections)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = (rlim_t)(connections * 2 + 256);
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    const rl_service_spec_t spec = {
        .name = "proxy",
        .default_listen_addr = "127.0.0.1:8080",
        .uses_db = true,
        .uses_bus = true,
        .options = options,
        .noptions = sizeof options / sizeof options[0],
        .own_listener = true,
        .bus_ack_failure = on_ack_failure,
        .extra_check_name = "config",
        .extra_check = cache_loaded,
    };
    rl_service_t *svc = NULL;
    rl_status_t st = rl_service_start(&spec, argc, argv, &svc);
    if (st == RL_ERR_NOT_FOUND)
        return EXIT_SUCCESS; /* --help-config */
    if (st != RL_OK)
        return EXIT_FAILURE;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    raise_fd_limit(cfg.max_connections);
    /* per-request buffers come and go: keep freed memory instead of handing
     * it back to the kernel and faulting it in again on the next request */
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_MMAP_THRESHOLD, 4 << 20);

    uint8_t hash_key[32];
    rl_apikey_derive_hash_key(cfg.secret_key, hash_key);
    px_cache_options_t co = {
        .database_url = rl_service_database_url(svc),
        .secret_key = cfg.secret_key,
        .hash_key = hash_key,
        .refresh_interval_ms = cfg.refresh_ms,
        .metrics = rl_service_metrics(svc),
    };
    px_publisher_options_t po = {
        .bus = rl_service_bus(svc),
        .spool_dir = cfg.spool_dir,
        .spool_max_bytes = (int64_t)cfg.spool_max_mb << 20,
        .body_max_bytes = (size_t)cfg.body_max,
        .metrics = rl_service_metrics(svc),
    };
    px_engine_t *engine = NULL;
    px_publisher_t *pub = NULL;
    st = px_cache_create(&co, &cache);
    if (st == RL_OK)
        st = px_publisher_create(&po, &pub);
    if (st == RL_OK)
        atomic_store(&publisher, pub);
    if (st == RL_OK) {
        px_engine_options_t eo = {
            .listen_addr = rl_service_listen_addr(svc),
            .workers = (unsigned)cfg.workers,
            .max_connections = (unsigned)cfg.max_connections,
            .max_body = (size_t)cfg.max_body,
            .max_header_bytes = (size_t)cfg.max_header,
            .upstream_timeout_ms = cfg.timeout_ms,
            .connect_timeout_ms = cfg.connect_timeout_ms,
            .client_idle_timeout_s = cfg.idle_timeout_s,
            .max_attempts = (int)cfg.max_attempts,
            .retry_backoff_ms = cfg.backoff_ms,
            .default_upstream = cfg.default_upstream,
            .openai_url = cfg.openai_url,
            .anthropic_url = cfg.anthropic_url,
            .hash_key = hash_key,
            .decisions_for_allowed = cfg.decisions && strcmp(cfg.decisions, "all") == 0,
            .cache = cache,
            .publisher = pub,
            .service = svc,
            .metrics = rl_service_metrics(svc),
        };
        st = px_engine_start(&eo, &engine);
    }
    if (st != RL_OK) {
        rl_log(RL_LOG_ERROR, "startup failed", "{s:s,s:s}", "status", rl_status_str(st), "detail",
               rl_error_last());
    } else {
        rl_log(RL_LOG_INFO, "listening", "{s:s,s:i,s:i}", "addr", rl_service_listen_addr(svc),
               "port", (int)px_engine_port(engine), "workers",
               (int)(cfg.workers ? cfg.workers : sysconf(_SC_NPROCESSORS_ONLN)));
        rl_service_run(svc);
    }
    /* Threads that count into the service's metrics stop before
     * rl_service_stop frees the registry. The publisher's threads stop
     * first (its queue to the bus or the spool, acks awaited); its spool
     * stays open while the bus is destroyed, which reports every message
     * still unacked through on_ack_failure, so those are spooled too. The
     * cache goes after the readiness monitor, which asks it. */
    px_engine_stop(engine, cfg.drain_ms);
    px_publisher_stop(pub);
    rl_service_quiesce(svc);
    px_cache_destroy(cache);
    cache = NULL;
    rl_service_stop(svc);
    atomic_store(&publisher, NULL);
    px_publisher_destroy(pub);
    curl_global_cleanup();
    return st == RL_OK ? EXIT_SUCCESS : EXIT_FAILURE;
}
