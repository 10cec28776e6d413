#include "tw_store.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "rl_buf.h"
#include "rl_crypto.h"
#include "rl_pg.h"
#include "rl_uuid.h"
#include "tw_partitions.h"

#define QUERY_TIMEOUT_MS 60000       /* one statement; then the batch is retried */
#define COPY_CHUNK ((size_t)1 << 20) /* bytes per PQputCopyData */
#define IDMAP_SLOTS 4096             /* per cache; cleared when half full */
#define TENANT_TTL_MS 60000          /* a known tenant is checked again after this */
#define KEY_TOUCH_MS 60000           /* api_keys.last_used_at at most this often per key */
#define MAX_PARAM_IDS 1000           /* ids per tenant lookup statement */

/* The session temp tables rows are COPYed into; emptied at every commit. */
static const char TEMP_TABLES[] =
    "CREATE TEMP TABLE IF NOT EXISTS tw_traces (LIKE renlayer.traces INCLUDING DEFAULTS) "
    "ON COMMIT DELETE ROWS;"
    "CREATE TEMP TABLE IF NOT EXISTS tw_decisions (LIKE renlayer.decisions INCLUDING DEFAULTS) "
    "ON COMMIT DELETE ROWS;"
    "CREATE TEMP TABLE IF NOT EXISTS tw_dlp_findings (LIKE renlayer.dlp_findings INCLUDING "
    "DEFAULTS) ON COMMIT DELETE ROWS;"
    "CREATE TEMP TABLE IF NOT EXISTS tw_tool_calls (LIKE renlayer.tool_calls INCLUDING DEFAULTS) "
    "ON COMMIT DELETE ROWS;";

typedef struct {
    const char *name;   /* metric label */
    const char *copy;   /* COPY into the temp table */
    const char *insert; /* temp table -> partitioned table */
    const char *direct; /* COPY straight into the partitioned table */
} table_sql_t;

#define COPY_SQL(tmp, cols) "COPY pg_temp." tmp " (" cols ") FROM STDIN"
#define DIRECT_SQL(table, cols) "COPY renlayer." table " (" cols ") FROM STDIN"
#define INSERT_SQL(table, tmp, cols, key)                                                          \
    "INSERT INTO renlayer." table " (" cols ") SELECT " cols " FROM pg_temp." tmp                  \
    " ON CONFLICT (" key ") DO NOTHING"

static const table_sql_t TRACES_SQL = {
    "traces", COPY_SQL("tw_traces", TW_TRACES_COLUMNS),
    INSERT_SQL("traces", "tw_traces", TW_TRACES_COLUMNS, "trace_id, started_at"),
    DIRECT_SQL("traces", TW_TRACES_COLUMNS)};
static const table_sql_t DECISIONS_SQL = {
    "decisions", COPY_SQL("tw_decisions", TW_DECISIONS_COLUMNS),
    INSERT_SQL("decisions", "tw_decisions", TW_DECISIONS_COLUMNS, "trace_id, started_at"),
    DIRECT_SQL("decisions", TW_DECISIONS_COLUMNS)};
static const table_sql_t DLP_SQL = {
    "dlp_findings", COPY_SQL("tw_dlp_findings", TW_DLP_COLUMNS),
    INSERT_SQL("dlp_findings", "tw_dlp_findings", TW_DLP_COLUMNS, "trace_id, started_at, ordinal"),
    DIRECT_SQL("dlp_findings", TW_DLP_COLUMNS)};
static const table_sql_t TOOLS_SQL = {
    "tool_calls", COPY_SQL("tw_tool_calls", TW_TOOLS_COLUMNS),
    INSERT_SQL("tool_calls", "tw_tool_calls", TW_TOOLS_COLUMNS, "trace_id, started_at, ordinal"),
    DIRECT_SQL("tool_calls", TW_TOOLS_COLUMNS)};

static const table_sql_t *table_sql(tw_kind_t kind, int t)
{
    if (t == TW_TABLE_DLP)
        return &DLP_SQL;
    if (t == TW_TABLE_TOOLS)
        return &TOOLS_SQL;
    return kind == TW_KIND_TRACE ? &TRACES_SQL : &DECISIONS_SQL;
}

