/* px_trace: the v1 trace and decision messages (docs/bus.md, schemas in
 * docs/schemas/) and the publisher that gets them to JetStream or, while it
 * cannot, to the on-disk spool (px_spool).
 *
 * The encoder writes JSON text straight into an rl_buf: building a jansson
 * tree and dumping it cost tens of microseconds per trace (DESIGN.md), and
 * the only work here is escaping. Text comes out as valid UTF-8: an invalid
 * sequence becomes one U+FFFD per maximal invalid subpart (the Unicode
 * recommendation), and so does a NUL byte (jansson, rl_json_parse and
 * Postgres text all refuse it); other control characters are escaped. */
#include "px_trace.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "px_spool.h"

#define BODY_MAX_DEFAULT (16u << 10)
#define FIELD_MAX 4096 /* bytes kept of any other free-text field (user, path, error, ...) */
#define MSG_FIXED_MAX (1u << 20) /* room in a message besides the two bodies */

#define SPOOL_MAX_DEFAULT (1LL << 30)
#define REPLAY_BATCH 1024         /* records published before waiting for their acks */
#define IDLE_WAIT_MS 20           /* replay thread's nap while records wait for the bus */
#define QUIET_WAIT_MS 1000        /* ... and with nothing spooled (an append wakes it) */
#define BACKOFF_MS 5              /* after the bus refused (window full) */
#define NACK_BACKOFF_MIN_MS 10    /* after nacks: the server refuses what it gets... */
#define NACK_BACKOFF_MAX_MS 1000  /* ...so replay slows down, doubling up to this */
#define ACK_DRAIN_WAIT_MS 2000    /* wait for a batch's acks before committing */
#define COMMIT_FORCE_MS 30000     /* commit anyway once the last replay publish is this old */
#define SYNC_INTERVAL_MS 200      /* fdatasync of the spool at most this often */
#define FLUSH_MS 2000             /* destroy: replay what it can for this long */
#define DESTROY_ACK_WAIT_MS 10000 /* destroy: wait for acks (> the bus's ack timeout) */

/* ==== encoding ============================================================== */

typedef struct {
    rl_buf_t *b;
    rl_status_t st; /* the first error; later writes are skipped */
} w_t;

static void w_raw(w_t *w, const void *s, size_t n)
{
    if (w->st == RL_OK && n > 0)
        w->st = rl_buf_append(w->b, s, n);
}

#define W_LIT(w, s) w_raw((w), (s), sizeof(s) - 1)

/* Length of the well-formed UTF-8 sequence at s (Unicode table 3-7), or 0 and
 * *bad = the length of its maximal invalid subpart (at least 1). */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t *bad)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t need;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c == 0xE0)
        need = 2, lo = 0xA0;
    else if (c == 0xED)
        need = 2, hi = 0x9F;
    else if (c >= 0xE1 && c <= 0xEF)
        need = 2;
    else if (c == 0xF0)
        need = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3)
        need = 3;
    else if (c == 0xF4)
        need = 3, hi = 0x8F;
    else {
        *bad = 1;
        return 0;
    }
    for (size_t i = 1; i <= need; i++) {
        if (i >= n || s[i] < lo || s[i] > hi) {
            *bad = i;
            return 0;
        }
        lo = 0x80, hi = 0xBF;
    }
    return need + 1;
}

/* True when none of the 8 bytes in v needs attention: each is printable
 * ASCII (0x20..0x7F) other than '"' and '\\'. SWAR: (x - 0x01..) & ~x & 0x80..
 * is non-zero iff some byte of x is zero (borrows only misplace the flag). */
static bool plain8(uint64_t v)
{
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    uint64_t q = v ^ (ones * '"'), bs = v ^ (ones * '\\');
    uint64_t bad = (v & high) | ((v - ones * 0x20) & ~v & high) | ((q - ones) & ~q & high) |
                   ((bs - ones) & ~bs & high);
    return bad == 0;
}

/* Writes s[0..n) as the inside of a JSON string. */
static void w_escaped(w_t *w, const unsigned char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t start = 0, i = 0;
    while (i < n) {
        uint64_t v;
        while (i + 8 <= n && (memcpy(&v, s + i, 8), plain8(v)))
            i += 8;
        if (i >= n)
            break;
        unsigned char c = s[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t bad = 0, ok = utf8_seq(s + i, n - i, &bad);
            if (ok) {
                i += ok;
                continue;
            }
            w_raw(w, s + start, i - start);
            W_LIT(w, "\xEF\xBF\xBD");
            i += bad;
            start = i;
            continue;
        }
        w_raw(w, s + start, i - start);
        switch (c) {
        case '\0': /* jansson, rl_json_parse and Postgres text refuse NUL */
            W_LIT(w, "\xEF\xBF\xBD");
            break;
        case '"':
            W_LIT(w, "\\\"");
            break;
        case '\\':
            W_LIT(w, "\\\\");
            break;
        case '\n':
            W_LIT(w, "\\n");
            break;
        case '\r':
            W_LIT(w, "\\r");
            break;
        case '\t':
            W_LIT(w, "\\t");
            break;
        case '\b':
            W_LIT(w, "\\b");
            break;
        case '\f':
            W_LIT(w, "\\f");
            break;
        default: {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            w_raw(w, u, sizeof u);
        }
        }
        i++;
        start = i;
    }
    w_raw(w, s + start, n - start);
}

/* The longest prefix of s (len bytes) of at most max bytes that does not cut
 * a UTF-8 sequence in two. */
static size_t utf8_cut(const unsigned char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    size_t cut = max;
    for (int k = 0; k < 3 && cut > 0 && (s[cut] & 0xC0) == 0x80; k++)
        cut--;
    return (s[cut] & 0xC0) == 0x80 ? max : cut; /* not UTF-8 there anyway */
}

static void w_quoted(w_t *w, const char *s, size_t n)
{
    W_LIT(w, "\"");
    w_escaped(w, (const unsigned char *)s, n);
    W_LIT(w, "\"");
}

