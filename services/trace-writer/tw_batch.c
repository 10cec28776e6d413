#include "tw_batch.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "rl_json.h"
#include "rl_uuid.h"

#define ROWS_MAX_DEFAULT ((size_t)256 << 20)
#define US_PER_DAY (86400LL * 1000000)
#define V7_SKEW_US (3600LL * 1000000) /* the *_trace_id_v7_check tolerance */
#define INT32_LIMIT 2147483647LL
#define COST_LIMIT 1e10 /* numeric(18, 8) holds less */

static const char *const REASONS[TW_REASON_COUNT] = {
    [TW_REASON_NONE] = "none",
    [TW_REASON_INVALID_JSON] = "invalid_json",
    [TW_REASON_UNSUPPORTED_VERSION] = "unsupported_version",
    [TW_REASON_INVALID_FIELD] = "invalid_field",
    [TW_REASON_TRACE_ID_MISMATCH] = "trace_id_mismatch",
    [TW_REASON_TIME_OUT_OF_RANGE] = "time_out_of_range",
    [TW_REASON_UNKNOWN_TENANT] = "unknown_tenant",
    [TW_REASON_DB_REJECTED] = "db_rejected",
    [TW_REASON_PAST_RETENTION] = "past_retention",
};

const char *tw_reason_name(tw_reason_t r)
{
    return (r >= 0 && r < TW_REASON_COUNT) ? REASONS[r] : "unknown";
}

/* ---- time ---------------------------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int64_t *m, int64_t *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = yoe + era * 400 + (*m <= 2);
}

static bool digits(const char *s, int n, int64_t *out)
{
    int64_t v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

rl_status_t tw_time_parse(const char *s, int64_t *out_us)
{
    int64_t y, mo, d, h, mi, se;
    if (!s || strlen(s) < 20 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) ||
        s[7] != '-' || !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') ||
        !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' ||
        !digits(s + 17, 2, &se))
        return RL_ERR_INVALID;
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 ||
        mi > 59 || se > 60)
        return RL_ERR_INVALID;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo == 2 && d == 29 && !leap)
        return RL_ERR_INVALID;
    const char *p = s + 19;
    int64_t frac = 0;
    if (*p == '.') {
        p++;
        int n = 0;
        while (p[n] >= '0' && p[n] <= '9')
            n++;
        if (n == 0 || n > 9)
            return RL_ERR_INVALID;
        for (int i = 0; i < 6; i++)
            frac = frac * 10 + (i < n ? p[i] - '0' : 0);
        p += n;
    }
    int64_t offset_s = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int64_t oh, om;
        if (!digits(p + 1, 2, &oh) || p[3] != ':' || !digits(p + 4, 2, &om) || oh > 23 || om > 59)
            return RL_ERR_INVALID;
        offset_s = (oh * 3600 + om * 60) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return RL_ERR_INVALID;
    }
    if (*p != '\0')
        return RL_ERR_INVALID;
    if (se == 60)
        se = 59; /* a leap second: PostgreSQL has none either */
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset_s;
    if (secs < 0)
        return RL_ERR_INVALID;
    *out_us = secs * 1000000 + frac;
    return RL_OK;
}

int64_t tw_day_of(int64_t us)
{
    return us >= 0 ? us / US_PER_DAY : -((-us + US_PER_DAY - 1) / US_PER_DAY);
}

void tw_day_format(int64_t day, char out[11])
{
    int64_t y, m, d;
    civil_from_days(day, &y, &m, &d);
    unsigned yy = (unsigned)(y % 10000), mm = (unsigned)m % 100, dd = (unsigned)d % 100;
    out[0] = (char)('0' + yy / 1000);
    out[1] = (char)('0' + yy / 100 % 10);
    out[2] = (char)('0' + yy / 10 % 10);
    out[3] = (char)('0' + yy % 10);
    out[4] = '-';
    out[5] = (char)('0' + mm / 10);
    out[6] = (char)('0' + mm % 10);
    out[7] = '-';
    out[8] = (char)('0' + dd / 10);
    out[9] = (char)('0' + dd % 10);
    out[10] = '\0';
}