/* Inserts take the parents' locks in the order renlayer.drop_trace_partitions_before()
 * does (by partition name), so a concurrent retention run cannot deadlock with a batch. */
static const int INSERT_ORDER[TW_TABLES] = {TW_TABLE_DLP, TW_TABLE_TOOLS, TW_TABLE_MAIN};

/* ---- a small cache of ids (tenants known to exist, keys stamped lately) ------------------ */

typedef struct {
    uint8_t key[16];
    int64_t value;
    bool used;
} idslot_t;

typedef struct {
    idslot_t *slots; /* IDMAP_SLOTS */
    size_t used;
} idmap_t;

static size_t id_hash(const uint8_t k[16])
{
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < 16; i++)
        h = (h ^ k[i]) * 1099511628211ULL;
    return (size_t)(h ^ (h >> 29));
}

static idslot_t *idmap_find(idmap_t *m, const uint8_t k[16])
{
    for (size_t i = id_hash(k) & (IDMAP_SLOTS - 1);; i = (i + 1) & (IDMAP_SLOTS - 1)) {
        idslot_t *s = &m->slots[i];
        if (!s->used || memcmp(s->key, k, 16) == 0)
            return s;
    }
}

/* The value for k, or NULL. */
static int64_t *idmap_get(idmap_t *m, const uint8_t k[16])
{
    idslot_t *s = idmap_find(m, k);
    return s->used ? &s->value : NULL;
}

static void idmap_clear(idmap_t *m)
{
    memset(m->slots, 0, IDMAP_SLOTS * sizeof *m->slots);
    m->used = 0;
}

static void idmap_put(idmap_t *m, const uint8_t k[16], int64_t v)
{
    idslot_t *s = idmap_find(m, k);
    if (!s->used) {
        if (m->used >= IDMAP_SLOTS / 2) { /* bounded: forget everything, relearn */
            idmap_clear(m);
            s = idmap_find(m, k);
        }
        memcpy(s->key, k, 16);
        s->used = true;
        m->used++;
    }
    s->value = v;
}

/* ---- the store ------------------------------------------------------------------------------- */

enum { ERR_UNAVAILABLE, ERR_DATA, ERR_NO_PARTITION, ERR_OTHER, ERR_KINDS };
static const char *const ERR_NAMES[ERR_KINDS] = {"unavailable", "data", "no_partition", "other"};

typedef enum { F_TRANSIENT, F_DATA, F_NO_PARTITION } failure_t;

struct tw_store {
    rl_pg_t *pg;
    int retention_days;
    PGconn *temp_conn; /* the session whose temp tables are committed */
    int temp_pid;
    bool temp_pending; /* created in the open transaction */
    idmap_t tenants, keys;
    rl_counter_t *inserted[2][TW_TABLES]; /* [kind][table] */
    rl_counter_t *errors[ERR_KINDS];
    char sqlstate[6]; /* of the latest failure */
    char message[256];

