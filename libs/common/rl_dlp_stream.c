/* rl_dlp_stream: the streaming DLP scan: bytes fed as they pass, every
 * rule searched partial-hard over a window that overlaps chunk boundaries,
 * findings reported once no undecided match can overlap them, and the
 * bytes before the safe point released, redacted. */
#include "rl_dlp_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- streaming ---------------------------------------------------------- */

struct rl_dlp_stream {
    rl_dlp_engine_t *e;
    unsigned where;
    char *buf; /* bytes [base, total) */
    size_t cap;
    size_t base, total;
    size_t released, safe;
    size_t *next;        /* per rule: absolute offset its next search starts at */
    dlp_cands_t pending; /* certain, not yet reported (overlaps may be unknown) */
    dlp_cands_t recent;  /* reported and still needed (redaction, overlaps) */
    bool finished;
};

rl_status_t rl_dlp_stream_create(rl_dlp_engine_t *e, rl_dlp_scope_t where, rl_dlp_stream_t **out)
{
    if (!dlp_where_ok(where))
        return rl_error(RL_ERR_INVALID, "DLP stream: where must be request or response");
    rl_dlp_stream_t *s = calloc(1, sizeof *s);
    size_t *next = calloc(e->nrules ? e->nrules : 1, sizeof *next);
    if (s == NULL || next == NULL) {
        free(s);
        free(next);
        return rl_error(RL_ERR_NOMEM, "DLP stream allocation failed");
    }
    s->e = rl_dlp_engine_retain(e);
    s->where = (unsigned)where;
    s->next = next;
    *out = s;
    return RL_OK;
}

void rl_dlp_stream_destroy(rl_dlp_stream_t *s)
{
    if (s == NULL)
        return;
    rl_dlp_engine_release(s->e);
    free(s->buf);
    free(s->next);
    free(s->pending.v);
    free(s->recent.v);
    free(s);
}

size_t rl_dlp_stream_safe(const rl_dlp_stream_t *s)
{
    return s->safe;
}

size_t rl_dlp_stream_total(const rl_dlp_stream_t *s)
{
    return s->total;
}

size_t rl_dlp_stream_released(const rl_dlp_stream_t *s)
{
    return s->released;
}

static bool overlapped_out(const rl_dlp_stream_t *s, const dlp_cand_t *a)
{
    for (size_t i = 0; i < s->pending.n; i++)
        if (dlp_dominates(s->e->rules, &s->pending.v[i], a))
            return true;
    for (size_t i = 0; i < s->recent.n; i++)
        if (dlp_dominates(s->e->rules, &s->recent.v[i], a))
            return true;
    return false;
}

/* Drops the bytes before keep from the buffer when that frees enough. */
static void compact(rl_dlp_stream_t *s, size_t keep)
{
    if (keep <= s->base)
        return;
    size_t drop = keep - s->base, have = s->total - s->base;
    if (drop < 4096 && drop < have / 2)
        return;
    memmove(s->buf, s->buf + drop, have - drop);
    s->base = keep;
}

/* len without a trailing incomplete UTF-8 sequence. */
static size_t utf8_complete(const char *s, size_t len)
{
    size_t i = len, k = 0;
    while (i > 0 && k < 3 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) {
        i--;
        k++;
    }
    if (i == 0)
        return len;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t need = lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : lead >= 0xC0 ? 1 : 0;
    return need > k ? i - 1 : len;
}

/* Runs every rule over the new bytes, then reports what became certain and
 * moves the safe point. */