/* ---- batch ----------------------------------------------------------------------------- */

rl_status_t tw_batch_init(tw_batch_t *b, tw_kind_t kind, size_t cap, size_t rows_max)
{
    memset(b, 0, sizeof *b);
    if (cap == 0)
        return rl_error(RL_ERR_INVALID, "tw_batch_init: cap must be >= 1");
    b->items = calloc(cap, sizeof *b->items);
    if (!b->items)
        return rl_error(RL_ERR_NOMEM, "tw_batch_init: %zu items", cap);
    b->kind = kind;
    b->cap = cap;
    for (int t = 0; t < TW_TABLES; t++)
        rl_buf_init(&b->rows[t], rows_max ? rows_max : ROWS_MAX_DEFAULT);
    return RL_OK;
}

void tw_batch_reset(tw_batch_t *b)
{
    b->n = 0;
    b->dirty = false;
    for (int t = 0; t < TW_TABLES; t++)
        rl_buf_reset(&b->rows[t]);
}

void tw_batch_free(tw_batch_t *b)
{
    if (!b)
        return;
    free(b->items);
    b->items = NULL;
    b->n = b->cap = 0;
    for (int t = 0; t < TW_TABLES; t++)
        rl_buf_free(&b->rows[t]);
}

size_t tw_batch_count(const tw_batch_t *b, tw_item_state_t state)
{
    size_t n = 0;
    for (size_t i = 0; i < b->n; i++)
        n += b->items[i].state == state;
    return n;
}

void tw_batch_kill(tw_batch_t *b, size_t i, tw_reason_t reason, const char *detail)
{
    if (i >= b->n)
        return;
    tw_item_t *it = &b->items[i];
    if (it->state == TW_ITEM_ROWS)
        b->dirty = true;
    it->state = reason == TW_REASON_PAST_RETENTION ? TW_ITEM_DROPPED : TW_ITEM_DEAD;
    it->reason = reason;
    snprintf(it->detail, sizeof it->detail, "%s", detail ? detail : "");
}

void tw_batch_compact(tw_batch_t *b)
{
    for (int t = 0; t < TW_TABLES; t++) {
        rl_buf_t *buf = &b->rows[t];
        size_t w = 0;
        for (size_t i = 0; i < b->n; i++) {
            tw_item_t *it = &b->items[i];
            if (it->state != TW_ITEM_ROWS) {
                it->begin[t] = it->end[t] = w;
                continue;
            }
            size_t len = it->end[t] - it->begin[t];
            if (len > 0 && it->begin[t] != w)
                memmove(buf->data + w, buf->data + it->begin[t], len);
            it->begin[t] = w;
            it->end[t] = w + len;
            w += len;
        }
        buf->len = w;
        if (buf->data)
            buf->data[w] = '\0';
    }
    b->dirty = false;
}

/* ---- the encoder ------------------------------------------------------------------------ */

/* One message being encoded: buffer errors end everything (st), a bad field
 * only this message (reason). */
typedef struct {
    tw_batch_t *b;
    tw_item_t *it;
    rl_status_t st;
    tw_reason_t reason;
} enc_t;

static bool fail(enc_t *e, tw_reason_t reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool fail(enc_t *e, tw_reason_t reason, const char *fmt, ...)
{
    if (e->reason == TW_REASON_NONE) {
        e->reason = reason;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->it->detail, sizeof e->it->detail, fmt, ap);
        va_end(ap);
    }
    return false;
}

static void put(enc_t *e, int t, const void *s, size_t n)
{
    if (e->st == RL_OK)
        e->st = rl_buf_append(&e->b->rows[t], s, n);
}

#define PUT_LIT(e, t, lit) put((e), (t), (lit), sizeof(lit) - 1)

/* A column separator, then nothing else: the value follows. */
static void tab(enc_t *e, int t)
{
    PUT_LIT(e, t, "\t");
}

static void null(enc_t *e, int t)
{
    PUT_LIT(e, t, "\\N");
}

/* Text in COPY's text format: backslash, newline, carriage return and tab
 * escaped; everything else (valid UTF-8 without NUL, as jansson guarantees)
 * as is. */