    int direct_rest; /* batches that skip the direct COPY after a fallback */
    rl_counter_t *fallbacks;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

rl_status_t tw_store_create(const tw_store_options_t *o, tw_store_t **out)
{
    if (!o || !o->database_url || !out || o->retention_days < 1)
        return rl_error(RL_ERR_INVALID, "tw_store_create: bad options");
    tw_store_t *s = calloc(1, sizeof *s);
    if (!s)
        return rl_error(RL_ERR_NOMEM, "tw_store_create");
    s->tenants.slots = calloc(IDMAP_SLOTS, sizeof(idslot_t));
    s->keys.slots = calloc(IDMAP_SLOTS, sizeof(idslot_t));
    if (!s->tenants.slots || !s->keys.slots) {
        tw_store_destroy(s);
        return rl_error(RL_ERR_NOMEM, "tw_store_create");
    }
    rl_pg_options_t po = {.application_name = o->application_name,
                          .query_timeout_ms = QUERY_TIMEOUT_MS};
    rl_status_t st = rl_pg_create(o->database_url, &po, &s->pg);
    if (st != RL_OK) {
        tw_store_destroy(s);
        return st;
    }
    s->retention_days = o->retention_days;
    if (o->metrics) {
        for (int k = 0; k < 2; k++) {
            for (int t = 0; t < TW_TABLES; t++) {
                if (k == TW_KIND_DECISION && t != TW_TABLE_MAIN)
                    continue;
                char labels[64];
                snprintf(labels, sizeof labels, "table=\"%s\"", table_sql((tw_kind_t)k, t)->name);
                rl_metrics_counter(o->metrics, "renlayer_trace_writer_rows_inserted_total",
                                   "Rows inserted (a redelivered message inserts none)", labels,
                                   &s->inserted[k][t]);
            }
        }
        rl_metrics_counter(o->metrics, "renlayer_trace_writer_copy_fallbacks_total",
                           "Batches the direct COPY refused (a redelivery, a missing partition, "
                           "a refused row), written through the staged path instead",
                           NULL, &s->fallbacks);
        for (int e = 0; e < ERR_KINDS; e++) {
            char labels[64];
            snprintf(labels, sizeof labels, "kind=\"%s\"", ERR_NAMES[e]);
            rl_metrics_counter(o->metrics, "renlayer_trace_writer_pg_errors_total",
                               "Failed PostgreSQL transactions of the writer, by kind", labels,
                               &s->errors[e]);
        }
    }
    *out = s;
    return RL_OK;
}

void tw_store_destroy(tw_store_t *s)
{
    if (!s)
        return;
    rl_pg_destroy(s->pg);
    free(s->tenants.slots);
    free(s->keys.slots);
    free(s);
}

/* ---- failures ----------------------------------------------------------------------------- */

static void note_failure(tw_store_t *s, const char *sqlstate, const char *message)
{
    snprintf(s->sqlstate, sizeof s->sqlstate, "%s", sqlstate ? sqlstate : "");
    snprintf(s->message, sizeof s->message, "%s", message ? message : "");
}

/* Records a failed rl_pg call: its SQLSTATE and the server's message
 * (without the error context's "file:line: " and "SQLSTATE xxxxx: " prefixes). */
static rl_status_t pg_failed(tw_store_t *s, rl_status_t st)
{
    const char *m = rl_error_message();
    const char *p = strstr(m, "SQLSTATE ");
    if (p && strlen(p) > 16 && p[14] == ':')
        m = p + 16;
    note_failure(s, rl_pg_sqlstate(s->pg), m);
    return st;
}

static bool class_is(const char *sqlstate, const char *cls)
{
    return strncmp(sqlstate, cls, strlen(cls)) == 0;
}

/* Data errors are the rows' fault (class 22 data exception, 23 integrity, 54
 * limits such as an index row too large); everything else is the database's
 * state (down, locks, missing schema) and passes by waiting. */
static failure_t failure_of(const tw_store_t *s, rl_status_t st, int *kind)
{
    if (st == RL_ERR_UNAVAILABLE || st == RL_ERR_TIMEOUT) {
        *kind = ERR_UNAVAILABLE;
        return F_TRANSIENT;
    }
    if (strcmp(s->sqlstate, "23514") == 0 && strstr(s->message, "no partition of relation")) {
        *kind = ERR_NO_PARTITION;
        return F_NO_PARTITION;
    }
    if (class_is(s->sqlstate, "22") || class_is(s->sqlstate, "23") || class_is(s->sqlstate, "54")) {
        *kind = ERR_DATA;
        return F_DATA;
    }
    *kind = ERR_OTHER;
    return F_TRANSIENT;
}

/* failure_of(), counted in renlayer_trace_writer_pg_errors_total. */
static failure_t classify(tw_store_t *s, rl_status_t st)
{
    int kind;
    failure_t f = failure_of(s, st, &kind);
    rl_counter_add(s->errors[kind], 1);
    return f;
}

/* ---- one transaction ---------------------------------------------------------------------- */

/* Creates the temp tables when the connection is a new session. Inside the
 * open transaction: they are known to exist only once it commits. */
static rl_status_t prepare_session(tw_store_t *s)
{
    PGconn *c = rl_pg_conn(s->pg);
    if (!c)
        return pg_failed(s, rl_error(RL_ERR_UNAVAILABLE, "database connection lost"));
    s->temp_pending = false;
    if (c == s->temp_conn && PQbackendPID(c) == s->temp_pid)
        return RL_OK;
    rl_status_t st = rl_pg_exec_simple(s->pg, TEMP_TABLES);
    if (st != RL_OK)
        return pg_failed(s, st);
    s->temp_pending = true;
    return RL_OK;
}

/* Reads a raw libpq failure: a result's SQLSTATE and message, or the connection's. */
static rl_status_t raw_failed(tw_store_t *s, PGconn *c, PGresult *r)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!msg)
        msg = PQerrorMessage(c);
    note_failure(s, state, msg);
    if (PQstatus(c) == CONNECTION_BAD || !state || class_is(state, "08") || class_is(state, "57P"))
        return rl_error(RL_ERR_UNAVAILABLE, "COPY: %s", msg);
    return rl_error(RL_ERR_IO, "COPY: SQLSTATE %s: %s", state, msg);
}

