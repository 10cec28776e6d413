/* rl_dlp: the DLP engine: detector names, tenant configuration and its
 * custom rules, the compiled engine, one-shot scans, suppression of
 * overlapping findings, the verdict and redaction. The built-in detectors
 * are in rl_dlp_detectors.c, the streaming scan in rl_dlp_stream.c. */
#include "rl_dlp_internal.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- names -------------------------------------------------------------- */

const char *rl_dlp_builtin_id(rl_dlp_builtin_t d)
{
    if ((int)d < 0 || d >= RL_DLP_BUILTIN_COUNT)
        return NULL;
    return dlp_builtins[d].id;
}

rl_status_t rl_dlp_builtin_parse(const char *id, rl_dlp_builtin_t *out)
{
    if (id != NULL)
        for (int d = 0; d < RL_DLP_BUILTIN_COUNT; d++)
            if (strcasecmp(id, dlp_builtins[d].id) == 0) {
                *out = (rl_dlp_builtin_t)d;
                return RL_OK;
            }
    return rl_error(RL_ERR_NOT_FOUND, "no built-in DLP detector of that id");
}

rl_dlp_severity_t rl_dlp_builtin_severity(rl_dlp_builtin_t d)
{
    return rl_dlp_builtin_id(d) ? dlp_builtins[d].severity : 0;
}

rl_dlp_action_t rl_dlp_builtin_action(rl_dlp_builtin_t d)
{
    return rl_dlp_builtin_id(d) ? dlp_builtins[d].action : 0;
}

static const char *const severity_names[] = {NULL, "low", "medium", "high", "critical"};
static const char *const action_names[] = {NULL, "warn", "redact", "block"};
static const char *const scope_names[] = {NULL, "request", "response", "both"};

const char *rl_dlp_severity_str(rl_dlp_severity_t s)
{
    return s >= RL_DLP_SEVERITY_LOW && s <= RL_DLP_SEVERITY_CRITICAL ? severity_names[s] : "?";
}

const char *rl_dlp_action_str(rl_dlp_action_t a)
{
    return a >= RL_DLP_ACTION_WARN && a <= RL_DLP_ACTION_BLOCK ? action_names[a] : "?";
}

const char *rl_dlp_scope_str(rl_dlp_scope_t s)
{
    return s >= RL_DLP_SCOPE_REQUEST && s <= RL_DLP_SCOPE_BOTH ? scope_names[s] : "?";
}

const char *rl_dlp_verdict_str(rl_dlp_verdict_t v)
{
    switch (v) {
    case RL_DLP_CLEAN:
        return "CLEAN";
    case RL_DLP_WARNED:
        return "DLP_WARNED";
    case RL_DLP_BLOCKED:
        return "DLP_BLOCKED";
    }
    return "?";
}

static rl_status_t parse_name(const char *s, const char *const *names, int n, int *out,
                              const char *what)
{
    if (s != NULL)
        for (int i = 1; i < n; i++)
            if (strcmp(s, names[i]) == 0) {
                *out = i;
                return RL_OK;
            }
    return rl_error(RL_ERR_INVALID, "unknown DLP %s", what);
}

rl_status_t rl_dlp_severity_parse(const char *s, rl_dlp_severity_t *out)
{
    int v = 0;
    rl_status_t st = parse_name(s, severity_names, 5, &v, "severity");
    if (st == RL_OK)
        *out = (rl_dlp_severity_t)v;
    return st;
}

rl_status_t rl_dlp_action_parse(const char *s, rl_dlp_action_t *out)
{
    int v = 0;
    rl_status_t st = parse_name(s, action_names, 4, &v, "action");
    if (st == RL_OK)
        *out = (rl_dlp_action_t)v;
    return st;
}

rl_status_t rl_dlp_scope_parse(const char *s, rl_dlp_scope_t *out)
{
    int v = 0;
    rl_status_t st = parse_name(s, scope_names, 4, &v, "scope");
    if (st == RL_OK)
        *out = (rl_dlp_scope_t)v;
    return st;
}

/* ---- pattern compilation ------------------------------------------------ */

static pcre2_code *builtin_code[DLP_PATTERN_COUNT];
static pthread_once_t builtin_once = PTHREAD_ONCE_INIT;
static char builtin_failure[200]; /* "" when every built-in compiled */

/* Every built-in stem, grouped by first byte, so that one pass over a short
 * text finds where each pattern's stems occur (stems_index). */
#define STEM_REFS_MAX 64
typedef struct {
    const char *lit;
    uint8_t len;
    uint8_t pattern; /* index into dlp_patterns[] */
} stem_ref_t;
static stem_ref_t stem_refs[STEM_REFS_MAX];
static uint8_t stem_first[257]; /* refs starting with byte b: [stem_first[b], stem_first[b + 1]) */
static bool stem_index_ok;      /* every stem is in stem_refs */
/* Bytes that are a whole stem, and byte pairs that begin a longer one: most
 * places of a text are passed over after one table look-up. */
static bool stem_single[256];
static uint8_t stem_pair[65536 / 8];

_Static_assert(DLP_PATTERN_COUNT < 256, "stem_ref_t.pattern is a byte");