static void text(enc_t *e, int t, const char *s, size_t n)
{
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i], esc;
        switch (c) {
        case '\\':
            esc = '\\';
            break;
        case '\n':
            esc = 'n';
            break;
        case '\r':
            esc = 'r';
            break;
        case '\t':
            esc = 't';
            break;
        default:
            continue;
        }
        put(e, t, s + run, i - run);
        char pair[2] = {'\\', esc};
        put(e, t, pair, 2);
        run = i + 1;
    }
    put(e, t, s + run, n - run);
}

static void text_or_null(enc_t *e, int t, const json_t *v)
{
    if (v)
        text(e, t, json_string_value(v), json_string_length(v));
    else
        null(e, t);
}

static void integer(enc_t *e, int t, int64_t v)
{
    char buf[24];
    int n = snprintf(buf, sizeof buf, "%" PRId64, v);
    put(e, t, buf, (size_t)n);
}

static void timestamp(enc_t *e, int t, int64_t us)
{
    int64_t secs = us / 1000000, frac = us % 1000000;
    int64_t y, m, d;
    civil_from_days(secs / 86400, &y, &m, &d);
    int64_t sod = secs % 86400;
    char buf[40];
    int n = snprintf(buf, sizeof buf, "%04d-%02d-%02d %02d:%02d:%02d.%06d+00", (int)y, (int)m,
                     (int)d, (int)(sod / 3600), (int)(sod / 60 % 60), (int)(sod % 60), (int)frac);
    put(e, t, buf, (size_t)n);
}

static void boolean(enc_t *e, int t, bool v)
{
    put(e, t, v ? "t" : "f", 1);
}

static int dump_cb(const char *buffer, size_t size, void *data)
{
    text(data, TW_TABLE_MAIN, buffer, size);
    return 0;
}

/* ---- field access: each returns false after recording why -------------------------------- */