/* COPYs len bytes of rows through the raw connection of the open transaction;
 * *rows (optional) receives the rows copied. */
static rl_status_t copy_in(tw_store_t *s, const char *sql, const char *data, size_t len,
                           uint64_t *rows)
{
    PGconn *c = rl_pg_conn(s->pg);
    if (!c)
        return pg_failed(s, rl_error(RL_ERR_UNAVAILABLE, "database connection lost"));
    PGresult *r = PQexec(c, sql);
    rl_status_t st = RL_OK;
    if (PQresultStatus(r) != PGRES_COPY_IN) {
        st = raw_failed(s, c, r);
        PQclear(r);
        while ((r = PQgetResult(c)) != NULL)
            PQclear(r);
        return st;
    }
    PQclear(r);
    for (size_t off = 0; off < len;) {
        size_t n = len - off < COPY_CHUNK ? len - off : COPY_CHUNK;
        if (PQputCopyData(c, data + off, (int)n) != 1) {
            st = raw_failed(s, c, NULL);
            break;
        }
        off += n;
    }
    if (PQputCopyEnd(c, st == RL_OK ? NULL : "aborted by the trace-writer") != 1 && st == RL_OK)
        st = raw_failed(s, c, NULL);
    while ((r = PQgetResult(c)) != NULL) {
        if (st == RL_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
            st = raw_failed(s, c, r);
        else if (st == RL_OK && rows)
            *rows = rl_pg_rows_affected(r);
        PQclear(r);
    }
    return st;
}

/* Items [lo, hi) with rows: the byte range of their rows in table t. */
static void rows_range(const tw_batch_t *b, size_t lo, size_t hi, int t, size_t *from, size_t *to)
{
    *from = *to = 0;
    bool any = false;
    for (size_t i = lo; i < hi; i++) {
        const tw_item_t *it = &b->items[i];
        if (it->state != TW_ITEM_ROWS)
            continue;
        if (!any)
            *from = it->begin[t];
        *to = it->end[t];
        any = true;
    }
}

/* One transaction: COPY the rows of items [lo, hi), move them, commit. */
static rl_status_t write_tx(tw_store_t *s, tw_batch_t *b, size_t lo, size_t hi,
                            tw_store_result_t *res, failure_t *f)
{
    uint64_t inserted[TW_TABLES] = {0};
    size_t from[TW_TABLES], to[TW_TABLES];
    for (int t = 0; t < TW_TABLES; t++)
        rows_range(b, lo, hi, t, &from[t], &to[t]);

    rl_status_t st = rl_pg_begin(s->pg);
    if (st != RL_OK) {
        pg_failed(s, st);
        *f = classify(s, st);
        return st;
    }
    st = prepare_session(s);
    for (int t = 0; st == RL_OK && t < TW_TABLES; t++)
        if (to[t] > from[t])
            st = copy_in(s, table_sql(b->kind, t)->copy, b->rows[t].data + from[t], to[t] - from[t],
                         NULL);
    for (int k = 0; st == RL_OK && k < TW_TABLES; k++) {
        int t = INSERT_ORDER[k];
        if (to[t] == from[t])
            continue;
        PGresult *r = NULL;
        st = rl_pg_query(s->pg, table_sql(b->kind, t)->insert, 0, NULL, &r);
        if (st != RL_OK) {
            pg_failed(s, st);
            break;
        }
        inserted[t] = rl_pg_rows_affected(r);
        PQclear(r);
    }
    if (st == RL_OK) {
        PGconn *c = rl_pg_conn(s->pg);
        int pid = c ? PQbackendPID(c) : 0;
        st = rl_pg_commit(s->pg);
        if (st != RL_OK) {
            pg_failed(s, st);
        } else {
            if (s->temp_pending) {
                s->temp_conn = c;
                s->temp_pid = pid;
            }
            for (int t = 0; t < TW_TABLES; t++) {
                res->inserted[t] += inserted[t];
                rl_counter_add(s->inserted[b->kind][t], inserted[t]);
            }
            res->transactions++;
            return RL_OK;
        }
    } else {
        rl_pg_rollback(s->pg);
    }
    *f = classify(s, st);
    return st;
}

/* Creates the days of the items [lo, hi) that are not past retention. */
static rl_status_t ensure_days(tw_store_t *s, const tw_batch_t *b, size_t lo, size_t hi,
                               tw_store_result_t *res)
{
    int64_t days[16];
    size_t n = 0;
    for (size_t i = lo; i < hi && n < sizeof days / sizeof *days; i++) {
        const tw_item_t *it = &b->items[i];
        if (it->state != TW_ITEM_ROWS)
            continue;
        int64_t d = tw_day_of(it->started_us);
        bool seen = false;
        for (size_t k = 0; k < n && !seen; k++)
            seen = days[k] == d;
        if (!seen)
            days[n++] = d;
    }
    for (size_t k = 0; k < n; k++) {
        int created = 0;
        rl_status_t st = tw_partitions_ensure(s->pg, days[k], 1, &created);
        if (st != RL_OK)
            return pg_failed(s, st);
        res->partitions_created += created;
    }
    return RL_OK;
}

static size_t rows_items(const tw_batch_t *b, size_t lo, size_t hi)
{
    size_t n = 0;
    for (size_t i = lo; i < hi; i++)
        n += b->items[i].state == TW_ITEM_ROWS;
    return n;
}

/* Writes items [lo, hi), halving on data errors until the bad ones stand alone. */
static rl_status_t write_range(tw_store_t *s, tw_batch_t *b, size_t lo, size_t hi,
                               tw_store_result_t *res)
{
    size_t n = rows_items(b, lo, hi);
    if (n == 0)
        return RL_OK;
    failure_t f = F_TRANSIENT;
    rl_status_t st = write_tx(s, b, lo, hi, res, &f);
    if (st == RL_OK)
        return RL_OK;
    if (f == F_NO_PARTITION) {
        /* a day without its partition (an old spooled trace, a skewed clock) */
        rl_status_t est = ensure_days(s, b, lo, hi, res);
        if (est != RL_OK) {
            if (classify(s, est) != F_DATA)
                return est;
            f = F_DATA;
        } else {
            st = write_tx(s, b, lo, hi, res, &f);
            if (st == RL_OK)
                return RL_OK;
            if (f == F_NO_PARTITION)
                f = F_DATA; /* still refused: find which */
        }
    }
    if (f != F_DATA)
        return st;
    if (n == 1) {
        for (size_t i = lo; i < hi; i++) {
            if (b->items[i].state != TW_ITEM_ROWS)
                continue;
            char detail[TW_DETAIL_MAX];
            snprintf(detail, sizeof detail, "SQLSTATE %s: %.180s", s->sqlstate, s->message);
            tw_batch_kill(b, i, TW_REASON_DB_REJECTED, detail);
            if (strcmp(s->sqlstate, "23503") == 0) /* a tenant went away: forget them all */
                idmap_clear(&s->tenants);
        }
        return RL_OK;
    }
    /* split at the middle item with rows */
    size_t half = n / 2, mid = lo;
    for (size_t seen = 0; mid < hi; mid++) {
        if (b->items[mid].state == TW_ITEM_ROWS && seen++ == half)
            break;
    }
    st = write_range(s, b, lo, mid, res);
    if (st == RL_OK)
        st = write_range(s, b, mid, hi, res);
    return st;
}

/* Appends "{id,id,...}" of the given uuids. */
static rl_status_t uuid_array_text(rl_buf_t *out, const uint8_t (*ids)[16], size_t n)
{
    rl_status_t st = rl_buf_append_str(out, "{");
    for (size_t i = 0; st == RL_OK && i < n; i++) {
        char text[RL_UUID_STR_LEN + 1];
        rl_uuid_t u;
        memcpy(u.b, ids[i], 16);
        rl_uuid_format(&u, text);
        if (i > 0)
            st = rl_buf_append_str(out, ",");
        if (st == RL_OK)
            st = rl_buf_append_str(out, text);
    }
    if (st == RL_OK)
        st = rl_buf_append_str(out, "}");
    return st;
}

/* Kills the items whose tenant does not exist. Tenants seen to exist are
 * remembered for TENANT_TTL_MS. */
static rl_status_t check_tenants(tw_store_t *s, tw_batch_t *b)
{
    int64_t now = mono_ms();
    uint8_t(*ask)[16] = malloc(MAX_PARAM_IDS * sizeof *ask);
    if (!ask)
        return rl_error(RL_ERR_NOMEM, "tenant check");
    size_t n = 0;
    for (size_t i = 0; i < b->n && n < MAX_PARAM_IDS; i++) {
        const tw_item_t *it = &b->items[i];
        if (it->state != TW_ITEM_ROWS)
            continue;
        int64_t *seen = idmap_get(&s->tenants, it->tenant);
        if (seen && now - *seen < TENANT_TTL_MS)
            continue;
        bool dup = false;
        for (size_t k = 0; k < n && !dup; k++)
            dup = memcmp(ask[k], it->tenant, 16) == 0;
        if (!dup)
            memcpy(ask[n++], it->tenant, 16);
    }
    rl_status_t st = RL_OK;
    if (n > 0) {
        rl_buf_t arr;
        rl_buf_init(&arr, (size_t)n * 40 + 16);
        st = uuid_array_text(&arr, (const uint8_t(*)[16])ask, n);
        PGresult *r = NULL;
        if (st == RL_OK) {
            const char *vals[] = {arr.data};
            st = rl_pg_query(s->pg,
                             "SELECT id::text FROM renlayer.tenants WHERE id = ANY($1::uuid[])", 1,
                             vals, &r);
            if (st != RL_OK)
                pg_failed(s, st);
        }
        rl_buf_free(&arr);
        if (st == RL_OK) {
            bool *found = calloc(n, sizeof *found);
            if (!found) {
                PQclear(r);
                free(ask);
                return rl_error(RL_ERR_NOMEM, "tenant check");
            }
            for (int row = 0; row < PQntuples(r); row++) {
                rl_uuid_t u;
                if (rl_uuid_parse(PQgetvalue(r, row, 0), &u) != RL_OK)
                    continue;
                idmap_put(&s->tenants, u.b, now);
                for (size_t k = 0; k < n; k++)
                    if (memcmp(ask[k], u.b, 16) == 0)
                        found[k] = true;
            }
            PQclear(r);
            for (size_t i = 0; i < b->n; i++) {
                const tw_item_t *it = &b->items[i];
                if (it->state != TW_ITEM_ROWS)
                    continue;
                for (size_t k = 0; k < n; k++) {
                    if (memcmp(ask[k], it->tenant, 16) == 0) {
                        if (!found[k])
                            tw_batch_kill(b, i, TW_REASON_UNKNOWN_TENANT,
                                          "tenant_id: no such tenant");
                        break;
                    }
                }
            }
            free(found);
        }
    }
    free(ask);
    return st;
}

/* ---- the fast path ------------------------------------------------------------------------ */

#define DIRECT_REST_BATCHES 5

/* One transaction COPYing every row of the batch straight into the
 * partitioned tables: what a plain COPY costs. Fails on anything unusual (a
 * redelivered row, a missing day, an unknown tenant, a refused row). */
static rl_status_t write_direct(tw_store_t *s, tw_batch_t *b, tw_store_result_t *res)
{
    uint64_t inserted[TW_TABLES] = {0};
    rl_status_t st = rl_pg_begin(s->pg);
    if (st != RL_OK)
        return pg_failed(s, st);
    for (int t = 0; st == RL_OK && t < TW_TABLES; t++)
        if (b->rows[t].len > 0)
            st = copy_in(s, table_sql(b->kind, t)->direct, b->rows[t].data, b->rows[t].len,
                         &inserted[t]);
    if (st == RL_OK) {
        st = rl_pg_commit(s->pg);
        if (st == RL_OK) {
            for (int t = 0; t < TW_TABLES; t++) {
                res->inserted[t] += inserted[t];
                rl_counter_add(s->inserted[b->kind][t], inserted[t]);
            }
            res->transactions++;
            return RL_OK;
        }
        return pg_failed(s, st);
    }
    rl_pg_rollback(s->pg);
    return st;
}

rl_status_t tw_store_write(tw_store_t *s, tw_batch_t *b, tw_store_result_t *res)
{
    tw_store_result_t local;
    if (!res)
        res = &local;
    memset(res, 0, sizeof *res);
    rl_status_t st;
    if (s->direct_rest > 0) {
        s->direct_rest--;
    } else if (tw_batch_count(b, TW_ITEM_ROWS) > 0) {
        st = write_direct(s, b, res);
        if (st == RL_OK)
            return RL_OK;
        int kind;
        if (failure_of(s, st, &kind) == F_TRANSIENT) {
            rl_counter_add(s->errors[kind], 1);
            return st;
        }
        /* a redelivery, a missing day, a refused row: the careful way, and rest a while */
        rl_counter_add(s->fallbacks, 1);
        s->direct_rest = DIRECT_REST_BATCHES;
    }
    st = check_tenants(s, b);
    if (st != RL_OK) {
        classify(s, st);
        return st;
    }
    if (b->dirty)
        tw_batch_compact(b);
    st = write_range(s, b, 0, b->n, res);
    if (b->dirty)
        tw_batch_compact(b); /* a retry must not resend what was refused */
    return st;
}

/* ---- dead letters ------------------------------------------------------------------------- */

/* Printable ASCII for a text column: other bytes become '?'. */
static char *printable(const char *s, size_t max)
{
    size_t n = s ? strnlen(s, max) : 0;
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++)
        out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    out[n] = '\0';
    return out;
}

