/* px_trace: the v1 trace and decision messages (docs/bus.md, schemas in
 * docs/schemas/); px_publisher.c gets them to JetStream or to the spool.
 *
 * The encoder writes JSON text straight into an rl_buf: building a jansson
 * tree and dumping it cost tens of microseconds per trace (DESIGN.md), and
 * the only work here is escaping. Text comes out as valid UTF-8: an invalid
 * sequence becomes one U+FFFD per maximal invalid subpart (the Unicode
 * recommendation), and so does a NUL byte (jansson, rl_json_parse and
 * Postgres text all refuse it); other control characters are escaped. */
#include "px_trace.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define FIELD_MAX 4096 /* bytes kept of any other free-text field (user, path, error, ...) */

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
        w_trace_rest(&w, t, body_max ? body_max : PX_TRACE_BODY_MAX_DEFAULT);
    }
    if (w.st != RL_OK) {
        out->len = mark; /* all or nothing */
        if (out->data)
            out->data[mark] = '\0';
    }
    return w.st;
}