/* The value at key, NULL when absent or null. */
static json_t *field(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

/* A string; *out NULL when absent or null (an error if required). */
static bool get_str(enc_t *e, const json_t *obj, const char *key, bool required, json_t **out)
{
    json_t *v = field(obj, key);
    *out = NULL;
    if (!v)
        return required ? fail(e, TW_REASON_INVALID_FIELD, "%s: missing", key) : true;
    if (!json_is_string(v))
        return fail(e, TW_REASON_INVALID_FIELD, "%s: must be a string", key);
    *out = v;
    return true;
}

static bool get_uuid(enc_t *e, const json_t *obj, const char *key, bool required, json_t **out,
                     rl_uuid_t *u)
{
    if (!get_str(e, obj, key, required, out))
        return false;
    rl_uuid_t tmp;
    if (*out && rl_uuid_parse(json_string_value(*out), u ? u : &tmp) != RL_OK)
        return fail(e, TW_REASON_INVALID_FIELD, "%s: must be a UUID", key);
    return true;
}

static bool get_enum(enc_t *e, const json_t *obj, const char *key, const char *const *allowed,
                     json_t **out)
{
    if (!get_str(e, obj, key, true, out))
        return false;
    for (const char *const *a = allowed; *a; a++)
        if (strcmp(json_string_value(*out), *a) == 0)
            return true;
    return fail(e, TW_REASON_INVALID_FIELD, "%s: unknown value", key);
}

static bool get_time(enc_t *e, const json_t *obj, const char *key, bool required, bool *present,
                     int64_t *us)
{
    json_t *v;
    if (!get_str(e, obj, key, required, &v))
        return false;
    *present = v != NULL;
    if (v && tw_time_parse(json_string_value(v), us) != RL_OK)
        return fail(e, TW_REASON_INVALID_FIELD, "%s: must be an RFC 3339 time", key);
    return true;
}

/* An integer in [lo, hi]; *present false when absent or null. */
static bool get_int(enc_t *e, const json_t *obj, const char *key, int64_t lo, int64_t hi,
                    bool *present, int64_t *out)
{
    json_t *v = field(obj, key);
    *present = v != NULL;
    if (!v)
        return true;
    if (!json_is_integer(v))
        return fail(e, TW_REASON_INVALID_FIELD, "%s: must be an integer", key);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return fail(e, TW_REASON_INVALID_FIELD, "%s: out of range", key);
    *out = (int64_t)x;
    return true;
}

/* A number >= 0 below limit; *present false when absent or null. */
static bool get_num(enc_t *e, const json_t *obj, const char *key, double limit, bool *present,
                    double *out)
{
    json_t *v = field(obj, key);
    *present = v != NULL;
    if (!v)
        return true;
    if (!json_is_number(v))
        return fail(e, TW_REASON_INVALID_FIELD, "%s: must be a number", key);
    double x = json_number_value(v);
    if (!isfinite(x) || x < 0 || x >= limit)
        return fail(e, TW_REASON_INVALID_FIELD, "%s: out of range", key);
    *out = x;
    return true;
}

static bool get_bool(enc_t *e, const json_t *obj, const char *key, bool *out)
{
    json_t *v = field(obj, key);
    *out = false;
    if (!v)
        return true;
    if (!json_is_boolean(v))
        return fail(e, TW_REASON_INVALID_FIELD, "%s: must be a boolean", key);
    *out = json_is_true(v);
    return true;
}

/* An array (NULL when absent or null) of at most TW_MAX_CHILDREN elements. */
static bool get_array(enc_t *e, const json_t *obj, const char *key, json_t **out)
{
    json_t *v = field(obj, key);
    *out = v;
    if (!v)
        return true;
    if (!json_is_array(v))
        return fail(e, TW_REASON_INVALID_FIELD, "%s: must be an array", key);
    if (json_array_size(v) > TW_MAX_CHILDREN)
        return fail(e, TW_REASON_INVALID_FIELD, "%s: more than %d elements", key, TW_MAX_CHILDREN);
    return true;
}

/* ---- the columns --------------------------------------------------------------------------- */

static const char *const ACTIONS[] = {"chat", "embedding", "mcp", "tool_call", "http", NULL};
static const char *const STATUSES[] = {"ALLOWED",     "FLAGGED",    "DENIED",
                                       "DLP_BLOCKED", "DLP_WARNED", NULL};
static const char *const SEVERITIES[] = {"low", "medium", "high", "critical", NULL};
static const char *const WHERES[] = {"request", "response", NULL};
static const char *const DLP_ACTIONS[] = {"block", "warn", "redact", NULL};
static const char *const PHASES[] = {"requested", "result", NULL};

/* What both kinds share, read and checked before anything is written. */
typedef struct {
    json_t *trace_id, *tenant_id, *agent_id, *gate_id, *api_key_id, *user, *session_id;
    json_t *action, *status, *policy_ids, *findings;
    int64_t started_us;
    bool has_http_status;
    int64_t http_status;
} common_t;

static bool read_common(enc_t *e, const json_t *m, const tw_limits_t *lim, common_t *c)
{
    rl_uuid_t trace, tenant, key;
    bool present;
    if (!get_uuid(e, m, "trace_id", true, &c->trace_id, &trace) ||
        !get_uuid(e, m, "tenant_id", true, &c->tenant_id, &tenant))
        return false;
    memcpy(e->it->tenant, tenant.b, 16);
    e->it->has_tenant = true;
    if (!get_uuid(e, m, "agent_id", true, &c->agent_id, NULL) ||
        !get_uuid(e, m, "gate_id", false, &c->gate_id, NULL) ||
        !get_uuid(e, m, "api_key_id", false, &c->api_key_id, &key) ||
        !get_str(e, m, "user", false, &c->user) ||
        !get_str(e, m, "session_id", false, &c->session_id) ||
        !get_enum(e, m, "action", ACTIONS, &c->action) ||
        !get_enum(e, m, "status", STATUSES, &c->status) ||
        !get_int(e, m, "http_status", 100, 599, &c->has_http_status, &c->http_status) ||
        !get_array(e, m, "policy_ids", &c->policy_ids) ||
        !get_array(e, m, "dlp_findings", &c->findings) ||
        !get_time(e, m, "started_at", true, &present, &c->started_us))
        return false;
    if (c->api_key_id) {
        memcpy(e->it->api_key, key.b, 16);
        e->it->has_api_key = true;
    }
    e->it->started_us = c->started_us;

    for (size_t i = 0; c->policy_ids && i < json_array_size(c->policy_ids); i++) {
        json_t *p = json_array_get(c->policy_ids, i);
        rl_uuid_t u;
        if (!json_is_string(p) || rl_uuid_parse(json_string_value(p), &u) != RL_OK)
            return fail(e, TW_REASON_INVALID_FIELD, "policy_ids[%zu]: must be a UUID", i);
    }
    for (size_t i = 0; c->findings && i < json_array_size(c->findings); i++) {
        json_t *f = json_array_get(c->findings, i), *v;
        if (!json_is_object(f))
            return fail(e, TW_REASON_INVALID_FIELD, "dlp_findings[%zu]: must be an object", i);
        if (!get_str(e, f, "detector", true, &v) || !get_enum(e, f, "severity", SEVERITIES, &v) ||
            !get_enum(e, f, "where", WHERES, &v) || !get_enum(e, f, "action", DLP_ACTIONS, &v))
            return fail(e, TW_REASON_INVALID_FIELD, "dlp_findings[%zu]: invalid", i);
    }

    /* the tie between id and time that the database CHECKs */
    uint64_t ms = rl_uuid_v7_ms(&trace);
    int64_t skew = (int64_t)ms * 1000 - c->started_us;
    if (ms == 0 || skew < -V7_SKEW_US || skew > V7_SKEW_US)
        return fail(e, TW_REASON_TRACE_ID_MISMATCH,
                    "trace_id: not a UUIDv7 within an hour of started_at");
    if (c->started_us > lim->now_us + TW_MAX_FUTURE_US)
        return fail(e, TW_REASON_TIME_OUT_OF_RANGE, "started_at: more than a day in the future");
    return true;
}

/* "{id,id}" for a uuid[] column. */
static void uuid_array(enc_t *e, int t, const json_t *a)
{
    PUT_LIT(e, t, "{");
    for (size_t i = 0; a && i < json_array_size(a); i++) {
        if (i > 0)
            PUT_LIT(e, t, ",");
        json_t *p = json_array_get(a, i);
        put(e, t, json_string_value(p), json_string_length(p));
    }
    PUT_LIT(e, t, "}");
}

/* trace_id, started_at, ordinal, tenant_id, agent_id: the key of a child row. */
static void child_key(enc_t *e, int t, const common_t *c, size_t ordinal)
{
    text_or_null(e, t, c->trace_id);
    tab(e, t);
    timestamp(e, t, c->started_us);
    tab(e, t);
    integer(e, t, (int64_t)ordinal);
    tab(e, t);
    text_or_null(e, t, c->tenant_id);
    tab(e, t);
    text_or_null(e, t, c->agent_id);
}

static void write_findings(enc_t *e, const common_t *c)
{
    for (size_t i = 0; c->findings && i < json_array_size(c->findings); i++) {
        json_t *f = json_array_get(c->findings, i);
        child_key(e, TW_TABLE_DLP, c, i);
        static const char *const keys[] = {"detector", "severity", "where", "action"};
        for (size_t k = 0; k < 4; k++) {
            tab(e, TW_TABLE_DLP);
            text_or_null(e, TW_TABLE_DLP, json_object_get(f, keys[k]));
        }
        PUT_LIT(e, TW_TABLE_DLP, "\n");
    }
}

static bool is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return false;
    }
    return true;
}