static void index_stems(void)
{
    size_t n = 0, total = 0;
    for (size_t i = 0; i < DLP_PATTERN_COUNT; i++)
        for (const char *q = dlp_patterns[i].stems; q && *q;
             q = strchr(q, '|') ? strchr(q, '|') + 1 : "")
            total++;
    if (total > STEM_REFS_MAX)
        return; /* stem_index_ok stays false: each pattern finds its stems itself */
    for (int b = 0; b < 256; b++) {
        stem_first[b] = (uint8_t)n;
        for (size_t i = 0; i < DLP_PATTERN_COUNT; i++)
            for (const char *q = dlp_patterns[i].stems; q && *q;) {
                const char *bar = strchr(q, '|');
                size_t len = bar ? (size_t)(bar - q) : strlen(q);
                if ((unsigned char)q[0] == b && n < STEM_REFS_MAX) {
                    stem_refs[n++] = (stem_ref_t){q, (uint8_t)len, (uint8_t)i};
                    if (len == 1) {
                        stem_single[b] = true;
                    } else {
                        unsigned pair = (unsigned)b << 8 | (unsigned char)q[1];
                        stem_pair[pair >> 3] |= (uint8_t)(1u << (pair & 7));
                    }
                }
                q += len + (bar != NULL);
            }
    }
    stem_first[256] = (uint8_t)n;
    stem_index_ok = true;
}

static void compile_builtins(void)
{
    index_stems();
    for (size_t i = 0; i < DLP_PATTERN_COUNT; i++) {
        int ec;
        PCRE2_SIZE eo;
        builtin_code[i] = pcre2_compile((PCRE2_SPTR)dlp_patterns[i].pattern, PCRE2_ZERO_TERMINATED,
                                        0, &ec, &eo, NULL);
        if (builtin_code[i] == NULL) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(ec, msg, sizeof msg);
            snprintf(builtin_failure, sizeof builtin_failure,
                     "built-in DLP pattern %zu (%s) at offset %zu: %s", i,
                     dlp_builtins[dlp_patterns[i].builtin].id, (size_t)eo, (const char *)msg);
            for (size_t j = 0; j < i; j++) {
                pcre2_code_free(builtin_code[j]);
                builtin_code[j] = NULL;
            }
            return;
        }
        /* no JIT (an unsupported platform) still matches, in the interpreter */
        (void)pcre2_jit_compile(builtin_code[i], PCRE2_JIT_COMPLETE | PCRE2_JIT_PARTIAL_HARD);
    }
}

#define CUSTOM_OPTIONS (PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_NEVER_BACKSLASH_C)
#define LOOKBEHIND_MAX_CHARS (RL_DLP_CONTEXT / 4)

/* PCRE2's minimum length counts lookarounds ("(?=x)" has length 1), so also
 * try the pattern on a few short subjects: an empty match on any of them
 * means the pattern can match nothing. Best effort; a scan ignores empty
 * matches in any case. */
static bool matches_empty(const pcre2_code *code)
{
    static const char *const probes[] = {
        "",   "a", "A", "x", "0", "1",        " ",
        "\n", "-", "_", ".", "@", "\xc3\xa9", "aaa 000 xyz AZ_-.@"};
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    bool empty = md == NULL || mc == NULL;
    if (!empty)
        pcre2_set_match_limit(mc, RL_DLP_MATCH_LIMIT);
    for (size_t i = 0; !empty && i < sizeof probes / sizeof probes[0]; i++) {
        size_t n = strlen(probes[i]);
        for (size_t at = 0; at <= n && !empty; at++) {
            int rc = pcre2_match(code, (PCRE2_SPTR)probes[i], n, at, PCRE2_ANCHORED, md, mc);
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            if (rc >= 0 && ov[0] == ov[1])
                empty = true;
        }
    }
    pcre2_match_data_free(md);
    pcre2_match_context_free(mc);
    return empty;
}

/* Compiles a custom pattern; on failure writes a message to err and returns
 * RL_ERR_INVALID or RL_ERR_TOO_LARGE (no error context recorded). */
static rl_status_t compile_custom(const char *pattern, pcre2_code **out, char *err, size_t cap)
{
    size_t len = pattern ? strlen(pattern) : 0;
    if (len == 0) {
        snprintf(err, cap, "pattern is empty");
        return RL_ERR_INVALID;
    }
    if (len > RL_DLP_PATTERN_MAX) {
        snprintf(err, cap, "pattern is %zu bytes, more than %d", len, RL_DLP_PATTERN_MAX);
        return RL_ERR_TOO_LARGE;
    }
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    if (cc == NULL) {
        snprintf(err, cap, "out of memory");
        return RL_ERR_NOMEM;
    }
    pcre2_set_max_pattern_length(cc, RL_DLP_PATTERN_MAX);
    pcre2_set_parens_nest_limit(cc, 64);
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern, len, CUSTOM_OPTIONS, &ec, &eo, cc);
    pcre2_compile_context_free(cc);
    if (code == NULL) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        snprintf(err, cap, "pattern error at offset %zu: %s", (size_t)eo, (const char *)msg);
        return ec == PCRE2_ERROR_NOMEMORY ? RL_ERR_NOMEM : RL_ERR_INVALID;
    }
    uint32_t minlen = 0, lookbehind = 0;
    pcre2_pattern_info(code, PCRE2_INFO_MINLENGTH, &minlen);
    pcre2_pattern_info(code, PCRE2_INFO_MAXLOOKBEHIND, &lookbehind);
    if (minlen == 0 || matches_empty(code)) {
        pcre2_code_free(code);
        snprintf(err, cap, "pattern can match an empty string");
        return RL_ERR_INVALID;
    }
    if (lookbehind > LOOKBEHIND_MAX_CHARS) {
        pcre2_code_free(code);
        snprintf(err, cap, "pattern has a lookbehind of %u characters, more than %d", lookbehind,
                 LOOKBEHIND_MAX_CHARS);
        return RL_ERR_INVALID;
    }
    (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE | PCRE2_JIT_PARTIAL_HARD);
    *out = code;
    return RL_OK;
}