/* A free-text field: NULL is null; cut to FIELD_MAX bytes. */
static void w_str(w_t *w, const char *s)
{
    if (!s) {
        W_LIT(w, "null");
        return;
    }
    size_t n = strlen(s);
    w_quoted(w, s, utf8_cut((const unsigned char *)s, n, FIELD_MAX));
}

/* A fixed char array field (ids, model, finding fields): "" is null. */
static void w_fixed(w_t *w, const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    if (n == 0)
        W_LIT(w, "null");
    else
        w_quoted(w, s, n);
}

#define W_FIXED(w, arr) w_fixed((w), (arr), sizeof(arr))

/* A body cut to max bytes on a UTF-8 boundary; *cut set when it was. */
static void w_body(w_t *w, const char *s, size_t len, size_t max, bool *cut)
{
    if (!s) {
        W_LIT(w, "null");
        return;
    }
    size_t n = utf8_cut((const unsigned char *)s, len, max);
    if (n < len)
        *cut = true;
    w_quoted(w, s, n);
}

static void w_i64(w_t *w, int64_t v)
{
    char t[24];
    char *p = t + sizeof t;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    w_raw(w, p, (size_t)(t + sizeof t - p));
}

/* A count the database keeps >= 0: a negative value would dead-letter the
 * whole trace, so it is written as 0. */
static void w_count(w_t *w, int64_t v)
{
    w_i64(w, v < 0 ? 0 : v);
}

/* An HTTP status, null outside 100..599 (0: none). */
static void w_http_status(w_t *w, int v)
{
    if (v < 100 || v > 599)
        W_LIT(w, "null");
    else
        w_i64(w, v);
}

/* Milliseconds with microsecond precision; null if not finite, 0 if negative. */
static void w_ms(w_t *w, double v)
{
    if (!isfinite(v)) {
        W_LIT(w, "null");
        return;
    }
    if (v < 0)
        v = 0;
    if (v < 1e12) { /* milliseconds with 3 decimals, without printf's float path */
        int64_t us = llround(v * 1000.0);
        w_i64(w, us / 1000);
        char frac[4] = {'.', (char)('0' + us / 100 % 10), (char)('0' + us / 10 % 10),
                        (char)('0' + us % 10)};
        w_raw(w, frac, sizeof frac);
        return;
    }
    char t[48];
    int n = snprintf(t, sizeof t, "%.3f", v);
    if (n > 0 && (size_t)n < sizeof t)
        w_raw(w, t, (size_t)n);
    else
        W_LIT(w, "null");
}

/* cost_usd: null when no price was known (negative or not finite), and for
 * an absurd one the traces table cannot hold (numeric(18, 8): under 1e10;
 * near DBL_MAX "%.15g" would even round past it, which no JSON reader takes). */
static void w_cost(w_t *w, double v)
{
    if (!isfinite(v) || v < 0 || v >= 1e10) {
        W_LIT(w, "null");
        return;
    }
    char t[48];
    int n = snprintf(t, sizeof t, "%.15g", v);
    w_raw(w, t, (size_t)n);
}

/* RFC 3339 UTC with microseconds, "2025-10-20T12:34:56.123456Z"; null for 0
 * (absent) or a time outside years 1970..9999. Pure arithmetic: gmtime_r
 * takes glibc's time zone lock. */
static void w_time(w_t *w, int64_t us)
{
    if (us <= 0 || us >= 253402300800000000LL) {
        W_LIT(w, "null");
        return;
    }
    int64_t secs = us / 1000000, frac = us % 1000000;
    int64_t days = secs / 86400, sod = secs % 86400;
    /* civil_from_days (H. Hinnant), days since 1970-01-01 >= 0 here */
    int64_t z = days + 719468, era = z / 146097, doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = yoe + era * 400 + (m <= 2);
    int64_t hh = sod / 3600, mm = sod / 60 % 60, ss = sod % 60;
    char t[29] = "\"0000-00-00T00:00:00.000000Z\"";
    char *p = t + 1;
    p[0] = (char)('0' + y / 1000), p[1] = (char)('0' + y / 100 % 10);
    p[2] = (char)('0' + y / 10 % 10), p[3] = (char)('0' + y % 10);
    p[5] = (char)('0' + m / 10), p[6] = (char)('0' + m % 10);
    p[8] = (char)('0' + d / 10), p[9] = (char)('0' + d % 10);
    p[11] = (char)('0' + hh / 10), p[12] = (char)('0' + hh % 10);
    p[14] = (char)('0' + mm / 10), p[15] = (char)('0' + mm % 10);
    p[17] = (char)('0' + ss / 10), p[18] = (char)('0' + ss % 10);
    for (int i = 25; i >= 20; i--, frac /= 10)
        p[i] = (char)('0' + frac % 10);
    w_raw(w, t, sizeof t);
}

static const char *action_name(px_action_t a)
{
    switch (a) {
    case PX_ACTION_CHAT:
        return "chat";
    case PX_ACTION_EMBEDDING:
        return "embedding";
    case PX_ACTION_MCP:
        return "mcp";
    case PX_ACTION_TOOL_CALL:
        return "tool_call";
    case PX_ACTION_HTTP:
        return "http";
    }
    return "http";
}

static size_t cap_n(size_t n, size_t max)
{
    return n < max ? n : max;
}

static void w_policy_ids(w_t *w, const px_trace_t *t)
{
    W_LIT(w, "[");
    bool first = true;
    for (size_t i = 0; i < cap_n(t->npolicy_ids, PX_MAX_POLICY_IDS); i++) {
        if (!t->policy_ids[i])
            continue;
        if (!first)
            W_LIT(w, ",");
        first = false;
        w_str(w, t->policy_ids[i]);
    }
    W_LIT(w, "]");
}