static bool check_tools(enc_t *e, const json_t *tools)
{
    for (size_t i = 0; tools && i < json_array_size(tools); i++) {
        json_t *tc = json_array_get(tools, i), *v;
        if (!json_is_object(tc))
            return fail(e, TW_REASON_INVALID_FIELD, "tool_calls[%zu]: must be an object", i);
        if (!get_str(e, tc, "name", false, &v) || !get_str(e, tc, "id", false, &v) ||
            !get_enum(e, tc, "phase", PHASES, &v) || !get_str(e, tc, "args_sha256", false, &v))
            return fail(e, TW_REASON_INVALID_FIELD, "tool_calls[%zu]: invalid", i);
        if (v && (json_string_length(v) != 64 || !is_hex(json_string_value(v), 64)))
            return fail(e, TW_REASON_INVALID_FIELD, "tool_calls[%zu].args_sha256: must be hex", i);
    }
    return true;
}

static void write_tools(enc_t *e, const common_t *c, const json_t *tools)
{
    const int t = TW_TABLE_TOOLS;
    for (size_t i = 0; tools && i < json_array_size(tools); i++) {
        json_t *tc = json_array_get(tools, i);
        child_key(e, t, c, i);
        tab(e, t);
        text_or_null(e, t, c->session_id);
        tab(e, t);
        /* name is NOT NULL in the table; a result whose call is unnamed gets "" */
        json_t *name = field(tc, "name");
        if (name)
            text_or_null(e, t, name);
        tab(e, t);
        text_or_null(e, t, field(tc, "id"));
        tab(e, t);
        text_or_null(e, t, field(tc, "phase"));
        tab(e, t);
        json_t *sha = field(tc, "args_sha256");
        if (sha) {
            PUT_LIT(e, t, "\\\\x"); /* bytea hex input "\x..." with COPY's backslash doubled */
            put(e, t, json_string_value(sha), 64);
        } else {
            null(e, t);
        }
        PUT_LIT(e, t, "\n");
    }
}