rl_status_t rl_dlp_validate_pattern(const char *pattern, char *err, size_t cap)
{
    char msg[240];
    pcre2_code *code = NULL;
    rl_status_t st = compile_custom(pattern, &code, msg, sizeof msg);
    if (st != RL_OK) {
        if (err != NULL && cap > 0)
            snprintf(err, cap, "%s", msg);
        return rl_error(st, "%s", msg);
    }
    pcre2_code_free(code);
    if (err != NULL && cap > 0)
        err[0] = '\0';
    return RL_OK;
}

/* ---- configuration ------------------------------------------------------ */

typedef struct {
    bool enabled;
    rl_dlp_severity_t severity; /* 0 = default */
    rl_dlp_action_t action;     /* 0 = default */
} override_t;

typedef struct {
    char *id, *name, *pattern;
    rl_dlp_severity_t severity;
    rl_dlp_action_t action;
    rl_dlp_scope_t scope;
    bool enabled;
} custom_t;

struct rl_dlp_config {
    override_t builtin[RL_DLP_BUILTIN_COUNT];
    custom_t *rules;
    size_t nrules;
};

rl_status_t rl_dlp_config_create(rl_dlp_config_t **out)
{
    rl_dlp_config_t *cfg = calloc(1, sizeof *cfg);
    if (cfg == NULL)
        return rl_error(RL_ERR_NOMEM, "DLP configuration allocation failed");
    for (int d = 0; d < RL_DLP_BUILTIN_COUNT; d++)
        cfg->builtin[d].enabled = true;
    *out = cfg;
    return RL_OK;
}

static void custom_free(custom_t *c)
{
    free(c->id);
    free(c->name);
    free(c->pattern);
}

void rl_dlp_config_destroy(rl_dlp_config_t *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->nrules; i++)
        custom_free(&cfg->rules[i]);
    free(cfg->rules);
    free(cfg);
}

static bool severity_ok(rl_dlp_severity_t s)
{
    return s >= RL_DLP_SEVERITY_LOW && s <= RL_DLP_SEVERITY_CRITICAL;
}

static bool action_ok(rl_dlp_action_t a)
{
    return a >= RL_DLP_ACTION_WARN && a <= RL_DLP_ACTION_BLOCK;
}

rl_status_t rl_dlp_config_set_builtin(rl_dlp_config_t *cfg, rl_dlp_builtin_t d, bool enabled,
                                      rl_dlp_severity_t severity, rl_dlp_action_t action)
{
    if (rl_dlp_builtin_id(d) == NULL)
        return rl_error(RL_ERR_INVALID, "DLP built-in %d out of range", (int)d);
    if ((severity != 0 && !severity_ok(severity)) || (action != 0 && !action_ok(action)))
        return rl_error(RL_ERR_INVALID, "DLP override of %s: bad severity or action",
                        dlp_builtins[d].id);
    cfg->builtin[d] = (override_t){enabled, severity, action};
    return RL_OK;
}

