/* rl_metrics: a Prometheus registry of counters, gauges and histograms,
 * rendered in the text exposition format 0.0.4 for /metrics.
 *
 * Registration takes the registry's lock and is meant for startup (or the
 * first use of a label value); callers keep the returned pointers. Updating a
 * metric takes no lock: each is one or a few relaxed atomic operations, safe
 * from any thread. Rendering takes the lock and reads every value once, so a
 * scrape may see one update counted in a histogram's buckets but not yet in
 * its _sum.
 *
 * Keep labels low-cardinality (a status, a route, a stage): never tenant,
 * agent or request ids; those belong in traces. */
#ifndef RL_METRICS_H
#define RL_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "rl_status.h"

typedef struct rl_metrics rl_metrics_t;
typedef struct rl_counter rl_counter_t;
typedef struct rl_gauge rl_gauge_t;
typedef struct rl_histogram rl_histogram_t;

/* Bounds set where the registry is created (STYLE 6). */
#define RL_METRICS_MAX_SERIES 10000       /* metrics (name + labels) per registry */
#define RL_METRICS_MAX_NAME 128           /* bytes in a metric name */
#define RL_METRICS_MAX_LABELS 16          /* label pairs in one label set */
#define RL_METRICS_MAX_LABELS_LEN 1024    /* bytes in one label set */
#define RL_METRICS_MAX_HELP 1024          /* bytes of help text */
#define RL_METRICS_MAX_BUCKETS 64         /* histogram bounds, +Inf not counted */
#define RL_METRICS_RENDER_MAX (32u << 20) /* bytes of rendered text */

/* Histogram bounds for common units; the +Inf bucket is always implicit. */
#define RL_BUCKETS_LATENCY_SECONDS_N 15
/* 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 30 */
extern const double RL_BUCKETS_LATENCY_SECONDS[RL_BUCKETS_LATENCY_SECONDS_N];
#define RL_BUCKETS_MICROSECONDS_N 13
/* 10 25 50 100 250 500 1000 2500 5000 10000 25000 50000 100000: in-process stages */
extern const double RL_BUCKETS_MICROSECONDS[RL_BUCKETS_MICROSECONDS_N];
#define RL_BUCKETS_BYTES_N 9
/* 128 512 2 KiB 8 KiB 32 KiB 128 KiB 512 KiB 2 MiB 8 MiB: body and message sizes */
extern const double RL_BUCKETS_BYTES[RL_BUCKETS_BYTES_N];

/* Creates an empty registry; *out returns owned (free with rl_metrics_destroy).
 * RL_ERR_NOMEM; *out is then untouched. */
rl_status_t rl_metrics_create(rl_metrics_t **out);

/* Frees the registry and every metric in it; NULL does nothing. No other
 * thread may use the registry or its metrics any more. */
void rl_metrics_destroy(rl_metrics_t *m);

/* Registration, common to the three kinds.
 * name: [a-zA-Z_:][a-zA-Z0-9_:]*, at most RL_METRICS_MAX_NAME bytes.
 * help: free text, escaped when rendered; NULL for none. The first help given
 *   for a name is kept.
 * labels: NULL, "" or a preformatted label set, `name="value"` pairs joined
 *   by ',' with no spaces and no trailing comma, e.g. `status="200",method="GET"`.
 *   Label names are [a-zA-Z_][a-zA-Z0-9_]* and do not start with "__"; each
 *   appears once. Values are valid UTF-8, already escaped for the format:
 *   `\\`, `\"` and `\n` are the only escapes, a raw newline or carriage
 *   return is refused. The set is copied with its pairs sorted by label name,
 *   so the order in which they are given does not matter.
 * Same name and labels returns the existing metric. Returned metrics are
 * owned by the registry and valid until rl_metrics_destroy.
 * Errors: RL_ERR_INVALID for a bad name, label set or bounds;
 * RL_ERR_CONFLICT when the name is registered as another kind, or would clash
 * with a histogram's _bucket/_sum/_count series; RL_ERR_TOO_LARGE past a
 * RL_METRICS_MAX_* bound; RL_ERR_NOMEM. On error *out is untouched.
 * Thread-safe. */

/* Registers (or finds) a counter. */
rl_status_t rl_metrics_counter(rl_metrics_t *m, const char *name, const char *help,
                               const char *labels, rl_counter_t **out);

/* Registers (or finds) a gauge; it starts at 0. */
rl_status_t rl_metrics_gauge(rl_metrics_t *m, const char *name, const char *help,
                             const char *labels, rl_gauge_t **out);

/* Registers (or finds) a histogram with nbounds finite, strictly increasing
 * upper bounds (copied; bounds may be NULL when nbounds is 0); "+Inf" is
 * added. The label name "le" is reserved. Finding an existing histogram with
 * other bounds is RL_ERR_CONFLICT. */
rl_status_t rl_metrics_histogram(rl_metrics_t *m, const char *name, const char *help,
                                 const char *labels, const double *bounds, size_t nbounds,
                                 rl_histogram_t **out);

/* Adds n to the counter. Lock-free; NULL does nothing (metrics left
 * unregistered cost one branch). */
void rl_counter_add(rl_counter_t *c, uint64_t n);

/* Sets the gauge to v. Lock-free; NULL does nothing. */
void rl_gauge_set(rl_gauge_t *g, double v);

/* Adds delta (negative to decrease) to the gauge. Lock-free; NULL does nothing. */
void rl_gauge_add(rl_gauge_t *g, double delta);

/* Counts v in the first bucket whose bound is >= v and adds it to the sum.
 * NaN is ignored (it would poison the sum for good). Lock-free; NULL does
 * nothing. */
void rl_histogram_observe(rl_histogram_t *h, double v);

/* Renders every metric in the text exposition format 0.0.4: families in
 * registration order, each with "# HELP" (when help was given) and "# TYPE"
 * once, then its series in registration order; histograms as cumulative
 * _bucket{le="..."} lines ending with le="+Inf", then _sum and _count.
 * Numbers use the shortest text that reads back to the same double; the C
 * locale is assumed. *out returns owned, NUL-terminated text (free() it),
 * *len its length without the NUL. RL_ERR_TOO_LARGE past
 * RL_METRICS_RENDER_MAX, RL_ERR_NOMEM; *out and *len are then untouched.
 * Thread-safe. */
rl_status_t rl_metrics_render(rl_metrics_t *m, char **out, size_t *len);

#endif