static void w_findings(w_t *w, const px_trace_t *t)
{
    W_LIT(w, "[");
    for (size_t i = 0; i < cap_n(t->nfindings, PX_MAX_FINDINGS); i++) {
        const px_finding_t *f = &t->findings[i];
        if (i > 0)
            W_LIT(w, ",");
        W_LIT(w, "{\"detector\":");
        W_FIXED(w, f->detector);
        W_LIT(w, ",\"severity\":");
        W_FIXED(w, f->severity);
        W_LIT(w, ",\"where\":");
        W_FIXED(w, f->where);
        W_LIT(w, ",\"action\":");
        W_FIXED(w, f->action);
        W_LIT(w, "}");
    }
    W_LIT(w, "]");
}

/* Everything up to and including "dlp_findings", shared by both kinds. */
static void w_common(w_t *w, const px_trace_t *t, bool decision)
{
    if (decision)
        W_LIT(w, "{\"v\":1,\"kind\":\"decision\",\"trace_id\":");
    else
        W_LIT(w, "{\"v\":1,\"kind\":\"trace\",\"trace_id\":");
    W_FIXED(w, t->trace_id);
    W_LIT(w, ",\"tenant_id\":");
    W_FIXED(w, t->tenant_id);
    W_LIT(w, ",\"agent_id\":");
    W_FIXED(w, t->agent_id);
    W_LIT(w, ",\"gate_id\":");
    W_FIXED(w, t->gate_id);
    W_LIT(w, ",\"api_key_id\":");
    W_FIXED(w, t->api_key_id);
    W_LIT(w, ",\"user\":");
    w_str(w, t->user);
    W_LIT(w, ",\"session_id\":");
    w_str(w, t->session_id);
    W_LIT(w, ",\"action\":\"");
    w_raw(w, action_name(t->action), strlen(action_name(t->action)));
    W_LIT(w, "\",\"method\":");
    w_str(w, t->method);
    W_LIT(w, ",\"path\":");
    w_str(w, t->path);
    W_LIT(w, ",\"model\":");
    W_FIXED(w, t->model);
    if (!decision) {
        W_LIT(w, ",\"upstream\":");
        w_str(w, t->upstream);
    }
    W_LIT(w, ",\"status\":");
    w_str(w, t->status);
    W_LIT(w, ",\"http_status\":");
    w_http_status(w, t->http_status);
    W_LIT(w, ",\"policy_ids\":");
    w_policy_ids(w, t);
    W_LIT(w, ",\"dlp_findings\":");
    w_findings(w, t);
}

static void w_trace_rest(w_t *w, const px_trace_t *t, size_t body_max)
{
    W_LIT(w, ",\"tool_calls\":[");
    for (size_t i = 0; t->tool_calls && i < t->ntool_calls; i++) {
        const px_tool_call_t *c = &t->tool_calls[i];
        if (i > 0)
            W_LIT(w, ",");
        W_LIT(w, "{\"name\":");
        W_FIXED(w, c->name);
        W_LIT(w, ",\"id\":");
        W_FIXED(w, c->id);
        if (c->phase == PX_TOOL_RESULT)
            W_LIT(w, ",\"phase\":\"result\",\"args_sha256\":");
        else
            W_LIT(w, ",\"phase\":\"requested\",\"args_sha256\":");
        W_FIXED(w, c->args_sha256);
        W_LIT(w, "}");
    }
    W_LIT(w, "],\"usage\":");
    if (!t->usage.present) {
        W_LIT(w, "null");
    } else {
        W_LIT(w, "{\"input_tokens\":");
        w_count(w, t->usage.input_tokens);
        W_LIT(w, ",\"output_tokens\":");
        w_count(w, t->usage.output_tokens);
        W_LIT(w, ",\"total_tokens\":");
        w_count(w, t->usage.total_tokens);
        W_LIT(w, ",\"cached_input_tokens\":");
        w_count(w, t->usage.cached_input_tokens);
        W_LIT(w, ",\"cache_write_tokens\":");
        w_count(w, t->usage.cache_write_tokens);
        W_LIT(w, ",\"reasoning_tokens\":");
        w_count(w, t->usage.reasoning_tokens);
        W_LIT(w, "}");
    }
    W_LIT(w, ",\"cost_usd\":");
    w_cost(w, t->cost_usd);
    W_LIT(w, ",\"latency_ms\":");
    w_ms(w, t->latency_ms);
    W_LIT(w, ",\"upstream_ms\":");
    w_ms(w, t->upstream_ms);
    W_LIT(w, ",\"overhead_us\":");
    w_count(w, t->overhead_us);
    W_LIT(w, ",\"started_at\":");
    w_time(w, t->started_at_us);
    W_LIT(w, ",\"ended_at\":");
    w_time(w, t->ended_at_us);
    if (t->stream)
        W_LIT(w, ",\"stream\":true,\"error\":");
    else
        W_LIT(w, ",\"stream\":false,\"error\":");
    w_str(w, t->error);
    W_LIT(w, ",\"attempts\":[");
    for (size_t i = 0; i < cap_n(t->nattempts, PX_MAX_ATTEMPTS); i++) {
        const px_attempt_t *a = &t->attempts[i];
        if (i > 0)
            W_LIT(w, ",");
        W_LIT(w, "{\"gate_id\":");
        W_FIXED(w, a->gate_id);
        W_LIT(w, ",\"upstream\":");
        W_FIXED(w, a->upstream);
        W_LIT(w, ",\"http_status\":");
        w_http_status(w, a->http_status);
        W_LIT(w, ",\"error\":");
        W_FIXED(w, a->error);
        W_LIT(w, ",\"ms\":");
        w_ms(w, a->ms);
        W_LIT(w, "}");
    }
    bool cut = false;
    W_LIT(w, "],\"request_body\":");
    w_body(w, t->request_body, t->request_body_len, body_max, &cut);
    W_LIT(w, ",\"response_body\":");
    w_body(w, t->response_body, t->response_body_len, body_max, &cut);
    if (cut)
        W_LIT(w, ",\"truncated\":true}");
    else
        W_LIT(w, ",\"truncated\":false}");
}

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