static bool rule_id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > RL_DLP_RULE_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!(isalnum((unsigned char)c) || c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

rl_status_t rl_dlp_config_add_rule(rl_dlp_config_t *cfg, const rl_dlp_rule_t *r)
{
    if (!rule_id_ok(r->id))
        return rl_error(RL_ERR_INVALID, "DLP rule id must be 1..%d of [A-Za-z0-9_.-]",
                        RL_DLP_RULE_ID_MAX);
    rl_dlp_builtin_t b;
    if (rl_dlp_builtin_parse(r->id, &b) == RL_OK)
        return rl_error(RL_ERR_INVALID, "DLP rule %s: id of a built-in detector", r->id);
    rl_error_clear();
    size_t nl = r->name ? strlen(r->name) : 0;
    if (nl == 0 || nl > RL_DLP_RULE_NAME_MAX)
        return rl_error(RL_ERR_INVALID, "DLP rule %s: name must be 1..%d bytes", r->id,
                        RL_DLP_RULE_NAME_MAX);
    if (!severity_ok(r->severity) || !action_ok(r->action) || r->scope < RL_DLP_SCOPE_REQUEST ||
        r->scope > RL_DLP_SCOPE_BOTH)
        return rl_error(RL_ERR_INVALID, "DLP rule %s: bad severity, action or scope", r->id);
    for (size_t i = 0; i < cfg->nrules; i++)
        if (strcmp(cfg->rules[i].id, r->id) == 0)
            return rl_error(RL_ERR_CONFLICT, "DLP rule %s added twice", r->id);
    if (cfg->nrules >= RL_DLP_RULES_MAX)
        return rl_error(RL_ERR_TOO_LARGE, "more than %d DLP rules", RL_DLP_RULES_MAX);
    char msg[240];
    pcre2_code *code = NULL;
    rl_status_t st = compile_custom(r->pattern, &code, msg, sizeof msg);
    if (st != RL_OK)
        return rl_error(st, "DLP rule %s: %s", r->id, msg);
    pcre2_code_free(code);
    custom_t c = {strdup(r->id), strdup(r->name), strdup(r->pattern), r->severity,
                  r->action,     r->scope,        r->enabled};
    custom_t *grown = realloc(cfg->rules, (cfg->nrules + 1) * sizeof *grown);
    if (c.id == NULL || c.name == NULL || c.pattern == NULL || grown == NULL) {
        custom_free(&c);
        if (grown != NULL)
            cfg->rules = grown;
        return rl_error(RL_ERR_NOMEM, "DLP rule %s: allocation failed", r->id);
    }
    cfg->rules = grown;
    cfg->rules[cfg->nrules++] = c;
    return RL_OK;
}

/* ---- engine ------------------------------------------------------------- */

static void engine_free(rl_dlp_engine_t *e)
{
    for (size_t i = 0; i < e->nrules; i++) {
        pcre2_code_free(e->rules[i].owned);
        free(e->rules[i].owned_id);
    }
    free(e->rules);
    free(e);
}

rl_status_t rl_dlp_engine_create(const rl_dlp_config_t *cfg, rl_dlp_engine_t **out)
{
    pthread_once(&builtin_once, compile_builtins);
    if (builtin_failure[0] != '\0')
        return rl_error(RL_ERR_INTERNAL, "%s", builtin_failure);
    size_t n = 0;
    for (size_t i = 0; i < DLP_PATTERN_COUNT; i++)
        if (cfg == NULL || cfg->builtin[dlp_patterns[i].builtin].enabled)
            n++;
    if (cfg != NULL)
        for (size_t i = 0; i < cfg->nrules; i++)
            n += cfg->rules[i].enabled;
    rl_dlp_engine_t *e = calloc(1, sizeof *e);
    dlp_rule_t *rules = calloc(n ? n : 1, sizeof *rules);
    if (e == NULL || rules == NULL) {
        free(e);
        free(rules);
        return rl_error(RL_ERR_NOMEM, "DLP engine allocation failed");
    }
    atomic_init(&e->refs, 1);
    e->rules = rules;
    for (size_t i = 0; i < DLP_PATTERN_COUNT; i++) {
        const dlp_pattern_t *p = &dlp_patterns[i];
        const dlp_builtin_info_t *info = &dlp_builtins[p->builtin];
        const override_t *o = cfg ? &cfg->builtin[p->builtin] : NULL;
        if (o != NULL && !o->enabled)
            continue;
        dlp_rule_t *r = &rules[e->nrules++];
        r->re = builtin_code[i];
        r->pat = p;
        r->builtin = (int)p->builtin;
        r->detector = info->id;
        r->severity = o && o->severity ? o->severity : info->severity;
        r->action = o && o->action ? o->action : info->action;
        r->scope = RL_DLP_SCOPE_BOTH;
        r->rank = info->rank;
    }
    for (size_t i = 0; cfg != NULL && i < cfg->nrules; i++) {
        const custom_t *c = &cfg->rules[i];
        if (!c->enabled)
            continue;
        dlp_rule_t *r = &rules[e->nrules++];
        char msg[240];
        rl_status_t st = compile_custom(c->pattern, &r->owned, msg, sizeof msg);
        r->owned_id = strdup(c->id);
        if (st != RL_OK || r->owned_id == NULL) {
            engine_free(e);
            if (st == RL_OK)
                return rl_error(RL_ERR_NOMEM, "DLP engine allocation failed");
            return rl_error(st, "DLP rule %s: %s", c->id, msg);
        }
        r->re = r->owned;
        r->builtin = -1;
        r->detector = r->owned_id;
        r->severity = c->severity;
        r->action = c->action;
        r->scope = (unsigned)c->scope;
        r->rank = -1;
        r->utf = true;
    }
    *out = e;
    return RL_OK;
}

rl_dlp_engine_t *rl_dlp_engine_retain(rl_dlp_engine_t *e)
{
    atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
    return e;
}

void rl_dlp_engine_release(rl_dlp_engine_t *e)
{
    if (e == NULL)
        return;
    if (atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1)
        engine_free(e);
}

size_t rl_dlp_engine_rule_count(const rl_dlp_engine_t *e)
{
    return e->nrules;
}

/* ---- scratch ------------------------------------------------------------ */

/* Built-in patterns run on PCRE2's default 32 KiB JIT stack (on the machine
 * stack, nothing to allocate); custom rules get a JIT stack of their own,
 * allocated the first time one runs. */
struct rl_dlp_scratch {
    pcre2_match_data *md;
    pcre2_match_context *mc;     /* built-ins */
    pcre2_match_context *mc_big; /* custom rules: with js */
    pcre2_jit_stack *js;
};

#define JIT_STACK_START (32 * 1024)
#define JIT_STACK_MAX (512 * 1024)

void rl_dlp_scratch_destroy(rl_dlp_scratch_t *s)
{
    if (s == NULL)
        return;
    pcre2_match_data_free(s->md);
    pcre2_match_context_free(s->mc);
    pcre2_match_context_free(s->mc_big);
    pcre2_jit_stack_free(s->js);
    free(s);
}

static void set_limits(pcre2_match_context *mc)
{
    pcre2_set_match_limit(mc, RL_DLP_MATCH_LIMIT);
    pcre2_set_depth_limit(mc, 10000);
    pcre2_set_heap_limit(mc, 20 * 1024); /* KiB, interpreter only */
}

rl_status_t rl_dlp_scratch_create(rl_dlp_scratch_t **out)
{
    rl_dlp_scratch_t *s = calloc(1, sizeof *s);
    if (s == NULL)
        return rl_error(RL_ERR_NOMEM, "DLP scratch allocation failed");
    s->md = pcre2_match_data_create(8, NULL);
    s->mc = pcre2_match_context_create(NULL);
    if (s->md == NULL || s->mc == NULL) {
        rl_dlp_scratch_destroy(s);
        return rl_error(RL_ERR_NOMEM, "DLP scratch allocation failed");
    }
    set_limits(s->mc);
    *out = s;
    return RL_OK;
}

static rl_status_t scratch_big_stack(rl_dlp_scratch_t *s)
{
    if (s->mc_big != NULL)
        return RL_OK;
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    pcre2_jit_stack *js = pcre2_jit_stack_create(JIT_STACK_START, JIT_STACK_MAX, NULL);
    if (mc == NULL || js == NULL) {
        pcre2_match_context_free(mc);
        pcre2_jit_stack_free(js);
        return rl_error(RL_ERR_NOMEM, "DLP JIT stack allocation failed");
    }
    set_limits(mc);
    pcre2_jit_stack_assign(mc, NULL, js);
    s->mc_big = mc;
    s->js = js;
    return RL_OK;
}

/* ---- findings ----------------------------------------------------------- */

void rl_dlp_findings_init(rl_dlp_findings_t *f, size_t max)
{
    memset(f, 0, sizeof *f);
    f->max = max;
}

void rl_dlp_findings_reset(rl_dlp_findings_t *f)
{
    f->len = 0;
    f->dropped = 0;
    f->dropped_verdict = RL_DLP_CLEAN;
}

void rl_dlp_findings_free(rl_dlp_findings_t *f)
{
    free(f->items);
    f->items = NULL;
    f->len = f->cap = 0;
    f->dropped = 0;
    f->dropped_verdict = RL_DLP_CLEAN;
}

rl_dlp_verdict_t rl_dlp_finding_verdict(const rl_dlp_finding_t *f)
{
    if (f->action == RL_DLP_ACTION_BLOCK ||
        (f->severity == RL_DLP_SEVERITY_CRITICAL && f->action != RL_DLP_ACTION_REDACT))
        return RL_DLP_BLOCKED;
    return RL_DLP_WARNED;
}

rl_dlp_verdict_t rl_dlp_verdict(const rl_dlp_findings_t *f)
{
    rl_dlp_verdict_t v = f->dropped ? f->dropped_verdict : RL_DLP_CLEAN;
    for (size_t i = 0; i < f->len && v != RL_DLP_BLOCKED; i++) {
        rl_dlp_verdict_t x = rl_dlp_finding_verdict(&f->items[i]);
        if (x > v)
            v = x;
    }
    return v;
}

rl_status_t dlp_findings_push(rl_dlp_findings_t *f, const rl_dlp_finding_t *x)
{
    if (f->len >= f->max) {
        f->dropped++;
        rl_dlp_verdict_t v = rl_dlp_finding_verdict(x);
        if (v > f->dropped_verdict)
            f->dropped_verdict = v;
        return RL_OK;
    }
    if (f->len == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 16;
        if (cap > f->max)
            cap = f->max;
        rl_dlp_finding_t *p = realloc(f->items, cap * sizeof *p);
        if (p == NULL)
            return rl_error(RL_ERR_NOMEM, "DLP findings growth failed");
        f->items = p;
        f->cap = cap;
    }
    f->items[f->len++] = *x;
    return RL_OK;
}

rl_status_t rl_dlp_findings_merge(rl_dlp_findings_t *dst, const rl_dlp_findings_t *src)
{
    for (size_t i = 0; i < src->len; i++) {
        rl_status_t st = dlp_findings_push(dst, &src->items[i]);
        if (st != RL_OK)
            return st;
    }
    dst->dropped += src->dropped;
    if (src->dropped_verdict > dst->dropped_verdict)
        dst->dropped_verdict = src->dropped_verdict;
    return RL_OK;
}

/* ---- candidates and the search of one rule ------------------------------- */

rl_status_t dlp_cands_push(dlp_cands_t *c, size_t start, size_t end, uint32_t rule)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 32;
        dlp_cand_t *p = realloc(c->v, cap * sizeof *p);
        if (p == NULL)
            return rl_error(RL_ERR_NOMEM, "DLP candidate list growth failed");
        c->v = p;
        c->cap = cap;
    }
    c->v[c->n++] = (dlp_cand_t){start, end, rule};
    return RL_OK;
}

