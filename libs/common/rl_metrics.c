#include "rl_metrics.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rl_buf.h"

const double RL_BUCKETS_LATENCY_SECONDS[RL_BUCKETS_LATENCY_SECONDS_N] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
};
const double RL_BUCKETS_MICROSECONDS[RL_BUCKETS_MICROSECONDS_N] = {
    10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000,
};
const double RL_BUCKETS_BYTES[RL_BUCKETS_BYTES_N] = {
    128, 512, 2048, 8192, 32768, 131072, 524288, 2097152, 8388608,
};

enum kind { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM };
static const char *const KIND_NAMES[] = {"counter", "gauge", "histogram"};

#define CACHE_LINE 64

struct rl_counter {
    _Atomic uint64_t value;
};

struct rl_gauge {
    _Atomic uint64_t bits; /* the value's IEEE 754 bit pattern */
};

struct rl_histogram {
    size_t nbounds;
    double *bounds;            /* owned: nbounds finite, strictly increasing */
    _Atomic uint64_t *buckets; /* owned: nbounds + 1 counts, not cumulative; the last is +Inf */
    _Atomic uint64_t sum_bits; /* the sum's IEEE 754 bit pattern */
};

/* One metric: a family's series for one label set. Cache-line aligned so two
 * hot metrics updated from different threads never share a line. */
struct series {
    alignas(CACHE_LINE) union {
        struct rl_counter counter;
        struct rl_gauge gauge;
        struct rl_histogram histogram;
    } u;
    struct series *next; /* in registration order */
    char *labels;        /* owned: canonical label set, "" for none */
};

/* Every series of one metric name. */
struct family {
    struct family *next; /* in registration order */
    enum kind kind;
    char *name; /* owned */
    char *help; /* owned; NULL when none was given */
    struct series *first, *last;
};

struct rl_metrics {
    pthread_mutex_t lock; /* guards the lists and nseries; updates never take it */
    struct family *first, *last;
    size_t nseries;
};

static uint64_t bits_of(double v)
{
    uint64_t b;
    memcpy(&b, &v, sizeof b);
    return b;
}

static double double_of(uint64_t b)
{
    double v;
    memcpy(&v, &b, sizeof v);
    return v;
}

/* Adds delta to the double stored as bits in *p; a CAS loop, as C11 has no
 * atomic floating-point add. */