rl_status_t px_trace_encode(const px_trace_t *t, bool decision, size_t body_max, rl_buf_t *out)
{
    if (!t || !out)
        return rl_error(RL_ERR_INVALID, "px_trace_encode: missing argument");
    size_t mark = out->len;
    w_t w = {.b = out, .st = RL_OK};
    w_common(&w, t, decision);
    if (decision) {
        W_LIT(&w, ",\"reason\":");
        w_str(&w, t->reason);
        W_LIT(&w, ",\"started_at\":");
        w_time(&w, t->started_at_us);
        W_LIT(&w, ",\"decided_at\":"); /* the engine's ended_at_us, else now */
        w_time(&w, t->ended_at_us > 0 ? t->ended_at_us : wall_us());
        W_LIT(&w, "}");
    } else {
        w_trace_rest(&w, t, body_max ? body_max : BODY_MAX_DEFAULT);
    }
    if (w.st != RL_OK) {
        out->len = mark; /* all or nothing */
        if (out->data)
            out->data[mark] = '\0';
    }
    return w.st;
}

/* ==== publishing ============================================================ */

struct px_publisher {
    rl_bus_t *bus;
    px_spool_t *spool;
    pthread_mutex_t spool_mu; /* guards spool against close while a nack appends */
    size_t body_max, msg_max;
    rl_buf_t batch; /* the sender thread's: the lines of one bus message */

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop;

    atomic_uint_fast64_t nacks; /* px_publisher_nack calls, for the replay backoff */

    /* The hand-over to the bus: request threads queue encoded messages here
     * and one sender thread publishes them in batches, so libnats' locks,
     * its flusher wake-ups and its socket writes are paid per batch, not per
     * request (measured: about half the proxy's CPU per request otherwise). */
    pthread_t sender;
    pthread_mutex_t q_mu;
    pthread_cond_t q_cond; /* the queue got its first message, or q_stop */
    struct queued *q_head, *q_tail;
    struct queued *q_free; /* sent messages' nodes, kept for the next ones */
    size_t q_nfree;
    size_t q_len;
    size_t q_bytes;
    bool q_sending; /* the sender is publishing a batch it took */
    bool q_stop;
    bool threads_stopped; /* px_publisher_stop ran (main thread only) */

    rl_gauge_t *depth;
    rl_counter_t *dropped, *pub_trace, *pub_decision, *spooled, *replayed;
    rl_histogram_t *lines;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static uint64_t bus_pending(px_publisher_t *pub)
{
    rl_bus_stats_t st;
    rl_bus_stats(pub->bus, &st);
    return st.js_pending;
}

/* Under mu: the replay thread checks the spool empty and sleeps under it,
 * so the first record's wake cannot fall between the two (quiet_wait). */
static void wake(px_publisher_t *pub)
{
    pthread_mutex_lock(&pub->mu);
    pthread_cond_signal(&pub->cond);
    pthread_mutex_unlock(&pub->mu);
}

/* Traces or decisions in a bus message: one per line (docs/bus.md). */
static uint64_t lines_in(const void *data, size_t len)
{
    uint64_t n = 1;
    for (const char *p = data, *end = p + len; (p = memchr(p, '\n', (size_t)(end - p))); p++)
        n++;
    return n;
}

/* Appends a bus message to the spool, counting the traces or decisions it
 * carries as spooled or dropped. */
static rl_status_t spool_put(px_publisher_t *pub, const char *subject, const char *msg_id,
                             const void *data, size_t len)
{
    rl_status_t st = px_spool_append(pub->spool, subject, msg_id, data, len);
    uint64_t n = lines_in(data, len);
    if (st == RL_OK) {
        rl_counter_add(pub->spooled, n);
        /* only the first record needs the replay thread at once (it sleeps
         * while the spool is empty, then polls every IDLE_WAIT_MS), and a
         * wake per request costs a futex call on the request path while
         * NATS is down */
        if (px_spool_depth(pub->spool) == 1)
            wake(pub);
    } else {
        rl_counter_add(pub->dropped, n);
    }
    return st;
}


/* A message waiting for the sender thread. Its node and buffer are
 * recycled: a trace is encoded straight into a node taken from the free list
 * and the sender gives the node back, so a request costs no malloc here (a
 * ~1.5 KB malloc per trace, freed on another thread, showed in profiles with
 * the heap consolidations it triggered). */
struct queued {
    struct queued *next;
    rl_counter_t *published;
    char subject[RL_BUS_SUBJECT_MAX];
    char msg_id[PX_ID_LEN + 2];
    rl_buf_t msg; /* the encoded message */
};

#define QUEUE_MAX_MESSAGES 65536
#define QUEUE_MAX_BYTES ((size_t)256 << 20)
#define SEND_GATHER_MS 3
/* Free nodes kept, and the largest buffer a kept node holds on to. */
#define FREE_NODES_MAX 512
#define FREE_NODE_KEEP_BYTES (16 * 1024)

static void node_free(struct queued *q)
{
    rl_buf_free(&q->msg);
    free(q);
}

/* A node from the free list, or a new one; NULL when out of memory. */
static struct queued *node_get(px_publisher_t *pub)
{
    pthread_mutex_lock(&pub->q_mu);
    struct queued *q = pub->q_free;
    if (q) {
        pub->q_free = q->next;
        pub->q_nfree--;
    }
    pthread_mutex_unlock(&pub->q_mu);
    if (!q) {
        q = malloc(sizeof *q);
        if (!q)
            return NULL;
        rl_buf_init(&q->msg, 0);
    }
    q->next = NULL;
    rl_buf_reset(&q->msg);
    q->msg.max = pub->msg_max;
    return q;
}

/* Gives n nodes back: kept up to FREE_NODES_MAX, freed beyond. */
static void nodes_put(px_publisher_t *pub, struct queued **nodes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        rl_buf_recycle(&nodes[i]->msg, FREE_NODE_KEEP_BYTES, 0);
        nodes[i]->next = i + 1 < n ? nodes[i + 1] : NULL;
    }
    pthread_mutex_lock(&pub->q_mu);
    bool keep = n > 0 && pub->q_nfree + n <= FREE_NODES_MAX;
    if (keep) {
        nodes[n - 1]->next = pub->q_free;
        pub->q_free = nodes[0];
        pub->q_nfree += n;
    }
    pthread_mutex_unlock(&pub->q_mu);
    for (size_t i = 0; !keep && i < n; i++)
        node_free(nodes[i]);
}