static void opt_int(enc_t *e, int t, bool present, int64_t v)
{
    if (present)
        integer(e, t, v);
    else
        null(e, t);
}

static bool encode_trace(enc_t *e, const json_t *m, const tw_limits_t *lim)
{
    common_t c;
    memset(&c, 0, sizeof c);
    if (!read_common(e, m, lim, &c))
        return false;
    json_t *method = NULL, *path = NULL, *model = NULL, *upstream = NULL, *error = NULL;
    json_t *req = NULL, *resp = NULL, *usage = NULL, *tools = NULL, *attempts = NULL;
    bool has_ended, has_cost, has_lat, has_up, has_over, stream, truncated;
    int64_t ended_us = 0, overhead = 0;
    double cost = 0, lat = 0, up = 0;
    if (!get_str(e, m, "method", true, &method) || !get_str(e, m, "path", true, &path) ||
        !get_str(e, m, "model", false, &model) || !get_str(e, m, "upstream", false, &upstream) ||
        !get_str(e, m, "error", false, &error) || !get_str(e, m, "request_body", false, &req) ||
        !get_str(e, m, "response_body", false, &resp) ||
        !get_time(e, m, "ended_at", false, &has_ended, &ended_us) ||
        !get_num(e, m, "cost_usd", COST_LIMIT, &has_cost, &cost) ||
        !get_num(e, m, "latency_ms", (double)INT32_LIMIT, &has_lat, &lat) ||
        !get_num(e, m, "upstream_ms", (double)INT32_LIMIT, &has_up, &up) ||
        !get_int(e, m, "overhead_us", 0, INT32_LIMIT, &has_over, &overhead) ||
        !get_bool(e, m, "stream", &stream) || !get_bool(e, m, "truncated", &truncated) ||
        !get_array(e, m, "tool_calls", &tools) || !get_array(e, m, "attempts", &attempts) ||
        !check_tools(e, tools))
        return false;

    static const char *const usage_keys[] = {"input_tokens",        "output_tokens",
                                             "cached_input_tokens", "cache_write_tokens",
                                             "reasoning_tokens",    "total_tokens"};
    int64_t counts[6] = {0};
    usage = field(m, "usage");
    if (usage && !json_is_object(usage))
        return fail(e, TW_REASON_INVALID_FIELD, "usage: must be an object");
    for (size_t i = 0; usage && i < 6; i++) {
        bool present;
        if (!get_int(e, usage, usage_keys[i], 0, INT32_LIMIT, &present, &counts[i]))
            return false;
    }
    for (size_t i = 0; attempts && i < json_array_size(attempts); i++)
        if (!json_is_object(json_array_get(attempts, i)))
            return fail(e, TW_REASON_INVALID_FIELD, "attempts[%zu]: must be an object", i);

    const int t = TW_TABLE_MAIN;
    text_or_null(e, t, c.trace_id);
    tab(e, t);
    timestamp(e, t, c.started_us);
    tab(e, t);
    if (has_ended)
        timestamp(e, t, ended_us);
    else
        null(e, t);
    json_t *cols1[] = {c.tenant_id, c.agent_id, c.gate_id, c.api_key_id, c.user,   c.session_id,
                       c.action,    method,     path,      model,        upstream, c.status};
    for (size_t i = 0; i < sizeof cols1 / sizeof *cols1; i++) {
        tab(e, t);
        text_or_null(e, t, cols1[i]);
    }
    tab(e, t);
    opt_int(e, t, c.has_http_status, c.http_status);
    tab(e, t);
    uuid_array(e, t, c.policy_ids);
    for (size_t i = 0; i < 6; i++) {
        tab(e, t);
        integer(e, t, counts[i]);
    }
    tab(e, t);
    if (has_cost) {
        char buf[40];
        int n = snprintf(buf, sizeof buf, "%.17g", cost);
        put(e, t, buf, (size_t)n);
    } else {
        null(e, t);
    }
    tab(e, t);
    opt_int(e, t, has_lat, llround(lat));
    tab(e, t);
    opt_int(e, t, has_up, llround(up));
    tab(e, t);
    opt_int(e, t, has_over, overhead);
    tab(e, t);
    boolean(e, t, stream);
    tab(e, t);
    text_or_null(e, t, error);
    tab(e, t);
    if (attempts) {
        if (json_dump_callback(attempts, dump_cb, e, JSON_COMPACT) != 0 && e->st == RL_OK)
            e->st = rl_error(RL_ERR_NOMEM, "attempts: cannot encode");
    } else {
        null(e, t);
    }
    tab(e, t);
    text_or_null(e, t, req);
    tab(e, t);
    text_or_null(e, t, resp);
    tab(e, t);
    boolean(e, t, truncated);
    PUT_LIT(e, t, "\n");

    write_findings(e, &c);
    write_tools(e, &c, tools);
    return true;
}

