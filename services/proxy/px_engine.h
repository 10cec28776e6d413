/* px_engine: the proxy's data path. One thread per core, each owning its own
 * libmicrohttpd daemon (external epoll loop, SO_REUSEPORT on the shared
 * port) and its own libcurl multi driven by curl_multi_socket_action: a
 * request never changes threads. A connection is suspended while its
 * upstream call is in flight; streamed responses pass through as they
 * arrive. See docs/proxy.md. */
#ifndef PX_ENGINE_H
#define PX_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "px_cache.h"
#include "px_trace.h"
#include "rl_metrics.h"
#include "rl_service.h"
#include "rl_status.h"

typedef struct px_engine px_engine_t;

typedef struct {
    const char *listen_addr;      /* host:port; port 0 picks one */
    unsigned workers;             /* threads; 0: the number of cores */
    unsigned max_connections;     /* client connections in all, split among workers */
    size_t max_body;              /* request body bytes; larger gets 413 */
    size_t max_header_bytes;      /* request line + headers; larger gets 431 */
    long upstream_timeout_ms;     /* whole upstream transfer */
    long connect_timeout_ms;      /* upstream connect */
    long client_idle_timeout_s;   /* idle keep-alive client connections */
    int max_attempts;             /* upstream attempts per request, fallbacks included */
    long retry_backoff_ms;        /* first pause before a retry, doubled per attempt */
    const char *default_upstream; /* base URL for gates without one (any kind); NULL: by kind */
    const char *openai_url;       /* default base URL of openai gates */
    const char *anthropic_url;    /* default base URL of anthropic gates */
    const uint8_t *hash_key;      /* 32 bytes: keyed hash of presented API keys */
    bool decisions_for_allowed;   /* publish a decision message for ALLOWED calls too (their
                                     trace carries the same verdict) */
    px_cache_t *cache;            /* borrowed */
    px_publisher_t *publisher;    /* borrowed */
    rl_service_t *service;        /* borrowed: readiness for /readyz */
    rl_metrics_t *metrics;        /* borrowed: served on /metrics */
} px_engine_options_t;

/* Binds the listener and starts the workers. *out set only on success.
 * RL_ERR_INVALID for a bad address, RL_ERR_IO when it cannot listen. */
rl_status_t px_engine_start(const px_engine_options_t *opts, px_engine_t **out);

/* The bound port. */
unsigned px_engine_port(const px_engine_t *engine);

/* Stops accepting, lets requests in flight finish (bounded by
 * drain_timeout_ms), stops the workers and frees. NULL does nothing. */
void px_engine_stop(px_engine_t *engine, long drain_timeout_ms);

#endif