/* To the sender thread while nothing older waits in the spool (order) and
 * the queue has room; else to the spool. Takes q. */
static rl_status_t publish(px_publisher_t *pub, struct queued *q)
{
    if (px_spool_depth(pub->spool) == 0 && rl_bus_ready_hint(pub->bus)) {
        size_t len = q->msg.len;
        pthread_mutex_lock(&pub->q_mu);
        bool room = pub->q_len < QUEUE_MAX_MESSAGES && pub->q_bytes + len < QUEUE_MAX_BYTES;
        bool first = pub->q_head == NULL;
        if (room) {
            if (pub->q_tail)
                pub->q_tail->next = q;
            else
                pub->q_head = q;
            pub->q_tail = q;
            pub->q_len++;
            pub->q_bytes += len;
        }
        pthread_mutex_unlock(&pub->q_mu);
        if (room && first) /* no system call unless the sender sleeps */
            pthread_cond_signal(&pub->q_cond);
        if (room)
            return RL_OK;
    }
    rl_status_t st = spool_put(pub, q->subject, q->msg_id, q->msg.data, q->msg.len);
    nodes_put(pub, &q, 1);
    return st;
}

/* One bus message carries up to this many traces (or decisions) of one
 * subject, one per line, in at most BATCH_BYTES_MAX bytes (a larger one goes
 * alone). JetStream's cost is per message (about 30 us of proxy and 25 us of
 * server CPU, docs/performance.md): under load it is shared by the batch. */
#define BATCH_MESSAGES_MAX 256
#define BATCH_BYTES_MAX ((size_t)256 << 10)
/* Queued messages looked at when gathering one subject's batch. */
#define BATCH_SCAN_MAX 1024

/* Takes the head of *list and the queued messages after it of the same
 * subject, in order, within the batch's bounds, out of *list into group. */
static size_t take_group(struct queued **list, struct queued **group)
{
    struct queued *head = *list;
    size_t n = 0, bytes = 0, scanned = 0;
    struct queued **pp = list;
    while (*pp && n < BATCH_MESSAGES_MAX && scanned++ < BATCH_SCAN_MAX) {
        struct queued *x = *pp;
        if (strcmp(x->subject, head->subject) != 0) {
            pp = &x->next;
            continue;
        }
        if (n > 0 && bytes + 1 + x->msg.len > BATCH_BYTES_MAX)
            break; /* the rest of this subject starts the next batch: order kept */
        bytes += (n > 0) + x->msg.len;
        group[n++] = x;
        *pp = x->next;
    }
    return n;
}

/* Publishes a group as one bus message: its messages one per line, under the
 * first one's Nats-Msg-Id (the same group replayed from the spool keeps it). */
static void send_group(px_publisher_t *pub, struct queued **group, size_t n, bool *refused)
{
    const char *data = group[0]->msg.data;
    size_t len = group[0]->msg.len;
    rl_status_t st = RL_OK;
    if (n > 1) {
        rl_buf_reset(&pub->batch);
        for (size_t i = 0; i < n && st == RL_OK; i++) {
            if (i > 0)
                st = rl_buf_append(&pub->batch, "\n", 1);
            if (st == RL_OK)
                st = rl_buf_append(&pub->batch, group[i]->msg.data, group[i]->msg.len);
        }
        data = pub->batch.data;
        len = pub->batch.len;
    }
    if (st != RL_OK) { /* out of memory: one message each */
        for (size_t i = 0; i < n; i++)
            send_group(pub, &group[i], 1, refused);
        return;
    }
    st = RL_ERR_UNAVAILABLE;
    if (!*refused && px_spool_depth(pub->spool) == 0)
        st = rl_bus_publish_js(pub->bus, group[0]->subject, group[0]->msg_id, data, len);
    if (st == RL_OK) {
        rl_histogram_observe(pub->lines, (double)n);
        for (size_t i = 0; i < n; i++)
            rl_counter_add(group[i]->published, 1);
    } else if (st == RL_ERR_INVALID || st == RL_ERR_TOO_LARGE) {
        rl_counter_add(pub->dropped, n); /* no retry will help */
    } else {
        *refused = true;
        pthread_mutex_lock(&pub->spool_mu);
        if (pub->spool)
            spool_put(pub, group[0]->subject, group[0]->msg_id, data, len);
        pthread_mutex_unlock(&pub->spool_mu);
    }
}

/* Publishes what is queued, a batch per subject; what the bus refuses, and
 * everything after it, goes to the spool (order kept). */
static void send_batch(px_publisher_t *pub)
{
    pthread_mutex_lock(&pub->q_mu);
    struct queued *q = pub->q_head;
    pub->q_head = pub->q_tail = NULL;
    pub->q_len = 0;
    pub->q_bytes = 0;
    pub->q_sending = q != NULL;
    pthread_mutex_unlock(&pub->q_mu);
    bool refused = false;
    struct queued *group[BATCH_MESSAGES_MAX];
    while (q) {
        size_t n = take_group(&q, group);
        send_group(pub, group, n, &refused);
        nodes_put(pub, group, n);
    }
    pthread_mutex_lock(&pub->q_mu);
    pub->q_sending = false;
    pthread_mutex_unlock(&pub->q_mu);
}

static bool queue_empty(px_publisher_t *pub)
{
    pthread_mutex_lock(&pub->q_mu);
    bool empty = pub->q_head == NULL;
    pthread_mutex_unlock(&pub->q_mu);
    return empty;
}

rl_status_t px_publisher_flush(px_publisher_t *pub, long timeout_ms)
{
    int64_t end = mono_ms() + timeout_ms;
    for (;;) {
        pthread_mutex_lock(&pub->q_mu);
        bool idle = pub->q_head == NULL && !pub->q_sending;
        pthread_mutex_unlock(&pub->q_mu);
        if (idle)
            return RL_OK;
        if (mono_ms() >= end)
            return rl_error(RL_ERR_TIMEOUT, "publisher queue not drained in %ld ms", timeout_ms);
        nap_ms(1);
    }
}