/* A UUID from the message's identity: a redelivered dead message gets the same id. */
static void dead_letter_id(const tw_dead_letter_t *d, char out[RL_UUID_STR_LEN + 1])
{
    char head[160];
    int n = snprintf(head, sizeof head, "%s|%" PRIu64 "|%s|", d->stream ? d->stream : "",
                     d->stream_seq, d->subject ? d->subject : "");
    uint8_t h1[RL_SHA256_LEN], h2[RL_SHA256_LEN], both[2 * RL_SHA256_LEN];
    rl_sha256(head, (size_t)(n < (int)sizeof head ? n : (int)sizeof head - 1), h1);
    rl_sha256(d->payload, d->len, h2);
    memcpy(both, h1, sizeof h1);
    memcpy(both + sizeof h1, h2, sizeof h2);
    rl_sha256(both, sizeof both, h1);
    rl_uuid_t u;
    memcpy(u.b, h1, 16);
    u.b[6] = (uint8_t)((u.b[6] & 0x0f) | 0x80); /* version 8: custom */
    u.b[8] = (uint8_t)((u.b[8] & 0x3f) | 0x80); /* RFC 9562 variant */
    rl_uuid_format(&u, out);
}

static rl_status_t insert_dead_letter(tw_store_t *s, const tw_dead_letter_t *d)
{
    char id[RL_UUID_STR_LEN + 1], tenant[RL_UUID_STR_LEN + 1], seq[24];
    dead_letter_id(d, id);
    if (d->tenant) {
        rl_uuid_t u;
        memcpy(u.b, d->tenant, 16);
        rl_uuid_format(&u, tenant);
    }
    snprintf(seq, sizeof seq, "%" PRIu64, d->stream_seq);
    size_t hexcap = 2 * d->len + 3;
    char *hex = malloc(hexcap);
    char *subject = printable(d->subject, 1024), *stream = printable(d->stream, 256);
    char *msg_id = printable(d->msg_id, 256), *reason = printable(d->reason, 1024);
    rl_status_t st = RL_OK;
    if (!hex || !subject || !stream || !msg_id || !reason) {
        st = rl_error(RL_ERR_NOMEM, "dead letter");
    } else {
        hex[0] = '\\';
        hex[1] = 'x';
        st = rl_hex_encode(d->payload, d->len, hex + 2, hexcap - 2);
    }
    if (st == RL_OK) {
        const char *vals[] = {id,
                              subject,
                              d->stream ? stream : NULL,
                              d->stream_seq ? seq : NULL,
                              d->msg_id ? msg_id : NULL,
                              d->tenant ? tenant : NULL,
                              hex,
                              reason};
        PGresult *r = NULL;
        st = rl_pg_query(s->pg,
                         "INSERT INTO renlayer.dead_letters (id, consumer, subject, stream, "
                         "stream_seq, msg_id, tenant_id, payload, reason) VALUES ($1::uuid, "
                         "'trace-writer', $2, $3, $4::bigint, $5, $6::uuid, $7::bytea, $8) "
                         "ON CONFLICT (id) DO NOTHING",
                         8, vals, &r);
        if (st == RL_OK)
            PQclear(r);
        else
            pg_failed(s, st);
    }
    free(hex);
    free(subject);
    free(stream);
    free(msg_id);
    free(reason);
    return st;
}