static bool encode_decision(enc_t *e, const json_t *m, const tw_limits_t *lim)
{
    common_t c;
    memset(&c, 0, sizeof c);
    if (!read_common(e, m, lim, &c))
        return false;
    json_t *reason;
    bool present;
    int64_t decided_us = 0;
    if (!get_time(e, m, "decided_at", true, &present, &decided_us) ||
        !get_str(e, m, "reason", false, &reason))
        return false;

    const int t = TW_TABLE_MAIN;
    text_or_null(e, t, c.trace_id);
    tab(e, t);
    timestamp(e, t, c.started_us);
    tab(e, t);
    timestamp(e, t, decided_us);
    json_t *cols[] = {c.tenant_id, c.agent_id,   c.gate_id, c.api_key_id,
                      c.user,      c.session_id, c.action,  c.status};
    for (size_t i = 0; i < sizeof cols / sizeof *cols; i++) {
        tab(e, t);
        text_or_null(e, t, cols[i]);
    }
    tab(e, t);
    opt_int(e, t, c.has_http_status, c.http_status);
    tab(e, t);
    /* policy_id: the policy whose match decided, the first that matched */
    json_t *first = c.policy_ids ? json_array_get(c.policy_ids, 0) : NULL;
    text_or_null(e, t, first);
    tab(e, t);
    uuid_array(e, t, c.policy_ids);
    tab(e, t);
    text_or_null(e, t, reason);
    PUT_LIT(e, t, "\n");
    return true;
}