/* Sleeps while nothing is queued; once something is, lets a batch gather
 * for SEND_GATHER_MS and publishes it. Idle, the thread costs nothing; under
 * load it wakes once per batch. */
static void *sender_main(void *arg)
{
    px_publisher_t *pub = arg;
    pthread_setname_np(pthread_self(), "px-sender");
    for (;;) {
        pthread_mutex_lock(&pub->q_mu);
        while (pub->q_head == NULL && !pub->q_stop)
            pthread_cond_wait(&pub->q_cond, &pub->q_mu);
        bool stop = pub->q_stop;
        pthread_mutex_unlock(&pub->q_mu);
        if (!stop)
            nap_ms(SEND_GATHER_MS);
        send_batch(pub);
        if (stop && queue_empty(pub))
            return NULL;
    }
}

/* Ends the sender once what is queued went to the bus or the spool. */
static void stop_sender(px_publisher_t *pub)
{
    pthread_mutex_lock(&pub->q_mu);
    pub->q_stop = true;
    pthread_cond_broadcast(&pub->q_cond);
    pthread_mutex_unlock(&pub->q_mu);
    pthread_join(pub->sender, NULL);
}

static rl_status_t publish_one(px_publisher_t *pub, const px_trace_t *t, bool decision)
{
    if (!pub || !t)
        return rl_error(RL_ERR_INVALID, "px_publisher: missing argument");
    char subject[RL_BUS_SUBJECT_MAX];
    rl_status_t st =
        decision ? rl_bus_subject_decisions(t->tenant_id, t->agent_id, subject, sizeof subject)
                 : rl_bus_subject_traces(t->tenant_id, t->agent_id, subject, sizeof subject);
    size_t idlen = strnlen(t->trace_id, sizeof t->trace_id);
    if (st == RL_OK && (idlen == 0 || idlen == sizeof t->trace_id))
        st = rl_error(RL_ERR_INVALID, "trace without a trace id");
    if (st != RL_OK) {
        rl_counter_add(pub->dropped, 1);
        return st;
    }
    struct queued *q = node_get(pub);
    if (!q) {
        rl_counter_add(pub->dropped, 1);
        return rl_error(RL_ERR_NOMEM, "publisher queue node");
    }
    /* Nats-Msg-Id: the trace id; a decision's gets ":d" so that every message
     * of the bus has an id of its own (dedupe is per stream anyway). */
    memcpy(q->msg_id, t->trace_id, idlen);
    if (decision)
        memcpy(q->msg_id + idlen, ":d", 3);
    else
        q->msg_id[idlen] = '\0';
    memcpy(q->subject, subject, sizeof subject);
    q->published = decision ? pub->pub_decision : pub->pub_trace;
    st = px_trace_encode(t, decision, pub->body_max, &q->msg);
    if (st != RL_OK) {
        rl_counter_add(pub->dropped, 1);
        nodes_put(pub, &q, 1);
        return st;
    }
    return publish(pub, q);
}

rl_status_t px_publisher_decision(px_publisher_t *pub, const px_trace_t *t)
{
    return publish_one(pub, t, true);
}

rl_status_t px_publisher_trace(px_publisher_t *pub, const px_trace_t *t)
{
    return publish_one(pub, t, false);
}

void px_publisher_nack(px_publisher_t *pub, const rl_bus_nack_t *nack)
{
    if (!pub || !nack || !nack->subject || !nack->msg_id)
        return;
    atomic_fetch_add(&pub->nacks, 1);
    pthread_mutex_lock(&pub->spool_mu);
    if (pub->spool)
        (void)spool_put(pub, nack->subject, nack->msg_id, nack->data, nack->len);
    else
        rl_counter_add(pub->dropped, 1);
    pthread_mutex_unlock(&pub->spool_mu);
}

uint64_t px_publisher_spool_depth(px_publisher_t *pub)
{
    return pub ? px_spool_depth(pub->spool) : 0;
}

/* ---- the replay thread ---- */

typedef struct {
    bool uncommitted;     /* records advanced past since the latest commit */
    int64_t last_publish; /* when the latest of them was handed to the bus */
    uint64_t corrupt_seen;
    uint64_t nacks_seen;
    int64_t last_nack;       /* when nacks_seen last changed */
    int64_t nack_backoff_ms; /* 0 once no nack came back for NACK_BACKOFF_MAX_MS */
} replay_t;

static bool stopping(px_publisher_t *pub)
{
    pthread_mutex_lock(&pub->mu);
    bool s = pub->stop;
    pthread_mutex_unlock(&pub->mu);
    return s;
}

/* Publishes spooled records in order until the spool is empty, max records
 * went out, or the bus refuses. Returns how many went out; *refused tells
 * whether the bus refused one. */
static size_t replay_batch(px_publisher_t *pub, replay_t *r, size_t max, bool *refused)
{
    size_t n = 0;
    *refused = false;
    while (n < max) {
        px_spool_record_t rec;
        rl_status_t st = px_spool_peek(pub->spool, &rec);
        if (st == RL_ERR_NOT_FOUND)
            break;
        if (st != RL_OK) { /* I/O: try again later */
            *refused = true;
            break;
        }
        st = rl_bus_publish_js(pub->bus, rec.subject, rec.msg_id, rec.data, rec.len);
        /* counted in traces (decisions), like spooled: a record may be a batch */
        if (st == RL_OK) {
            rl_counter_add(pub->replayed, lines_in(rec.data, rec.len));
            r->last_publish = mono_ms();
        } else if (st == RL_ERR_INVALID || st == RL_ERR_TOO_LARGE) {
            rl_counter_add(pub->dropped, lines_in(rec.data, rec.len)); /* can never be published */
        } else {
            *refused = true; /* unavailable (window full, disconnected), no memory */
            break;
        }
        px_spool_advance(pub->spool);
        r->uncommitted = true;
        n++;
    }
    return n;
}