rl_status_t tw_store_dead_letters(tw_store_t *s, const tw_dead_letter_t *dl, size_t n)
{
    if (n == 0)
        return RL_OK;
    rl_status_t st = rl_pg_begin(s->pg);
    if (st != RL_OK) {
        pg_failed(s, st);
        classify(s, st);
        return st;
    }
    for (size_t i = 0; st == RL_OK && i < n; i++)
        st = insert_dead_letter(s, &dl[i]);
    if (st == RL_OK) {
        st = rl_pg_commit(s->pg);
        if (st != RL_OK)
            pg_failed(s, st);
    } else {
        rl_pg_rollback(s->pg);
    }
    if (st != RL_OK)
        classify(s, st);
    return st;
}

/* ---- api_keys.last_used_at ---------------------------------------------------------------------
 */

rl_status_t tw_store_touch_keys(tw_store_t *s, const tw_batch_t *b)
{
    if (b->kind != TW_KIND_TRACE)
        return RL_OK;
    int64_t now = mono_ms();
    enum { MAX_KEYS = 256 };
    uint8_t ids[MAX_KEYS][16];
    int64_t last[MAX_KEYS];
    size_t n = 0;
    for (size_t i = 0; i < b->n; i++) {
        const tw_item_t *it = &b->items[i];
        if (it->state != TW_ITEM_ROWS || !it->has_api_key)
            continue;
        int64_t *stamped = idmap_get(&s->keys, it->api_key);
        if (stamped && now - *stamped < KEY_TOUCH_MS)
            continue;
        size_t k = 0;
        while (k < n && memcmp(ids[k], it->api_key, 16) != 0)
            k++;
        if (k == n) {
            if (n == MAX_KEYS)
                continue; /* the rest waits for a later batch */
            memcpy(ids[n], it->api_key, 16);
            last[n++] = it->started_us;
        } else if (it->started_us > last[k]) {
            last[k] = it->started_us;
        }
    }
    if (n == 0)
        return RL_OK;
    rl_buf_t idtext, times;
    rl_buf_init(&idtext, (size_t)n * 40 + 16);
    rl_buf_init(&times, (size_t)n * 40 + 16);
    rl_status_t st = uuid_array_text(&idtext, (const uint8_t(*)[16])ids, n);
    if (st == RL_OK)
        st = rl_buf_append_str(&times, "{");
    for (size_t k = 0; st == RL_OK && k < n; k++) {
        /* epoch seconds with microseconds: to_timestamp() reads them exactly enough */
        st = rl_buf_appendf(&times, "%s%" PRId64 ".%06" PRId64, k ? "," : "", last[k] / 1000000,
                            last[k] % 1000000);
    }
    if (st == RL_OK)
        st = rl_buf_append_str(&times, "}");
    if (st == RL_OK) {
        const char *vals[] = {idtext.data, times.data};
        PGresult *r = NULL;
        st = rl_pg_query(s->pg,
                         "UPDATE renlayer.api_keys k SET last_used_at = to_timestamp(v.t) "
                         "FROM unnest($1::uuid[], $2::float8[]) AS v(id, t) "
                         "WHERE k.id = v.id AND (k.last_used_at IS NULL "
                         "OR k.last_used_at < to_timestamp(v.t))",
                         2, vals, &r);
        if (st == RL_OK) {
            PQclear(r);
            for (size_t k = 0; k < n; k++)
                idmap_put(&s->keys, ids[k], now);
        }
    }
    rl_buf_free(&idtext);
    rl_buf_free(&times);
    return st;
}