static void add_double(_Atomic uint64_t *p, double delta)
{
    uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(p, &old, bits_of(double_of(old) + delta),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

void rl_counter_add(rl_counter_t *c, uint64_t n)
{
    if (c != NULL)
        atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

void rl_gauge_set(rl_gauge_t *g, double v)
{
    if (g != NULL)
        atomic_store_explicit(&g->bits, bits_of(v), memory_order_relaxed);
}

void rl_gauge_add(rl_gauge_t *g, double delta)
{
    if (g != NULL)
        add_double(&g->bits, delta);
}

void rl_histogram_observe(rl_histogram_t *h, double v)
{
    if (h == NULL || isnan(v))
        return;
    size_t lo = 0, hi = h->nbounds; /* find the first bound >= v; nbounds is +Inf */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (h->bounds[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    atomic_fetch_add_explicit(&h->buckets[lo], 1, memory_order_relaxed);
    add_double(&h->sum_bits, v);
}

rl_status_t rl_metrics_create(rl_metrics_t **out)
{
    rl_metrics_t *m = calloc(1, sizeof *m);
    if (m == NULL)
        return rl_error(RL_ERR_NOMEM, "metrics registry");
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        return rl_error(RL_ERR_NOMEM, "metrics registry lock");
    }
    *out = m;
    return RL_OK;
}

static void series_free(struct series *s, enum kind kind)
{
    if (s == NULL)
        return;
    if (kind == KIND_HISTOGRAM) {
        free(s->u.histogram.bounds);
        free(s->u.histogram.buckets);
    }
    free(s->labels);
    free(s);
}

static void family_free(struct family *f)
{
    struct series *s = f->first;
    while (s != NULL) {
        struct series *next = s->next;
        series_free(s, f->kind);
        s = next;
    }
    free(f->name);
    free(f->help);
    free(f);
}

void rl_metrics_destroy(rl_metrics_t *m)
{
    if (m == NULL)
        return;
    struct family *f = m->first;
    while (f != NULL) {
        struct family *next = f->next;
        family_free(f);
        f = next;
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static bool is_alpha_(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* True when s[0..n) is well-formed UTF-8: no overlong forms, surrogates or
 * code points past U+10FFFF. Prometheus refuses a whole scrape otherwise. */
static bool utf8_ok(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        uint32_t cp = s[i];
        size_t len;
        uint32_t min;
        if (cp < 0x80) {
            i++;
            continue;
        } else if ((cp & 0xe0) == 0xc0) {
            len = 2, cp &= 0x1f, min = 0x80;
        } else if ((cp & 0xf0) == 0xe0) {
            len = 3, cp &= 0x0f, min = 0x800;
        } else if ((cp & 0xf8) == 0xf0) {
            len = 4, cp &= 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

static rl_status_t check_name(const char *name)
{
    if (name == NULL || name[0] == '\0')
        return rl_error(RL_ERR_INVALID, "a metric needs a name");
    size_t n = strnlen(name, RL_METRICS_MAX_NAME + 1);
    if (n > RL_METRICS_MAX_NAME)
        return rl_error(RL_ERR_TOO_LARGE, "metric name longer than %d bytes", RL_METRICS_MAX_NAME);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!is_alpha_(c) && c != ':' && !(i > 0 && is_digit(c)))
            return rl_error(RL_ERR_INVALID, "metric name \"%s\": bad character at offset %zu", name,
                            i);
    }
    return RL_OK;
}

/* One `name="value"` pair inside the caller's label set. */
struct label_pair {
    const char *text;
    size_t namelen;
    size_t len; /* of the whole pair */
};

static int pair_cmp(const struct label_pair *a, const struct label_pair *b)
{
    size_t n = a->namelen < b->namelen ? a->namelen : b->namelen;
    int c = memcmp(a->text, b->text, n);
    if (c != 0)
        return c;
    return a->namelen < b->namelen ? -1 : a->namelen > b->namelen;
}

/* Checks the label set in (see rl_metrics.h; NULL is empty) and writes its
 * canonical form, pairs sorted by label name, to *out: returns owned
 * (free()). Histograms reserve "le". */
static rl_status_t labels_canonical(const char *in, bool histogram, char **out)
{
    if (in == NULL)
        in = "";
    size_t total = strnlen(in, RL_METRICS_MAX_LABELS_LEN + 1);
    if (total > RL_METRICS_MAX_LABELS_LEN)
        return rl_error(RL_ERR_TOO_LARGE, "label set longer than %d bytes",
                        RL_METRICS_MAX_LABELS_LEN);
    if (!utf8_ok(in, total))
        return rl_error(RL_ERR_INVALID, "label set is not valid UTF-8");
    struct label_pair pairs[RL_METRICS_MAX_LABELS];
    size_t n = 0;
    size_t i = 0;
    while (i < total) {
        if (n == RL_METRICS_MAX_LABELS)
            return rl_error(RL_ERR_TOO_LARGE, "more than %d labels", RL_METRICS_MAX_LABELS);
        size_t start = i;
        if (!is_alpha_((unsigned char)in[i]))
            return rl_error(RL_ERR_INVALID, "label name expected at offset %zu", i);
        while (is_alpha_((unsigned char)in[i]) || is_digit((unsigned char)in[i]))
            i++;
        size_t namelen = i - start;
        if (namelen >= 2 && in[start] == '_' && in[start + 1] == '_')
            return rl_error(RL_ERR_INVALID, "label names starting with __ are reserved");
        if (histogram && namelen == 2 && memcmp(in + start, "le", 2) == 0)
            return rl_error(RL_ERR_INVALID, "label le is reserved for histogram buckets");
        if (in[i] != '=' || in[i + 1] != '"')
            return rl_error(RL_ERR_INVALID, "'=\"' expected at offset %zu", i);
        i += 2;
        while (in[i] != '"') {
            if (in[i] == '\0')
                return rl_error(RL_ERR_INVALID, "label value not closed");
            if (in[i] == '\n' || in[i] == '\r')
                return rl_error(RL_ERR_INVALID, "raw line break in label value at offset %zu", i);
            if (in[i] == '\\') {
                char e = in[i + 1];
                if (e != '\\' && e != '"' && e != 'n')
                    return rl_error(RL_ERR_INVALID, "bad escape in label value at offset %zu", i);
                i++;
            }
            i++;
        }
        i++;
        pairs[n++] = (struct label_pair){in + start, namelen, i - start};
        if (in[i] == ',' && in[i + 1] != '\0')
            i++;
        else if (in[i] != '\0')
            return rl_error(RL_ERR_INVALID, "',' and another label expected at offset %zu", i);
    }
    for (size_t a = 1; a < n; a++)
        for (size_t b = a; b > 0 && pair_cmp(&pairs[b - 1], &pairs[b]) > 0; b--) {
            struct label_pair t = pairs[b - 1];
            pairs[b - 1] = pairs[b];
            pairs[b] = t;
        }
    for (size_t a = 1; a < n; a++)
        if (pair_cmp(&pairs[a - 1], &pairs[a]) == 0)
            return rl_error(RL_ERR_INVALID, "label %.*s given twice", (int)pairs[a].namelen,
                            pairs[a].text);
    char *canon = malloc(total + 1);
    if (canon == NULL)
        return rl_error(RL_ERR_NOMEM, "label set");
    size_t w = 0;
    for (size_t a = 0; a < n; a++) {
        if (a > 0)
            canon[w++] = ',';
        memcpy(canon + w, pairs[a].text, pairs[a].len);
        w += pairs[a].len;
    }
    canon[w] = '\0';
    *out = canon;
    return RL_OK;
}

static rl_status_t check_bounds(const double *bounds, size_t n)
{
    if (n > RL_METRICS_MAX_BUCKETS)
        return rl_error(RL_ERR_TOO_LARGE, "more than %d histogram buckets", RL_METRICS_MAX_BUCKETS);
    if (n > 0 && bounds == NULL)
        return rl_error(RL_ERR_INVALID, "histogram bounds missing");
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(bounds[i]))
            return rl_error(RL_ERR_INVALID, "histogram bound %zu is not finite (+Inf is implied)",
                            i);
        if (i > 0 && !(bounds[i] > bounds[i - 1]))
            return rl_error(RL_ERR_INVALID, "histogram bounds not strictly increasing at %zu", i);
    }
    return RL_OK;
}

/* True when name is one of the series names histogram hist renders. */
static bool is_histogram_part(const char *name, const char *hist)
{
    size_t n = strlen(hist);
    if (strncmp(name, hist, n) != 0)
        return false;
    const char *suffix = name + n;
    return strcmp(suffix, "_bucket") == 0 || strcmp(suffix, "_sum") == 0 ||
           strcmp(suffix, "_count") == 0;
}

static struct series *series_new(enum kind kind, const double *bounds, size_t nbounds)
{
    struct series *s = aligned_alloc(CACHE_LINE, sizeof *s);
    if (s == NULL)
        return NULL;
    memset(s, 0, sizeof *s);
    switch (kind) {
    case KIND_COUNTER:
        atomic_init(&s->u.counter.value, 0);
        break;
    case KIND_GAUGE:
        atomic_init(&s->u.gauge.bits, bits_of(0.0));
        break;
    case KIND_HISTOGRAM: {
        struct rl_histogram *h = &s->u.histogram;
        h->nbounds = nbounds;
        h->bounds = malloc(nbounds ? nbounds * sizeof *h->bounds : 1);
        h->buckets = malloc((nbounds + 1) * sizeof *h->buckets);
        if (h->bounds == NULL || h->buckets == NULL) {
            series_free(s, kind);
            return NULL;
        }
        if (nbounds > 0)
            memcpy(h->bounds, bounds, nbounds * sizeof *h->bounds);
        for (size_t i = 0; i <= nbounds; i++)
            atomic_init(&h->buckets[i], 0);
        atomic_init(&h->sum_bits, bits_of(0.0));
        break;
    }
    }
    return s;
}

static struct family *family_new(enum kind kind, const char *name, const char *help)
{
    struct family *f = calloc(1, sizeof *f);
    if (f == NULL)
        return NULL;
    f->kind = kind;
    f->name = strdup(name);
    f->help = help ? strdup(help) : NULL;
    if (f->name == NULL || (help != NULL && f->help == NULL)) {
        family_free(f);
        return NULL;
    }
    return f;
}

/* The registration proper, with m->lock held. Takes ownership of *labels
 * (sets it to NULL) when it creates a series. */
static rl_status_t register_locked(rl_metrics_t *m, enum kind kind, const char *name,
                                   const char *help, char **labels, const double *bounds,
                                   size_t nbounds, struct series **out)
{
    struct family *fam = NULL;
    for (struct family *f = m->first; f != NULL; f = f->next) {
        if (strcmp(f->name, name) == 0) {
            fam = f;
            break;
        }
        if ((f->kind == KIND_HISTOGRAM && is_histogram_part(name, f->name)) ||
            (kind == KIND_HISTOGRAM && is_histogram_part(f->name, name)))
            return rl_error(RL_ERR_CONFLICT, "metric %s clashes with the series of histogram %s",
                            name, kind == KIND_HISTOGRAM ? name : f->name);
    }
    if (fam != NULL) {
        if (fam->kind != kind)
            return rl_error(RL_ERR_CONFLICT, "metric %s is a %s, not a %s", name,
                            KIND_NAMES[fam->kind], KIND_NAMES[kind]);
        for (struct series *s = fam->first; s != NULL; s = s->next) {
            if (strcmp(s->labels, *labels) != 0)
                continue;
            if (kind == KIND_HISTOGRAM && (s->u.histogram.nbounds != nbounds ||
                                           (nbounds > 0 && memcmp(s->u.histogram.bounds, bounds,
                                                                  nbounds * sizeof *bounds) != 0)))
                return rl_error(RL_ERR_CONFLICT, "histogram %s{%s} exists with other bounds", name,
                                *labels);
            *out = s;
            return RL_OK;
        }
    }
    if (m->nseries == RL_METRICS_MAX_SERIES)
        return rl_error(RL_ERR_TOO_LARGE, "more than %d metrics", RL_METRICS_MAX_SERIES);
    struct series *s = series_new(kind, bounds, nbounds);
    if (s == NULL)
        return rl_error(RL_ERR_NOMEM, "metric %s", name);
    if (fam == NULL) {
        fam = family_new(kind, name, help);
        if (fam == NULL) {
            series_free(s, kind);
            return rl_error(RL_ERR_NOMEM, "metric %s", name);
        }
        if (m->last != NULL)
            m->last->next = fam;
        else
            m->first = fam;
        m->last = fam;
    }
    s->labels = *labels;
    *labels = NULL;
    if (fam->last != NULL)
        fam->last->next = s;
    else
        fam->first = s;
    fam->last = s;
    m->nseries++;
    *out = s;
    return RL_OK;
}

static rl_status_t metrics_register(rl_metrics_t *m, enum kind kind, const char *name,
                                    const char *help, const char *labels, const double *bounds,
                                    size_t nbounds, struct series **out)
{
    rl_status_t st = check_name(name);
    if (st != RL_OK)
        return st;
    if (help != NULL) {
        size_t n = strnlen(help, RL_METRICS_MAX_HELP + 1);
        if (n > RL_METRICS_MAX_HELP)
            return rl_error(RL_ERR_TOO_LARGE, "help of %s longer than %d bytes", name,
                            RL_METRICS_MAX_HELP);
        if (!utf8_ok(help, n))
            return rl_error(RL_ERR_INVALID, "help of %s is not valid UTF-8", name);
    }
    if (kind == KIND_HISTOGRAM && (st = check_bounds(bounds, nbounds)) != RL_OK)
        return st;
    char *canon = NULL; /* owned here until register_locked takes it */
    st = labels_canonical(labels, kind == KIND_HISTOGRAM, &canon);
    if (st != RL_OK)
        return st;
    pthread_mutex_lock(&m->lock);
    st = register_locked(m, kind, name, help, &canon, bounds, nbounds, out);
    pthread_mutex_unlock(&m->lock);
    free(canon);
    return st;
}

rl_status_t rl_metrics_counter(rl_metrics_t *m, const char *name, const char *help,
                               const char *labels, rl_counter_t **out)
{
    struct series *s = NULL;
    rl_status_t st = metrics_register(m, KIND_COUNTER, name, help, labels, NULL, 0, &s);
    if (st == RL_OK)
        *out = &s->u.counter;
    return st;
}

rl_status_t rl_metrics_gauge(rl_metrics_t *m, const char *name, const char *help,
                             const char *labels, rl_gauge_t **out)
{
    struct series *s = NULL;
    rl_status_t st = metrics_register(m, KIND_GAUGE, name, help, labels, NULL, 0, &s);
    if (st == RL_OK)
        *out = &s->u.gauge;
    return st;
}

rl_status_t rl_metrics_histogram(rl_metrics_t *m, const char *name, const char *help,
                                 const char *labels, const double *bounds, size_t nbounds,
                                 rl_histogram_t **out)
{
    struct series *s = NULL;
    rl_status_t st = metrics_register(m, KIND_HISTOGRAM, name, help, labels, bounds, nbounds, &s);
    if (st == RL_OK)
        *out = &s->u.histogram;
    return st;
}

/* Render output: the first error sticks and later appends do nothing. */
struct out {
    rl_buf_t buf;
    rl_status_t st;
};

static void out_put(struct out *o, const char *s, size_t n)
{
    if (o->st == RL_OK)
        o->st = rl_buf_append(&o->buf, s, n);
}

static void out_str(struct out *o, const char *s)
{
    out_put(o, s, strlen(s));
}

static void out_u64(struct out *o, uint64_t v)
{
    char t[24];
    int n = snprintf(t, sizeof t, "%" PRIu64, v);
    out_put(o, t, (size_t)n);
}

/* Writes the shortest text strtod reads back as v, or Prometheus's "+Inf",
 * "-Inf", "NaN", and a NUL to buf; returns the length. Whole numbers below
 * 1e17 are written out ("10", "400000"), never as "1e+01". */
static size_t format_double(double v, char buf[32])
{
    const char *special = isnan(v) ? "NaN" : isinf(v) ? (v > 0 ? "+Inf" : "-Inf") : NULL;
    if (special != NULL) {
        size_t n = strlen(special);
        memcpy(buf, special, n + 1);
        return n;
    }
    int digits = 1;
    for (; digits < 17; digits++) {
        snprintf(buf, 32, "%.*g", digits, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    /* %g switches to an exponent once the decimal exponent reaches the
     * precision; widen the precision so integral parts print in full. */
    snprintf(buf, 32, "%.*e", digits - 1, v);
    long exp = strtol(strchr(buf, 'e') + 1, NULL, 10);
    int prec = exp >= digits && exp < 17 ? (int)exp + 1 : digits;
    return (size_t)snprintf(buf, 32, "%.*g", prec, v);
}

static void out_double(struct out *o, double v)
{
    char t[32];
    out_put(o, t, format_double(v, t));
}

/* HELP text escapes backslash and line feed only. */
static void out_help(struct out *o, const char *help)
{
    const char *run = help;
    for (const char *p = help; *p != '\0'; p++) {
        if (*p != '\\' && *p != '\n')
            continue;
        out_put(o, run, (size_t)(p - run));
        out_str(o, *p == '\\' ? "\\\\" : "\\n");
        run = p + 1;
    }
    out_str(o, run);
}

/* Writes `name<suffix>{labels,le="le"} ` (braces only when there are labels). */
static void out_sample(struct out *o, const char *name, const char *suffix, const char *labels,
                       const char *le)
{
    out_str(o, name);
    out_str(o, suffix);
    if (labels[0] != '\0' || le != NULL) {
        out_str(o, "{");
        out_str(o, labels);
        if (le != NULL) {
            out_str(o, labels[0] != '\0' ? ",le=\"" : "le=\"");
            out_str(o, le);
            out_str(o, "\"");
        }
        out_str(o, "}");
    }
    out_str(o, " ");
}

static void render_histogram(struct out *o, const char *name, const struct series *s)
{
    const struct rl_histogram *h = &s->u.histogram;
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= h->nbounds; i++) {
        cumulative += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        char le[32] = "+Inf";
        if (i < h->nbounds)
            format_double(h->bounds[i], le);
        out_sample(o, name, "_bucket", s->labels, le);
        out_u64(o, cumulative);
        out_str(o, "\n");
    }
    out_sample(o, name, "_sum", s->labels, NULL);
    out_double(o, double_of(atomic_load_explicit(&h->sum_bits, memory_order_relaxed)));
    out_str(o, "\n");
    /* _count is the +Inf bucket by definition, so the two always agree. */
    out_sample(o, name, "_count", s->labels, NULL);
    out_u64(o, cumulative);
    out_str(o, "\n");
}

static void render_family(struct out *o, const struct family *f)
{
    if (f->help != NULL) {
        out_str(o, "# HELP ");
        out_str(o, f->name);
        out_str(o, " ");
        out_help(o, f->help);
        out_str(o, "\n");
    }
    out_str(o, "# TYPE ");
    out_str(o, f->name);
    out_str(o, " ");
    out_str(o, KIND_NAMES[f->kind]);
    out_str(o, "\n");
    for (const struct series *s = f->first; s != NULL; s = s->next) {
        switch (f->kind) {
        case KIND_COUNTER:
            out_sample(o, f->name, "", s->labels, NULL);
            out_u64(o, atomic_load_explicit(&s->u.counter.value, memory_order_relaxed));
            out_str(o, "\n");
            break;
        case KIND_GAUGE:
            out_sample(o, f->name, "", s->labels, NULL);
            out_double(o, double_of(atomic_load_explicit(&s->u.gauge.bits, memory_order_relaxed)));
            out_str(o, "\n");
            break;
        case KIND_HISTOGRAM:
            render_histogram(o, f->name, s);
            break;
        }
    }
}

rl_status_t rl_metrics_render(rl_metrics_t *m, char **out, size_t *len)
{
    struct out o = {.st = RL_OK};
    rl_buf_init(&o.buf, RL_METRICS_RENDER_MAX);
    pthread_mutex_lock(&m->lock);
    for (const struct family *f = m->first; f != NULL && o.st == RL_OK; f = f->next)
        render_family(&o, f);
    pthread_mutex_unlock(&m->lock);
    out_put(&o, "", 0); /* an empty registry still returns a buffer */
    if (o.st != RL_OK) {
        rl_buf_free(&o.buf);
        return o.st;
    }
    *out = rl_buf_take(&o.buf, len);
    return RL_OK;
}