static size_t next_char(const char *s, size_t len, size_t pos, bool utf)
{
    pos++;
    if (utf)
        while (pos < len && ((unsigned char)s[pos] & 0xC0) == 0x80)
            pos++;
    return pos;
}

/* The one-shot prefilter: where the next of a pattern's literal stems
 * occurs, each found with find_stem and remembered until passed. */
#define STEMS_MAX 6

typedef struct {
    const char *lit[STEMS_MAX];
    size_t n[STEMS_MAX];
    size_t at[STEMS_MAX]; /* next occurrence (SIZE_MAX: none), valid while >= from[] */
    size_t from[STEMS_MAX];
    size_t count;
    bool (*ok)(const char *s, size_t len, size_t at); /* dlp_pattern_t.stem_ok */
} stems_t;

static bool stems_init(stems_t *st, const char *spec, bool (*ok)(const char *, size_t, size_t))
{
    st->count = 0;
    st->ok = ok;
    for (const char *p = spec; *p && st->count < STEMS_MAX;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        st->lit[st->count] = p;
        st->n[st->count] = n;
        st->from[st->count] = SIZE_MAX; /* not searched yet */
        st->count++;
        p += n + (bar != NULL);
    }
    return st->count > 0;
}

/* memmem for the stems: on the short texts of most requests, glibc's
 * memmem spends more time preparing its two-way search than searching
 * (75 % of a scan's time in a profile); memchr for the first byte and a
 * compare is several times faster there. Long texts keep memmem, whose
 * worst case stays linear. */