/* Commits the read position once every record before it was acked or, if it
 * failed, spooled again by px_publisher_nack: the bus has no publish awaiting
 * an ack (its on_ack_failure runs before the count drops), or the latest
 * replayed publish is older than any ack timeout. A crash before the commit
 * replays those records again: duplicates, which Nats-Msg-Id and the
 * consumers absorb. */
static void maybe_commit(px_publisher_t *pub, replay_t *r, bool force)
{
    if (!r->uncommitted)
        return;
    if (force || bus_pending(pub) == 0 || mono_ms() - r->last_publish >= COMMIT_FORCE_MS) {
        if (px_spool_commit(pub->spool) == RL_OK)
            r->uncommitted = false;
    }
}

static bool wait_acks(px_publisher_t *pub, int64_t max_ms, bool until_stop)
{
    int64_t end = mono_ms() + max_ms;
    while (bus_pending(pub) > 0) {
        if (mono_ms() >= end || (until_stop && stopping(pub)))
            return false;
        nap_ms(1);
    }
    return true;
}

static void update_levels(px_publisher_t *pub, replay_t *r)
{
    px_spool_stats_t st;
    px_spool_stats(pub->spool, &st);
    rl_gauge_set(pub->depth, (double)st.depth);
    if (st.corrupt > r->corrupt_seen) {
        rl_counter_add(pub->dropped, st.corrupt - r->corrupt_seen);
        r->corrupt_seen = st.corrupt;
    }
}

/* CLOCK_MONOTONIC (pub->cond's clock) ms from now. */
static struct timespec deadline_in(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    return ts;
}

/* Waits up to ms; a wake() (something was spooled) or a stop ends it early
 * unless until_stop, when only a stop does. */
static void idle_wait(px_publisher_t *pub, int64_t ms, bool until_stop)
{
    struct timespec ts = deadline_in(ms);
    pthread_mutex_lock(&pub->mu);
    while (!pub->stop) {
        if (pthread_cond_timedwait(&pub->cond, &pub->mu, &ts) == ETIMEDOUT || !until_stop)
            break;
    }
    pthread_mutex_unlock(&pub->mu);
}

/* Nothing spooled: sleeps until spool_put's wake (or QUIET_WAIT_MS), not
 * 50 times a second. */
static void quiet_wait(px_publisher_t *pub)
{
    struct timespec ts = deadline_in(QUIET_WAIT_MS);
    pthread_mutex_lock(&pub->mu);
    if (!pub->stop && px_spool_depth(pub->spool) == 0)
        pthread_cond_timedwait(&pub->cond, &pub->mu, &ts);
    pthread_mutex_unlock(&pub->mu);
}

/* A server that refuses every message (its storage full, say) nacks at once
 * what replay sends, and replay would spin on the same records: while nacks
 * keep coming, pause before each round, 10 ms doubling to 1 s. */
static void nack_backoff(px_publisher_t *pub, replay_t *r)
{
    uint64_t nacks = atomic_load(&pub->nacks);
    int64_t now = mono_ms();
    if (nacks != r->nacks_seen) {
        r->nacks_seen = nacks;
        r->last_nack = now;
        r->nack_backoff_ms = r->nack_backoff_ms ? r->nack_backoff_ms * 2 : NACK_BACKOFF_MIN_MS;
        if (r->nack_backoff_ms > NACK_BACKOFF_MAX_MS)
            r->nack_backoff_ms = NACK_BACKOFF_MAX_MS;
    } else if (now - r->last_nack > NACK_BACKOFF_MAX_MS) {
        r->nack_backoff_ms = 0;
    }
    if (r->nack_backoff_ms && px_spool_depth(pub->spool) > 0)
        idle_wait(pub, r->nack_backoff_ms, true);
}

static void *replay_main(void *arg)
{
    px_publisher_t *pub = arg;
    pthread_setname_np(pthread_self(), "px-replay");
    replay_t r = {0};
    int64_t last_sync = mono_ms();
    while (!stopping(pub)) {
        size_t sent = 0;
        bool refused = false;
        nack_backoff(pub, &r);
        if (px_spool_depth(pub->spool) > 0 && rl_bus_is_ready(pub->bus) && !stopping(pub))
            sent = replay_batch(pub, &r, REPLAY_BATCH, &refused);
        if (sent == REPLAY_BATCH) /* a long replay: let the acks in so segments can go */
            wait_acks(pub, ACK_DRAIN_WAIT_MS, true);
        maybe_commit(pub, &r, false);
        if (mono_ms() - last_sync >= SYNC_INTERVAL_MS) {
            (void)px_spool_sync(pub->spool);
            last_sync = mono_ms();
        }
        update_levels(pub, &r);
        if (refused) {
            idle_wait(pub, BACKOFF_MS, false);
        } else if (sent == 0 && px_spool_depth(pub->spool) == 0 && !r.uncommitted) {
            (void)px_spool_sync(pub->spool);
            last_sync = mono_ms();
            quiet_wait(pub);
        } else if (sent == 0) {
            idle_wait(pub, IDLE_WAIT_MS, false);
        }
    }

    /* Stopping: replay what the bus takes within FLUSH_MS, then wait for every
     * ack (failures are spooled again) before the last commit. */
    int64_t end = mono_ms() + FLUSH_MS;
    while (px_spool_depth(pub->spool) > 0 && rl_bus_is_ready(pub->bus) && mono_ms() < end) {
        bool refused = false;
        replay_batch(pub, &r, REPLAY_BATCH, &refused);
        if (refused)
            nap_ms(BACKOFF_MS);
    }
    if (wait_acks(pub, DESTROY_ACK_WAIT_MS, false))
        maybe_commit(pub, &r, true);
    (void)px_spool_sync(pub->spool);
    update_levels(pub, &r);
    return NULL;
}

/* ---- create / destroy ---- */

