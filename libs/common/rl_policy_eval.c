/* Evaluating a compiled policy set: a walk over immutable data with no lock
 * and no allocation (but one PCRE2 match block per thread, made the first
 * time the thread matches a regex). */
#include "rl_policy_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static const char EVAL_FAILED[] = "request denied: policy evaluation failed";

/* ---- string matching ---- */

static inline unsigned char fold(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* ASCII-only case folding, independent of the locale, so that the proxy and
 * the API agree whatever LC_CTYPE they run under. */
static int ascii_casecmp(const char *a, const char *b)
{
    const unsigned char *p = (const unsigned char *)a, *q = (const unsigned char *)b;
    while (*p && fold(*p) == fold(*q)) {
        p++;
        q++;
    }
    return fold(*p) - fold(*q);
}

static bool mem_eq(const char *a, const char *b, size_t n, bool icase)
{
    if (!icase)
        return memcmp(a, b, n) == 0;
    for (size_t i = 0; i < n; i++)
        if (fold((unsigned char)a[i]) != fold((unsigned char)b[i]))
            return false;
    return true;
}

/* Bytes of the UTF-8 character at s (1 for an invalid or truncated one). */
static size_t utf8_len(const char *s)
{
    unsigned char c = (unsigned char)*s;
    size_t n = c < 0x80             ? 1
               : (c & 0xE0) == 0xC0 ? 2
               : (c & 0xF0) == 0xE0 ? 3
               : (c & 0xF8) == 0xF0 ? 4
                                    : 1;
    for (size_t i = 1; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            return 1;
    return n;
}

bool rl_glob_match(const char *p, const char *s, bool icase)
{
    /* Greedy with one backtrack point, the last star: O(len(p) * len(s)) at
     * worst, no recursion. */
    const char *star_p = NULL, *star_s = NULL;
    for (;;) {
        if (*p == '*') {
            while (*p == '*')
                p++;
            if (*p == '\0')
                return true;
            star_p = p;
            star_s = s;
            continue;
        }
        if (*s == '\0')
            break;
        if (*p == '?') {
            p++;
            s += utf8_len(s);
            continue;
        }
        if (*p != '\0') {
            const char *q = (*p == '\\' && p[1] != '\0') ? p + 1 : p;
            unsigned char pc = (unsigned char)*q, sc = (unsigned char)*s;
            if (pc == sc || (icase && fold(pc) == fold(sc))) {
                p = q + 1;
                s++;
                continue;
            }
        }
        if (star_p == NULL)
            return false;
        star_s += utf8_len(star_s); /* star_s < s, so not at the end */
        p = star_p;
        s = star_s;
    }
    while (*p == '*')
        p++;
    return *p == '\0';
}

static pthread_key_t md_key;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static bool md_key_ok;
static _Thread_local pcre2_match_data *md_cached; /* fast path; the key frees it */

static void md_free(void *md)
{
    pcre2_match_data_free(md);
}

static void md_init(void)
{
    md_key_ok = pthread_key_create(&md_key, md_free) == 0;
}

/* The calling thread's match block, made on first use and freed at thread
 * exit by the key's destructor. NULL when out of memory. */
static pcre2_match_data *thread_match_data(void)
{
    if (md_cached != NULL)
        return md_cached;
    pthread_once(&md_once, md_init);
    if (!md_key_ok)
        return NULL;
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (md != NULL && pthread_setspecific(md_key, md) != 0) {
        pcre2_match_data_free(md);
        md = NULL;
    }
    md_cached = md;
    return md;
}

int rl_pat_match(const rl_pat_t *p, const char *s, const pcre2_match_context *mctx)
{
    size_t n;
    switch ((rl_pat_kind_t)p->kind) {
    case RL_PAT_ANY:
        return 1;
    case RL_PAT_EXACT:
        return (p->icase ? ascii_casecmp(p->text, s) : strcmp(p->text, s)) == 0;
    case RL_PAT_PREFIX:
        return strnlen(s, p->len) == p->len && mem_eq(s, p->text, p->len, p->icase);
    case RL_PAT_SUFFIX:
        n = strlen(s);
        return n >= p->len && mem_eq(s + n - p->len, p->text, p->len, p->icase);
    case RL_PAT_CONTAINS:
        return memmem(s, strlen(s), p->text, p->len) != NULL;
    case RL_PAT_GLOB:
        return rl_glob_match(p->text, s, p->icase);
    case RL_PAT_REGEX: {
        pcre2_match_data *md = thread_match_data();
        if (md == NULL)
            return PCRE2_ERROR_NOMEMORY;
        /* The context is only read, so threads may share it. The JIT entry
         * skips pcre2_match's option checks; both honour the match limit. */
        int rc = p->jit ? pcre2_jit_match(p->re, (PCRE2_SPTR)s, strlen(s), 0, 0, md,
                                          (pcre2_match_context *)mctx)
                        : pcre2_match(p->re, (PCRE2_SPTR)s, strlen(s), 0, 0, md,
                                      (pcre2_match_context *)mctx);
        if (rc >= 0)
            return 1;
        return rc == PCRE2_ERROR_NOMATCH ? 0 : rc;
    }
    }
    return PCRE2_ERROR_INTERNAL;
}

/* ---- conditions ---- */

typedef struct {
    const rl_policy_set_t *set;
    const rl_policy_input_t *in;
    const rl_pol_t *pol;
    uint32_t action_bit; /* of in->action; 0 when absent or unknown */
    rl_policy_result_t *out;
} ectx_t;

static const char *cond_name(uint8_t kind)
{
    switch ((rl_cond_kind_t)kind) {
    case RL_COND_PATH:
        return "path";
    case RL_COND_MODEL:
        return "model";
    case RL_COND_USER:
        return "user";
    case RL_COND_HEADER:
        return "headers";
    case RL_COND_DLP:
        return "dlp";
    case RL_COND_TOOL:
        return "tool";
    case RL_COND_TIME:
        return "time";
    default:
        return "condition";
    }
}

/* Records why evaluation failed; returns -1 for the caller to propagate. */
static int fail_regex(ectx_t *x, const rl_cond_t *c, const rl_pat_t *p, int rc)
{
    char msg[96];
    if (pcre2_get_error_message(rc, (PCRE2_UCHAR *)msg, sizeof msg) < 0)
        snprintf(msg, sizeof msg, "PCRE2 error %d", rc);
    snprintf(x->out->reason, sizeof x->out->reason, "policy \"%s\": %s regex \"%.64s\": %s",
             x->pol->id, cond_name(c->kind), p->text, msg);
    return -1;
}

static int match_pats(ectx_t *x, const rl_cond_t *c, const rl_pats_t *ps, const char *s)
{
    if (s == NULL)
        return 0;
    for (uint32_t i = 0; i < ps->n; i++) {
        int r = rl_pat_match(&ps->v[i], s, x->set->mctx);
        if (r < 0)
            return fail_regex(x, c, &ps->v[i], r);
        if (r > 0)
            return 1;
    }
    return 0;
}

/* Any of the strings matches any of the patterns. */
static int match_list(ectx_t *x, const rl_cond_t *c, const char *const *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int r = match_pats(x, c, &c->u.pats, v[i]);
        if (r != 0)
            return r;
    }
    return 0;
}

static const char *header_value(const rl_policy_input_t *in, const char *lname)
{
    if (in->header != NULL)
        return in->header(in->header_ctx, lname);
    for (size_t i = 0; i < in->nheaders; i++)
        if (in->headers[i].name != NULL && ascii_casecmp(in->headers[i].name, lname) == 0)
            return in->headers[i].value;
    return NULL;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static int eval_time(ectx_t *x, const rl_cond_t *c)
{
    int32_t off;
    if (!rl_tz_offset(c->u.time.tz, x->in->now_unix, &off)) {
        snprintf(x->out->reason, sizeof x->out->reason,
                 "policy \"%s\": time: now %lld is outside the supported range", x->pol->id,
                 (long long)x->in->now_unix);
        return -1;
    }
    int64_t local = x->in->now_unix + off;
    int64_t days = floor_div(local, 86400);
    int32_t sod = (int32_t)(local - days * 86400);
    int wd = (int)(((days + 4) % 7 + 7) % 7); /* 1970-01-01 was a Thursday */
    int32_t start = c->u.time.start, end = c->u.time.end;
    if (start < end)
        return sod >= start && sod < end && (c->u.time.days & (1u << wd));
    /* Across midnight: the part after midnight belongs to the window that
     * began the day before, so the weekday tested is that day's. */
    if (sod >= start)
        return (c->u.time.days & (1u << wd)) != 0;
    if (sod < end)
        return (c->u.time.days & (1u << ((wd + 6) % 7))) != 0;
    return 0;
}

/* 1 holds, 0 does not, -1 error (reason written). */
static int eval(ectx_t *x, const rl_cond_t *c)
{
    const rl_policy_input_t *in = x->in;
    int r;
    switch ((rl_cond_kind_t)c->kind) {
    case RL_COND_ALL:
        for (uint32_t i = 0; i < c->u.list.n; i++)
            if ((r = eval(x, &c->u.list.v[i])) <= 0)
                return r;
        return 1;
    case RL_COND_ANY:
        for (uint32_t i = 0; i < c->u.list.n; i++)
            if ((r = eval(x, &c->u.list.v[i])) != 0)
                return r;
        return 0;
    case RL_COND_NOT:
        r = eval(x, c->u.child);
        return r < 0 ? r : !r;
    case RL_COND_ACTION:
        return (c->u.actions & x->action_bit) != 0;
    case RL_COND_METHOD:
        if (in->method == NULL)
            return 0;
        for (uint32_t i = 0; i < c->u.methods.n; i++)
            if (ascii_casecmp(c->u.methods.v[i], in->method) == 0)
                return 1;
        return 0;
    case RL_COND_TOKENS:
        return in->estimated_input_tokens >= 0 && in->estimated_input_tokens > c->u.tokens;
    case RL_COND_PATH:
        return match_pats(x, c, &c->u.pats, in->path);
    case RL_COND_MODEL:
        return match_pats(x, c, &c->u.pats, in->model);
    case RL_COND_USER:
        return match_pats(x, c, &c->u.pats, in->user);
    case RL_COND_HEADER: {
        const char *v = header_value(in, c->u.header.name);
        if (c->u.header.presence >= 0)
            return (v != NULL) == (c->u.header.presence == 1);
        return match_pats(x, c, &c->u.header.pats, v);
    }
    case RL_COND_DLP:
        return match_list(x, c, in->dlp_detectors, in->dlp_detectors ? in->ndlp : 0);
    case RL_COND_TOOL:
        return match_list(x, c, in->tool_names, in->tool_names ? in->ntools : 0);
    case RL_COND_TIME:
        return eval_time(x, c);
    }
    snprintf(x->out->reason, sizeof x->out->reason, "policy \"%s\": unknown condition kind %u",
             x->pol->id, c->kind);
    return -1;
}

static bool in_scope(const char *const *ids, uint32_t n, const char *id)
{
    if (n == 0)
        return true;
    if (id == NULL)
        return false;
    for (uint32_t i = 0; i < n; i++)
        if (ascii_casecmp(ids[i], id) == 0)
            return true;
    return false;
}

uint32_t rl_policy_action_bit(const char *a)
{
    static const char *const names[] = {"chat", "embedding", "mcp", "tool_call", "http"};
    if (a == NULL)
        return 0;
    for (uint32_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(a, names[i]) == 0)
            return 1u << i;
    return 0;
}

static void deny_error(rl_policy_result_t *out, const char *id, const char *name)
{
    out->action = RL_POLICY_DENY;
    out->error = true;
    out->matched = false;
    out->policy_id = id ? id : "";
    out->policy_name = name ? name : "";
    out->message = EVAL_FAILED;
}

void rl_policy_evaluate(const rl_policy_set_t *set, const rl_policy_input_t *in,
                        rl_policy_result_t *out)
{
    out->action = RL_POLICY_ALLOW;
    out->matched = false;
    out->error = false;
    out->policy_id = "";
    out->policy_name = "";
    out->message = "";
    out->reason[0] = '\0';
    if (set == NULL || in == NULL) {
        deny_error(out, NULL, NULL);
        snprintf(out->reason, sizeof out->reason, "no policy set or no input to evaluate");
        return;
    }
    if (set->failed) {
        deny_error(out, set->fail_id, NULL);
        snprintf(out->reason, sizeof out->reason, "%s", set->fail_reason);
        return;
    }
    ectx_t x = {.set = set, .in = in, .action_bit = rl_policy_action_bit(in->action), .out = out};
    for (size_t i = 0; i < set->n; i++) {
        const rl_pol_t *pol = &set->pols[i];
        if (!in_scope(pol->agents, pol->nagents, in->agent_id) ||
            !in_scope(pol->gates, pol->ngates, in->gate_id))
            continue;
        x.pol = pol;
        int r = eval(&x, &pol->root);
        if (r == 0)
            continue;
        if (r < 0) {
            deny_error(out, pol->id, pol->name);
            return;
        }
        out->action = (rl_policy_action_t)pol->action;
        out->matched = true;
        out->policy_id = pol->id;
        out->policy_name = pol->name;
        out->message = pol->message;
        return;
    }
}