#define STEM_MEMCHR_MAX 1024
/* Texts from this size on skip the short_only prefilters (dlp_pattern_t). */
#define STEM_PROSE_MAX 1024

static const char *find_stem(const char *s, size_t n, const char *lit, size_t m)
{
    if (n >= STEM_MEMCHR_MAX)
        return memmem(s, n, lit, m);
    if (m == 0)
        return s;
    if (m > n)
        return NULL;
    const char *end = s + n - m + 1; /* the last place a match can start, + 1 */
    for (const char *p = s; p < end; p++) {
        p = memchr(p, (unsigned char)lit[0], (size_t)(end - p));
        if (p == NULL)
            return NULL;
        /* the second byte inline: most first-byte hits in prose end there */
        if (m == 1 || (p[1] == lit[1] && memcmp(p + 2, lit + 2, m - 2) == 0))
            return p;
    }
    return NULL;
}

static size_t stems_next(stems_t *st, const char *s, size_t len, size_t pos)
{
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < st->count; i++) {
        if (st->from[i] == SIZE_MAX || st->from[i] > pos ||
            (st->at[i] != SIZE_MAX && st->at[i] < pos)) {
            const char *q = find_stem(s + pos, len - pos, st->lit[i], st->n[i]);
            while (q && st->ok && !st->ok(s, len, (size_t)(q - s)))
                q = find_stem(q + 1, (size_t)(s + len - q - 1), st->lit[i], st->n[i]);
            st->at[i] = q ? (size_t)(q - s) : SIZE_MAX;
            st->from[i] = pos;
        }
        if (st->at[i] < best)
            best = st->at[i];
    }
    return best;
}

/* Where each built-in pattern's stems occur in a short text, found in one
 * pass over it with the first-byte index (stem_refs): a memchr pass per
 * stem cost more (SOURCE_CODE alone has 23 stems). Only where stem_ok
 * allows, in increasing order. */
#define OCC_MAX 24

struct dlp_occ {
    uint16_t pos[OCC_MAX];
    uint8_t n;
    bool overflow; /* more than OCC_MAX: the pattern finds its stems itself */
};

static void find_all_stems(const char *s, size_t len, dlp_occ_t occ[DLP_PATTERN_COUNT])
{
    for (size_t i = 0; i < DLP_PATTERN_COUNT; i++) {
        occ[i].n = 0;
        occ[i].overflow = false;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned b = (unsigned char)s[i];
        unsigned pair = i + 1 < len ? b << 8 | (unsigned char)s[i + 1] : 0;
        if (!stem_single[b] && !(stem_pair[pair >> 3] & (1u << (pair & 7))))
            continue;
        for (unsigned k = stem_first[b]; k < stem_first[b + 1]; k++) {
            const stem_ref_t *r = &stem_refs[k];
            if (r->len > len - i || (r->len > 1 && s[i + 1] != r->lit[1]) ||
                memcmp(s + i, r->lit, r->len) != 0)
                continue;
            const dlp_pattern_t *p = &dlp_patterns[r->pattern];
            if (p->stem_ok && !p->stem_ok(s, len, i))
                continue;
            dlp_occ_t *o = &occ[r->pattern];
            if (o->n > 0 && o->pos[o->n - 1] == i)
                continue; /* two stems of one pattern at one place */
            if (o->n < OCC_MAX)
                o->pos[o->n++] = (uint16_t)i;
            else
                o->overflow = true;
        }
    }
}

/* ASCII digits in s[0..n), eight bytes at a time: in t = byte ^ '0' a
 * digit is a byte below 10, i.e. one whose high bit is clear in t and in
 * (t | 0x80) - 10 (no borrow crosses bytes: each is at least 0x80). */
static size_t count_digits(const char *s, size_t n)
{
    const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
    size_t k = 0, i = 0;
    while (i + 8 <= n) {
        uint64_t per_byte = 0; /* digits per byte lane: at most 31 each */
        for (int w8 = 0; w8 < 31 && i + 8 <= n; w8++, i += 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            uint64_t t = w ^ (ones * '0');
            per_byte += (~((t | high) - ones * 10) & ~t & high) >> 7;
        }
        k += (size_t)((per_byte * ones) >> 56); /* the lanes' sum, at most 248 */
    }
    for (; i < n; i++)
        k += (unsigned char)(s[i] - '0') < 10;
    return k;
}

