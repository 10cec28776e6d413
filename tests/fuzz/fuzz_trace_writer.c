/* Fuzzes the contract between the proxy's trace encoder and the
 * trace-writer, which turns bus messages into PostgreSQL COPY rows.
 *
 * Input: [mode][...]. Mode bit 0 clear: the rest is a bus message of any
 * bytes (traces or, by bit 1, decisions). Set: a trace is built from the
 * input as the proxy fills one (ids and times consistent, strings, tokens and
 * timings from the input), encoded with px_trace_encode and read back.
 * Properties: every row of every table is one line of exactly its columns,
 * with no raw tab, CR or LF inside a field and only COPY's escapes after a
 * backslash (a message can never add a row or a column, say another
 * tenant's); every trace the proxy encodes is stored (none dead-lettered),
 * and its free text (user, session, path, method, model) comes back exactly
 * from the row when it was valid UTF-8. */
#include <jansson.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz_support.h"
#include "px_trace.h"
#include "tw_batch.h"

static size_t columns_of(const char *list)
{
    size_t n = 1;
    for (const char *p = list; *p; p++)
        n += *p == ',';
    return n;
}

/* Checks every row of a COPY text buffer; returns the number of rows. */
static size_t check_rows(const rl_buf_t *b, size_t ncols, const char *table)
{
    size_t rows = 0, cols = 1;
    FUZZ_CHECK(b->len == 0 || b->data[b->len - 1] == '\n', "%s: last row not ended", table);
    for (size_t i = 0; i < b->len; i++) {
        char c = b->data[i];
        if (c == '\\') {
            FUZZ_CHECK(i + 1 < b->len && strchr("\\bfnrtvNx01234567", b->data[i + 1]) != NULL,
                       "%s: a backslash COPY does not read at %zu", table, i);
            i++;
        } else if (c == '\t') {
            cols++;
        } else if (c == '\n') {
            FUZZ_CHECK(cols == ncols, "%s row %zu: %zu columns, %zu expected", table, rows, cols,
                       ncols);
            rows++;
            cols = 1;
        } else {
            FUZZ_CHECK(c != '\r' && c != '\0', "%s: a raw CR or NUL at %zu", table, i);
        }
    }
    return rows;
}

static void check_batch(const tw_batch_t *b)
{
    if (b->kind == TW_KIND_DECISION) {
        check_rows(&b->rows[TW_TABLE_MAIN], columns_of(TW_DECISIONS_COLUMNS), "decisions");
    } else {
        check_rows(&b->rows[TW_TABLE_MAIN], columns_of(TW_TRACES_COLUMNS), "traces");
        check_rows(&b->rows[TW_TABLE_DLP], columns_of(TW_DLP_COLUMNS), "dlp_findings");
        check_rows(&b->rows[TW_TABLE_TOOLS], columns_of(TW_TOOLS_COLUMNS), "tool_calls");
    }
    size_t at[TW_TABLES] = {0};
    for (size_t i = 0; i < b->n; i++) {
        const tw_item_t *it = &b->items[i];
        FUZZ_CHECK(it->state == TW_ITEM_ROWS || it->reason != TW_REASON_NONE,
                   "item %zu dead without a reason", i);
        FUZZ_CHECK(memchr(it->detail, '\0', sizeof it->detail) != NULL, "detail not terminated");
        for (int t = 0; t < TW_TABLES; t++) {
            FUZZ_CHECK(it->begin[t] <= it->end[t] && it->end[t] <= b->rows[t].len,
                       "item %zu: rows [%zu, %zu) of %zu", i, it->begin[t], it->end[t],
                       b->rows[t].len);
            if (it->state == TW_ITEM_ROWS) {
                FUZZ_CHECK(it->begin[t] == at[t], "item %zu: rows not in message order", i);
                at[t] = it->end[t];
            }
        }
    }
}

/* Field col of the first row of a COPY buffer, unescaped; NULL for \N. */
static char *field_of(const rl_buf_t *b, size_t col, size_t *len)
{
    const char *p = b->data, *end = memchr(b->data, '\n', b->len);
    for (size_t c = 0; c < col; c++)
        p = memchr(p, '\t', (size_t)(end - p)) + 1;
    const char *q = memchr(p, '\t', (size_t)(end - p));
    q = q ? q : end;
    if (q - p == 2 && memcmp(p, "\\N", 2) == 0)
        return NULL;
    char *out = malloc((size_t)(q - p) + 1);
    size_t n = 0;
    for (const char *s = p; s < q; s++) {
        if (*s != '\\') {
            out[n++] = *s;
            continue;
        }
        char e = *++s;
        out[n++] = e == 'n' ? '\n' : e == 'r' ? '\r' : e == 't' ? '\t' : e;
    }
    out[n] = '\0';
    *len = n;
    return out;
}

static void check_text(const rl_buf_t *rows, size_t col, const char *sent, const char *what)
{
    size_t n = 0;
    char *got = field_of(rows, col, &n);
    if (sent == NULL)
        FUZZ_CHECK(got == NULL, "%s: NULL expected", what);
    else if (fuzz_plain_utf8(sent, strlen(sent)) && strlen(sent) <= 4096)
        FUZZ_CHECK(got && fuzz_same_bytes(got, n, sent, strlen(sent)), "%s did not come back",
                   what);
    free(got);
}