static rl_status_t stream_search(rl_dlp_stream_t *s, bool final, rl_dlp_scratch_t *sc,
                                 rl_dlp_findings_t *out)
{
    const rl_dlp_engine_t *e = s->e;
    size_t len = s->total - s->base;
    const char *buf = s->buf != NULL ? s->buf : ""; /* nothing fed yet */
    rl_status_t result = RL_OK;
    size_t horizon = s->total;
    for (size_t i = 0; i < e->nrules; i++) {
        const dlp_rule_t *r = &e->rules[i];
        if (!(r->scope & s->where))
            continue;
        size_t from = s->next[i] - s->base, resume;
        /* a UTF-8 rule must not see half a character at the end: to PCRE2
         * that is invalid UTF-8, not the start of a possible match */
        size_t rlen = r->utf && !final ? utf8_complete(buf, len) : len;
        if (from > rlen)
            from = rlen;
        rl_status_t st = dlp_search(r, (uint32_t)i, buf, rlen, from, final, s->base, SIZE_MAX, NULL,
                                    sc, &s->pending, &resume);
        if (st == RL_OK && !final && s->base + resume + RL_DLP_STREAM_HOLD_MAX < s->total) {
            /* held too long: decide the candidate on what has arrived */
            size_t ignored;
            st = dlp_search(r, (uint32_t)i, buf, len, resume, true, s->base, SIZE_MAX, NULL, sc,
                            &s->pending, &ignored);
            resume = len;
        }
        if (st == RL_ERR_TIMEOUT) {
            if (result == RL_OK)
                result = st;
            resume = len;
        } else if (st != RL_OK) {
            return st;
        }
        s->next[i] = final ? s->total : s->base + resume;
        if (s->next[i] < horizon)
            horizon = s->next[i];
    }
    /* report, in start order, the pending candidates no unknown one can overlap */
    if (s->pending.n > 1)
        qsort(s->pending.v, s->pending.n, sizeof *s->pending.v, dlp_cand_cmp);
    size_t kept = 0;
    unsigned char *gone = calloc(s->pending.n ? s->pending.n : 1, 1);
    if (gone == NULL)
        return rl_error(RL_ERR_NOMEM, "DLP stream allocation failed");
    for (size_t i = 0; i < s->pending.n; i++) {
        const dlp_cand_t *c = &s->pending.v[i];
        if (c->end > horizon)
            continue;
        gone[i] = 1;
        if (overlapped_out(s, c))
            continue;
        rl_dlp_finding_t f = dlp_finding_of(e, c);
        rl_status_t st = dlp_findings_push(out, &f);
        if (st == RL_OK)
            st = dlp_cands_push(&s->recent, c->start, c->end, c->rule);
        if (st != RL_OK) {
            free(gone);
            return st;
        }
    }
    size_t first_pending = SIZE_MAX;
    for (size_t i = 0; i < s->pending.n; i++)
        if (!gone[i]) {
            if (s->pending.v[i].start < first_pending)
                first_pending = s->pending.v[i].start;
            s->pending.v[kept++] = s->pending.v[i];
        }
    s->pending.n = kept;
    free(gone);
    /* the safe point: before anything undecided, never inside a finding */
    size_t safe = horizon < first_pending ? horizon : first_pending;
    for (bool moved = true; moved;) {
        moved = false;
        for (size_t i = 0; i < s->recent.n; i++)
            if (s->recent.v[i].start < safe && safe < s->recent.v[i].end) {
                safe = s->recent.v[i].start;
                moved = true;
            }
    }
    if (safe > s->safe)
        s->safe = safe;
    /* forget reported findings nothing can still overlap or redact */
    size_t low = s->released < first_pending ? s->released : first_pending;
    kept = 0;
    for (size_t i = 0; i < s->recent.n; i++)
        if (s->recent.v[i].end > low)
            s->recent.v[kept++] = s->recent.v[i];
    s->recent.n = kept;
    size_t ctx = horizon > RL_DLP_CONTEXT ? horizon - RL_DLP_CONTEXT : 0;
    compact(s, s->released < ctx ? s->released : ctx);
    return result;
}

/* stream_search with the caller's scratch, or one made for this call. */
static rl_status_t stream_run(rl_dlp_stream_t *s, bool final, rl_dlp_scratch_t *scratch,
                              rl_dlp_findings_t *out)
{
    rl_dlp_scratch_t *own = NULL;
    if (scratch == NULL) {
        rl_status_t st = rl_dlp_scratch_create(&own);
        if (st != RL_OK)
            return st;
        scratch = own;
    }
    rl_status_t st = stream_search(s, final, scratch, out);
    rl_dlp_scratch_destroy(own);
    return st;
}

rl_status_t rl_dlp_stream_feed(rl_dlp_stream_t *s, const char *data, size_t n,
                               rl_dlp_scratch_t *scratch, rl_dlp_findings_t *out)
{
    if (s->finished)
        return rl_error(RL_ERR_CONFLICT, "DLP stream fed after finish");
    size_t have = s->total - s->base;
    if (n > SIZE_MAX - have - 1)
        return rl_error(RL_ERR_TOO_LARGE, "DLP stream too large");
    if (have + n > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < have + n)
            cap *= 2;
        char *p = realloc(s->buf, cap);
        if (p == NULL)
            return rl_error(RL_ERR_NOMEM, "DLP stream buffer growth failed");
        s->buf = p;
        s->cap = cap;
    }
    if (n > 0)
        memcpy(s->buf + have, data, n);
    s->total += n;
    return stream_run(s, false, scratch, out);
}

rl_status_t rl_dlp_stream_finish(rl_dlp_stream_t *s, rl_dlp_scratch_t *scratch,
                                 rl_dlp_findings_t *out)
{
    if (s->finished)
        return rl_error(RL_ERR_CONFLICT, "DLP stream finished twice");
    rl_status_t st = stream_run(s, true, scratch, out);
    if (st == RL_OK || st == RL_ERR_TIMEOUT) {
        s->finished = true;
        s->safe = s->total;
    }
    return st;
}

rl_status_t rl_dlp_stream_release(rl_dlp_stream_t *s, rl_buf_t *out)
{
    size_t from = s->released, to = s->safe;
    if (to <= from)
        return RL_OK;
    if (out != NULL) {
        dlp_span_t *sp = malloc((s->recent.n ? s->recent.n : 1) * sizeof *sp);
        if (sp == NULL)
            return rl_error(RL_ERR_NOMEM, "DLP stream allocation failed");
        size_t n = 0;
        for (size_t i = 0; i < s->recent.n; i++) {
            const dlp_rule_t *r = &s->e->rules[s->recent.v[i].rule];
            if (r->action == RL_DLP_ACTION_REDACT)
                sp[n++] = (dlp_span_t){s->recent.v[i].start, s->recent.v[i].end, r->detector};
        }
        rl_status_t st = dlp_redact_spans(s->buf + (from - s->base), to - from, from, sp, n, out);
        free(sp);
        if (st != RL_OK)
            return st;
    }
    s->released = to;
    size_t horizon = s->total;
    for (size_t i = 0; i < s->e->nrules; i++)
        if ((s->e->rules[i].scope & s->where) && s->next[i] < horizon)
            horizon = s->next[i];
    size_t ctx = horizon > RL_DLP_CONTEXT ? horizon - RL_DLP_CONTEXT : 0;
    compact(s, s->released < ctx ? s->released : ctx);
    return RL_OK;
}