rl_status_t dlp_search(const dlp_rule_t *r, uint32_t ri, const char *subj, size_t len, size_t pos,
                       bool final, size_t base, size_t digits, const dlp_occ_t *occ,
                       rl_dlp_scratch_t *sc, dlp_cands_t *out, size_t *resume)
{
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(sc->md);
    uint32_t opts = final ? 0 : PCRE2_PARTIAL_HARD;
    const dlp_pattern_t *p = r->pat;
    pcre2_match_context *mc = sc->mc;
    if (r->builtin < 0) {
        rl_status_t st = scratch_big_stack(sc);
        if (st != RL_OK)
            return st;
        mc = sc->mc_big;
    }
    *resume = len;
    if (final && p != NULL && digits < p->min_digits)
        return RL_OK; /* too few digits for any match */
    /* occ: where the stems are in the whole subject, found in one pass */
    const dlp_occ_t *o =
        occ && p && !occ[p - dlp_patterns].overflow ? &occ[p - dlp_patterns] : NULL;
    stems_t stems = {.count = 0};
    bool prefilter = final && p != NULL && p->stems != NULL &&
                     (!p->short_only || len < STEM_PROSE_MAX) &&
                     (o != NULL || stems_init(&stems, p->stems, p->stem_ok));
    size_t oi = 0;
    while (pos <= len) {
        if (prefilter) {
            size_t qp;
            if (o) {
                while (oi < o->n && o->pos[oi] < pos)
                    oi++;
                qp = oi < o->n ? o->pos[oi] : SIZE_MAX;
            } else {
                qp = stems_next(&stems, subj, len, pos);
            }
            if (qp == SIZE_MAX)
                return RL_OK;
            if (qp > pos + p->lead)
                pos = qp - p->lead;
        }
        int rc = pcre2_match(r->re, (PCRE2_SPTR)subj, len, pos, opts, sc->md, mc);
        if (rc == PCRE2_ERROR_NOMATCH)
            return RL_OK;
        if (rc == PCRE2_ERROR_PARTIAL) {
            *resume = ov[0];
            return RL_OK;
        }
        if (rc < 0) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(rc, msg, sizeof msg);
            rl_status_t st = rc == PCRE2_ERROR_NOMEMORY ? RL_ERR_NOMEM
                             : (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT ||
                                rc == PCRE2_ERROR_HEAPLIMIT || rc == PCRE2_ERROR_JIT_STACKLIMIT)
                                 ? RL_ERR_TIMEOUT
                                 : RL_ERR_INTERNAL;
            return rl_error(st, "DLP rule %s stopped at offset %zu: %s", r->detector, base + pos,
                            (const char *)msg);
        }
        size_t s = ov[0], e = ov[1], ss = s, se = e;
        int g = p ? p->group : 0;
        if (g > 0 && (rc == 0 || rc > g) && ov[2 * g] != PCRE2_UNSET) {
            ss = ov[2 * g];
            se = ov[2 * g + 1];
        }
        if (e <= s) { /* an empty match: no finding, move on */
            pos = next_char(subj, len, s, r->utf);
            continue;
        }
        bool ok = p == NULL || p->check == NULL || p->check(subj, ss, &se);
        if (ok && se > ss) {
            rl_status_t st = dlp_cands_push(out, base + ss, base + se, ri);
            if (st != RL_OK)
                return st;
            pos = se < e && se > s ? se : e;
        } else {
            pos = next_char(subj, len, s, r->utf);
        }
    }
    return RL_OK;
}

/* ---- overlap resolution ------------------------------------------------- */

/* True when candidate b makes a go: both built-ins that merge (not
 * SOURCE_CODE, not custom), overlapping, and b of higher rank, or of the
 * same detector and earlier, longer, or first in rule order. */
bool dlp_dominates(const dlp_rule_t *rules, const dlp_cand_t *b, const dlp_cand_t *a)
{
    if (!(b->start < a->end && a->start < b->end) ||
        (b->start == a->start && b->end == a->end && b->rule == a->rule))
        return false;
    const dlp_rule_t *ra = &rules[a->rule], *rb = &rules[b->rule];
    if (ra->rank < 1 || rb->rank < 1)
        return false;
    if (ra->builtin == rb->builtin) {
        if (b->start != a->start)
            return b->start < a->start;
        if (b->end != a->end)
            return b->end > a->end;
        return b->rule < a->rule;
    }
    return rb->rank > ra->rank;
}

int dlp_cand_cmp(const void *x, const void *y)
{
    const dlp_cand_t *a = x, *b = y;
    if (a->start != b->start)
        return a->start < b->start ? -1 : 1;
    if (a->end != b->end)
        return a->end > b->end ? -1 : 1;
    return a->rule < b->rule ? -1 : a->rule > b->rule;
}

rl_dlp_finding_t dlp_finding_of(const rl_dlp_engine_t *e, const dlp_cand_t *c)
{
    const dlp_rule_t *r = &e->rules[c->rule];
    return (rl_dlp_finding_t){r->detector, r->builtin, r->severity, r->action, c->start, c->end};
}

/* ---- one-shot scan ------------------------------------------------------ */

bool dlp_where_ok(rl_dlp_scope_t where)
{
    return where == RL_DLP_SCOPE_REQUEST || where == RL_DLP_SCOPE_RESPONSE;
}