rl_status_t tw_batch_add(tw_batch_t *b, const void *data, size_t len, const tw_limits_t *lim,
                         void *ref, tw_item_t **out)
{
    if (b->n == b->cap) { /* a bus message may carry many traces: grow */
        if (b->cap >= TW_BATCH_ITEMS_MAX)
            return rl_error(RL_ERR_TOO_LARGE, "batch full (%zu items)", b->cap);
        size_t cap = b->cap * 2 > TW_BATCH_ITEMS_MAX ? TW_BATCH_ITEMS_MAX : b->cap * 2;
        tw_item_t *items = realloc(b->items, cap * sizeof *items);
        if (!items)
            return rl_error(RL_ERR_NOMEM, "batch of %zu items", cap);
        b->items = items;
        b->cap = cap;
    }
    tw_item_t *it = &b->items[b->n];
    memset(it, 0, sizeof *it);
    it->data = data;
    it->len = len;
    it->ref = ref;
    for (int t = 0; t < TW_TABLES; t++)
        it->begin[t] = it->end[t] = b->rows[t].len;

    enc_t e = {.b = b, .it = it, .st = RL_OK, .reason = TW_REASON_NONE};
    json_t *m = NULL;
    if (rl_json_parse_object(data, len, 0, &m) != RL_OK) {
        fail(&e, TW_REASON_INVALID_JSON, "%s", rl_error_last());
    } else {
        json_t *v = json_object_get(m, "v"), *kind = json_object_get(m, "kind");
        const char *want = b->kind == TW_KIND_TRACE ? "trace" : "decision";
        if (!json_is_integer(v))
            fail(&e, TW_REASON_INVALID_FIELD, "v: must be an integer");
        else if (json_integer_value(v) != 1)
            fail(&e, TW_REASON_UNSUPPORTED_VERSION, "v: %" JSON_INTEGER_FORMAT " is not supported",
                 json_integer_value(v));
        else if (kind && !json_is_null(kind) &&
                 (!json_is_string(kind) || strcmp(json_string_value(kind), want) != 0))
            fail(&e, TW_REASON_INVALID_FIELD, "kind: must be \"%s\" on this stream", want);
        else if (b->kind == TW_KIND_TRACE)
            encode_trace(&e, m, lim);
        else
            encode_decision(&e, m, lim);
    }
    json_decref(m);

    if (e.st != RL_OK || e.reason != TW_REASON_NONE) {
        for (int t = 0; t < TW_TABLES; t++) { /* all or nothing */
            b->rows[t].len = it->begin[t];
            if (b->rows[t].data)
                b->rows[t].data[it->begin[t]] = '\0';
        }
    }
    if (e.st != RL_OK) {
        memset(it, 0, sizeof *it);
        return e.st;
    }
    if (e.reason != TW_REASON_NONE) {
        it->state = TW_ITEM_DEAD;
        it->reason = e.reason;
    } else {
        int64_t oldest = tw_day_of(lim->now_us) - lim->retention_days;
        if (tw_day_of(it->started_us) < oldest) {
            for (int t = 0; t < TW_TABLES; t++) {
                b->rows[t].len = it->begin[t];
                if (b->rows[t].data)
                    b->rows[t].data[it->begin[t]] = '\0';
            }
            it->state = TW_ITEM_DROPPED;
            it->reason = TW_REASON_PAST_RETENTION;
            snprintf(it->detail, sizeof it->detail, "started_at: before the retention horizon");
        } else {
            it->state = TW_ITEM_ROWS;
            for (int t = 0; t < TW_TABLES; t++)
                it->end[t] = b->rows[t].len;
        }
    }
    b->n++;
    if (out)
        *out = it;
    return RL_OK;
}

rl_status_t tw_batch_add_message(tw_batch_t *b, const void *data, size_t len,
                                 const tw_limits_t *lim, void *ref, size_t *added)
{
    size_t first = b->n, begin[TW_TABLES];
    for (int t = 0; t < TW_TABLES; t++)
        begin[t] = b->rows[t].len;
    const char *p = data, *end = p + len;
    rl_status_t st = RL_OK;
    while (st == RL_OK && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl : end;
        if (stop > p)
            st = tw_batch_add(b, p, (size_t)(stop - p), lim, ref, NULL);
        p = nl ? nl + 1 : end;
    }
    if (st == RL_OK && b->n == first) /* nothing but newlines: one dead item */
        st = tw_batch_add(b, data, len, lim, ref, NULL);
    if (st != RL_OK) { /* all of the message or none of it */
        b->n = first;
        for (int t = 0; t < TW_TABLES; t++) {
            b->rows[t].len = begin[t];
            if (b->rows[t].data)
                b->rows[t].data[begin[t]] = '\0';
        }
    }
    if (added)
        *added = b->n - first;
    return st;
}