static void round_trip(fuzz_input_t *in)
{
    const int64_t now = 1767225600000000LL; /* 2026-01-01 */
    static px_trace_t t;
    memset(&t, 0, sizeof t);
    int64_t started = now - (int64_t)fuzz_byte(in) * 3600 * 1000000 / 8;
    uint64_t ms = (uint64_t)(started / 1000);
    snprintf(t.trace_id, sizeof t.trace_id, "%08llx-%04llx-7%03x-8%03x-%012llx",
             (unsigned long long)(ms >> 16), (unsigned long long)(ms & 0xffff), fuzz_byte(in) * 13u,
             fuzz_byte(in) * 7u, 0x1234567890ULL);
    snprintf(t.tenant_id, sizeof t.tenant_id, "01a209fa-74d4-7694-afc4-f4506c679402");
    snprintf(t.agent_id, sizeof t.agent_id, "01a209fa-74ea-7061-a427-2ef444f05c25");
    snprintf(t.gate_id, sizeof t.gate_id, "01a209fa-74f0-7766-821c-1a197962da7a");
    snprintf(t.api_key_id, sizeof t.api_key_id, "01a209fa-74ed-770a-a25d-59ed31c3fbe7");
    uint8_t flags = fuzz_byte(in);
    static const char *const statuses[] = {PX_STATUS_ALLOWED, PX_STATUS_FLAGGED, PX_STATUS_DENIED,
                                           PX_STATUS_DLP_BLOCKED, PX_STATUS_DLP_WARNED};
    t.status = statuses[flags % 5];
    t.action = (px_action_t)(flags / 5 % 5);
    t.stream = flags & 0x40;
    t.http_status = 100 + fuzz_byte(in) * 2;
    t.started_at_us = started;
    t.ended_at_us = started + fuzz_byte(in) * 1000;
    t.latency_ms = fuzz_byte(in) * 1.5;
    t.upstream_ms = t.latency_ms / 2;
    t.overhead_us = fuzz_byte(in) * 10;
    t.cost_usd = flags & 0x80 ? -1 : fuzz_byte(in) * 1e-6;
    t.usage.present = flags & 0x20;
    t.usage.input_tokens = fuzz_byte(in) * 1000;
    t.usage.output_tokens = fuzz_byte(in) * 100;
    t.usage.total_tokens = t.usage.input_tokens + t.usage.output_tokens;
    char *user = fuzz_take_str(in, 255), *session = fuzz_take_str(in, 255),
         *path = fuzz_take_str(in, 255);
    char *method = fuzz_take_str(in, 15), *model = fuzz_take_str(in, 200),
         *name = fuzz_take_str(in, 200);
    t.user = flags & 1 ? NULL : user;
    t.session_id = flags & 2 ? NULL : session;
    t.method = method;
    t.path = path;
    snprintf(t.model, sizeof t.model, "%s", model);
    px_tool_call_t call = {.phase = PX_TOOL_RESULT};
    snprintf(call.name, sizeof call.name, "%s", name);
    snprintf(call.id, sizeof call.id, "%.40s", session);
    memset(call.args_sha256, 'a', 64);
    t.tool_calls = &call;
    t.ntool_calls = 1;
    snprintf(t.findings[0].detector, sizeof t.findings[0].detector, "EMAIL");
    snprintf(t.findings[0].severity, sizeof t.findings[0].severity, "medium");
    snprintf(t.findings[0].where, sizeof t.findings[0].where, "request");
    snprintf(t.findings[0].action, sizeof t.findings[0].action, "redact");
    t.nfindings = flags & 4 ? 1 : 0;
    t.request_body = (const char *)in->p;
    t.request_body_len = in->n / 2;
    t.response_body = (const char *)in->p + in->n / 2;
    t.response_body_len = in->n - in->n / 2;

    rl_buf_t msg;
    rl_buf_init(&msg, 8u << 20);
    FUZZ_CHECK(px_trace_encode(&t, false, 0, &msg) == RL_OK, "encode");
    tw_batch_t b;
    FUZZ_CHECK(tw_batch_init(&b, TW_KIND_TRACE, 4, 0) == RL_OK, "batch");
    tw_limits_t lim = {.now_us = now, .retention_days = 30};
    tw_item_t *it = NULL;
    FUZZ_CHECK(tw_batch_add(&b, msg.data, msg.len, &lim, NULL, &it) == RL_OK, "add");
    FUZZ_CHECK(it->state == TW_ITEM_ROWS, "the writer refused the proxy's trace: %s (%s)",
               tw_reason_name(it->reason), it->detail);
    check_batch(&b);
    const rl_buf_t *rows = &b.rows[TW_TABLE_MAIN];
    check_text(rows, 7, t.user, "user");
    check_text(rows, 8, t.session_id, "session_id");
    check_text(rows, 10, t.method, "method");
    check_text(rows, 11, t.path, "path");
    check_text(rows, 12, t.model[0] ? t.model : NULL, "model");
    tw_batch_free(&b);
    rl_buf_free(&msg);
    free(user), free(session), free(path), free(method), free(model), free(name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input_t in = {data, size};
    uint8_t mode = fuzz_byte(&in);
    if (mode & 1) {
        round_trip(&in);
        return 0;
    }
    tw_batch_t b;
    FUZZ_CHECK(tw_batch_init(&b, mode & 2 ? TW_KIND_DECISION : TW_KIND_TRACE, 4, 0) == RL_OK,
               "batch");
    tw_limits_t lim = {.now_us = 1767225600000000LL, .retention_days = 30};
    size_t added = 0;
    rl_status_t st = tw_batch_add_message(&b, in.p, in.n, &lim, NULL, &added);
    FUZZ_CHECK(st == RL_OK, "add_message: status %d", (int)st);
    FUZZ_CHECK(added == b.n && added >= 1, "%zu items added, %zu in the batch", added, b.n);
    check_batch(&b);
    if (mode & 4 && b.n > 1) { /* the database refuses one: its rows go, the others stay */
        tw_batch_kill(&b, b.n / 2, TW_REASON_DB_REJECTED, "refused");
        tw_batch_compact(&b);
        check_batch(&b);
    }
    tw_batch_free(&b);
    return 0;
}