rl_status_t rl_dlp_scan(const rl_dlp_engine_t *e, rl_dlp_scope_t where, const char *text,
                        size_t len, rl_dlp_scratch_t *scratch, rl_dlp_findings_t *out)
{
    if (!dlp_where_ok(where) || (text == NULL && len > 0))
        return rl_error(RL_ERR_INVALID, "DLP scan: where must be request or response");
    rl_dlp_findings_reset(out);
    rl_dlp_scratch_t *own = NULL;
    if (scratch == NULL) {
        rl_status_t st = rl_dlp_scratch_create(&own);
        if (st != RL_OK)
            return st;
        scratch = own;
    }
    if (text == NULL)
        text = "";
    dlp_cands_t c = {0};
    rl_status_t result = RL_OK;
    size_t digits = count_digits(text, len);
    dlp_occ_t occ[DLP_PATTERN_COUNT];
    bool short_text = stem_index_ok && len < STEM_MEMCHR_MAX;
    if (short_text)
        find_all_stems(text, len, occ);
    for (size_t i = 0; i < e->nrules; i++) {
        const dlp_rule_t *r = &e->rules[i];
        if (!(r->scope & (unsigned)where))
            continue;
        size_t resume;
        rl_status_t st = dlp_search(r, (uint32_t)i, text, len, 0, true, 0, digits,
                                    short_text ? occ : NULL, scratch, &c, &resume);
        if (st == RL_ERR_TIMEOUT && result == RL_OK) {
            result = st; /* keep scanning with the other rules */
        } else if (st != RL_OK && st != RL_ERR_TIMEOUT) {
            result = st;
            goto done;
        }
    }
    if (c.n > 1)
        qsort(c.v, c.n, sizeof *c.v, dlp_cand_cmp);
    /* sorted by start: every pair that overlaps has b.start < a.end, b after a */
    unsigned char *gone = calloc(c.n ? c.n : 1, 1);
    if (gone == NULL) {
        result = rl_error(RL_ERR_NOMEM, "DLP scan allocation failed");
        goto done;
    }
    for (size_t i = 0; i < c.n; i++)
        for (size_t j = i + 1; j < c.n && c.v[j].start < c.v[i].end; j++) {
            if (dlp_dominates(e->rules, &c.v[j], &c.v[i]))
                gone[i] = 1;
            if (dlp_dominates(e->rules, &c.v[i], &c.v[j]))
                gone[j] = 1;
        }
    for (size_t i = 0; i < c.n; i++) {
        if (gone[i])
            continue;
        rl_dlp_finding_t f = dlp_finding_of(e, &c.v[i]);
        rl_status_t st = dlp_findings_push(out, &f);
        if (st != RL_OK) {
            result = st;
            break;
        }
    }
    free(gone);
done:
    free(c.v);
    rl_dlp_scratch_destroy(own);
    return result;
}

/* ---- redaction ---------------------------------------------------------- */

static int span_cmp(const void *x, const void *y)
{
    const dlp_span_t *a = x, *b = y;
    if (a->start != b->start)
        return a->start < b->start ? -1 : 1;
    if (a->end != b->end)
        return a->end > b->end ? -1 : 1;
    return 0;
}

rl_status_t dlp_redact_spans(const char *text, size_t len, size_t base, dlp_span_t *sp, size_t n,
                             rl_buf_t *out)
{
    size_t n2 = 0;
    for (size_t i = 0; i < n; i++) {
        size_t s = sp[i].start < base ? base : sp[i].start;
        size_t e = sp[i].end > base + len ? base + len : sp[i].end;
        if (s < e)
            sp[n2++] = (dlp_span_t){s - base, e - base, sp[i].detector};
    }
    if (n2 > 1)
        qsort(sp, n2, sizeof *sp, span_cmp);
    size_t old = out->len, at = 0;
    rl_status_t st = RL_OK;
    for (size_t i = 0; i < n2 && st == RL_OK;) {
        size_t s = sp[i].start, e = sp[i].end;
        const char *det = sp[i].detector;
        for (i++; i < n2 && sp[i].start < e; i++)
            if (sp[i].end > e)
                e = sp[i].end;
        st = rl_buf_append(out, text + at, s - at);
        if (st == RL_OK)
            st = rl_buf_appendf(out, RL_DLP_REDACT_PREFIX "%s]", det);
        at = e;
    }
    if (st == RL_OK)
        st = rl_buf_append(out, text + at, len - at);
    if (st != RL_OK && out->data != NULL) {
        out->len = old;
        out->data[old] = '\0';
    }
    return st;
}

/* rl_dlp_redact over the redact findings of f, or over all of them. */
static rl_status_t redact(const char *text, size_t len, size_t base, const rl_dlp_findings_t *f,
                          bool every, rl_buf_t *out)
{
    if (f->dropped > 0)
        return rl_error(RL_ERR_TOO_LARGE,
                        "%zu DLP findings past the list's bound: redaction "
                        "would be incomplete",
                        f->dropped);
    dlp_span_t *sp = malloc((f->len ? f->len : 1) * sizeof *sp);
    if (sp == NULL)
        return rl_error(RL_ERR_NOMEM, "DLP redaction allocation failed");
    size_t n = 0;
    for (size_t i = 0; i < f->len; i++)
        if (every || f->items[i].action == RL_DLP_ACTION_REDACT)
            sp[n++] = (dlp_span_t){f->items[i].start, f->items[i].end, f->items[i].detector};
    rl_status_t st = dlp_redact_spans(text, len, base, sp, n, out);
    free(sp);
    return st;
}

rl_status_t rl_dlp_redact(const char *text, size_t len, size_t base, const rl_dlp_findings_t *f,
                          rl_buf_t *out)
{
    return redact(text, len, base, f, false, out);
}

rl_status_t rl_dlp_redact_every(const char *text, size_t len, size_t base,
                                const rl_dlp_findings_t *f, rl_buf_t *out)
{
    return redact(text, len, base, f, true, out);
}