static rl_status_t register_metrics(px_publisher_t *pub, rl_metrics_t *m)
{
    if (!m)
        return RL_OK;
    rl_status_t st =
        rl_metrics_gauge(m, "renlayer_proxy_spool_depth",
                         "Bus messages (one or more traces each) waiting in the proxy's on-disk spool", NULL, &pub->depth);
    if (st == RL_OK)
        st = rl_metrics_counter(m, "renlayer_proxy_spool_dropped_total",
                                "Messages lost: spool full, disk error, corrupt record, or "
                                "a message the bus can never take",
                                NULL, &pub->dropped);
    if (st == RL_OK)
        st = rl_metrics_counter(m, "renlayer_proxy_messages_published_total",
                                "Messages handed to JetStream on the request path",
                                "kind=\"trace\"", &pub->pub_trace);
    if (st == RL_OK)
        st = rl_metrics_counter(m, "renlayer_proxy_messages_published_total", NULL,
                                "kind=\"decision\"", &pub->pub_decision);
    if (st == RL_OK)
        st = rl_metrics_counter(
            m, "renlayer_proxy_messages_spooled_total",
            "Traces and decisions written to the spool (bus unavailable, or not acked)", NULL,
            &pub->spooled);
    if (st == RL_OK)
        st = rl_metrics_counter(m, "renlayer_proxy_messages_replayed_total",
                                "Spooled traces and decisions handed to JetStream", NULL,
                                &pub->replayed);
    static const double lines[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
    if (st == RL_OK)
        st = rl_metrics_histogram(m, "renlayer_proxy_bus_message_lines",
                                  "Traces or decisions per bus message the sender thread "
                                  "published (docs/bus.md)",
                                  NULL, lines, sizeof lines / sizeof *lines, &pub->lines);
    return st;
}

rl_status_t px_publisher_create(const px_publisher_options_t *opts, px_publisher_t **out)
{
    if (!opts || !out || !opts->bus || !opts->spool_dir || opts->spool_max_bytes < 0)
        return rl_error(RL_ERR_INVALID, "px_publisher: missing bus or spool_dir");
    px_publisher_t *pub = calloc(1, sizeof *pub);
    if (!pub)
        return rl_error(RL_ERR_NOMEM, "px_publisher");
    pub->bus = opts->bus;
    rl_buf_init(&pub->batch, BATCH_BYTES_MAX);
    atomic_init(&pub->nacks, 0);
    pub->body_max = opts->body_max_bytes ? opts->body_max_bytes : BODY_MAX_DEFAULT;
    /* a body can grow 6x when escaped (control bytes as \u00XX) */
    pub->msg_max = pub->body_max > (SIZE_MAX - MSG_FIXED_MAX) / 12
                       ? SIZE_MAX / 2
                       : 12 * pub->body_max + MSG_FIXED_MAX;
    rl_status_t st = register_metrics(pub, opts->metrics);
    if (st != RL_OK) {
        free(pub);
        return st;
    }
    px_spool_options_t so = {
        .dir = opts->spool_dir,
        .max_bytes = opts->spool_max_bytes ? opts->spool_max_bytes : SPOOL_MAX_DEFAULT,
        .record_max = pub->msg_max > BATCH_BYTES_MAX ? pub->msg_max : BATCH_BYTES_MAX,
    };
    st = px_spool_open(&so, &pub->spool);
    if (st != RL_OK) {
        free(pub);
        return st;
    }
    pthread_mutex_init(&pub->spool_mu, NULL);
    pthread_mutex_init(&pub->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&pub->cond, &ca);
    pthread_condattr_destroy(&ca);
    rl_gauge_set(pub->depth, (double)px_spool_depth(pub->spool));
    pthread_mutex_init(&pub->q_mu, NULL);
    pthread_cond_init(&pub->q_cond, NULL);
    if (pthread_create(&pub->sender, NULL, sender_main, pub) != 0) {
        px_spool_close(pub->spool);
        pthread_cond_destroy(&pub->q_cond);
        pthread_mutex_destroy(&pub->q_mu);
        pthread_cond_destroy(&pub->cond);
        pthread_mutex_destroy(&pub->mu);
        pthread_mutex_destroy(&pub->spool_mu);
        free(pub);
        return rl_error(RL_ERR_INTERNAL, "px_publisher: sender thread: %s", strerror(errno));
    }
    if (pthread_create(&pub->thread, NULL, replay_main, pub) != 0) {
        stop_sender(pub);
        pthread_cond_destroy(&pub->q_cond);
        pthread_mutex_destroy(&pub->q_mu);
        px_spool_close(pub->spool);
        pthread_cond_destroy(&pub->cond);
        pthread_mutex_destroy(&pub->mu);
        pthread_mutex_destroy(&pub->spool_mu);
        rl_buf_free(&pub->batch);
        free(pub);
        return rl_error(RL_ERR_INTERNAL, "px_publisher: replay thread: %s", strerror(errno));
    }
    *out = pub;
    return RL_OK;
}

void px_publisher_stop(px_publisher_t *pub)
{
    if (!pub || pub->threads_stopped)
        return;
    /* the sender first: what it holds goes to the bus or the spool */
    stop_sender(pub);
    pthread_mutex_lock(&pub->mu);
    pub->stop = true;
    pthread_cond_broadcast(&pub->cond);
    pthread_mutex_unlock(&pub->mu);
    pthread_join(pub->thread, NULL);
    pub->threads_stopped = true;
}

void px_publisher_destroy(px_publisher_t *pub)
{
    if (!pub)
        return;
    px_publisher_stop(pub);
    /* no metric from here on: the registry may be gone already */
    pthread_mutex_lock(&pub->spool_mu);
    px_spool_close(pub->spool);
    pub->spool = NULL;
    pthread_mutex_unlock(&pub->spool_mu);

    pthread_cond_destroy(&pub->q_cond);
    pthread_mutex_destroy(&pub->q_mu);
    pthread_cond_destroy(&pub->cond);
    pthread_mutex_destroy(&pub->mu);
    pthread_mutex_destroy(&pub->spool_mu);
    while (pub->q_free) {
        struct queued *next = pub->q_free->next;
        node_free(pub->q_free);
        pub->q_free = next;
    }
    rl_buf_free(&pub->batch);
    free(pub);
}
