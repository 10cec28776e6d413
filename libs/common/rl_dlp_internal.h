/* rl_dlp_internal: what the DLP engine's files share, not for other
 * modules: the built-in detectors' table (rl_dlp_detectors.c), the compiled
 * engine and the search of one rule (rl_dlp.c), which the streaming scan
 * (rl_dlp_stream.c) drives over a sliding window. */
#ifndef RL_DLP_INTERNAL_H
#define RL_DLP_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "rl_buf.h"
#include "rl_dlp.h"

/* ---- the built-in detectors (rl_dlp_detectors.c) ------------------------- */

/* A candidate check: buf is the subject (left context available from
 * buf[0]), [s, *e) the candidate; may shorten *e. True to report it. */
typedef bool (*dlp_check_fn)(const char *buf, size_t s, size_t *e);

typedef struct {
    const char *id;
    rl_dlp_severity_t severity;
    rl_dlp_action_t action;
    int rank; /* overlap winner: higher wins; 0 never merges (SOURCE_CODE) */
} dlp_builtin_info_t;

typedef struct {
    rl_dlp_builtin_t builtin;
    const char *pattern;
    int group;          /* capture group giving the finding's span; 0 = whole match */
    dlp_check_fn check; /* NULL: every match is a finding */
    const char *stems;  /* one-shot prefilter: '|'-separated literals, one of which
                         * every match contains; NULL: none */
    unsigned lead;      /* most bytes a match may start before that literal */
    bool short_only;    /* the stems are words of prose too: a prefilter only on texts
                         * under STEM_PROSE_MAX bytes (longer ones contain them anyway) */
    /* A stem occurrence that can be part of a match (its neighbours), or NULL:
     * '.' and ':' are everywhere in JSON, an address's are between digits. */
    bool (*stem_ok)(const char *s, size_t len, size_t at);
    unsigned min_digits; /* every match holds at least this many ASCII digits:
                          * a whole text with fewer is not searched */
} dlp_pattern_t;

/* Rows of dlp_patterns: a built-in detector may have several. */
#define DLP_PATTERN_COUNT 37

extern const dlp_builtin_info_t dlp_builtins[RL_DLP_BUILTIN_COUNT];
extern const dlp_pattern_t dlp_patterns[DLP_PATTERN_COUNT];

/* ---- the compiled engine (rl_dlp.c) --------------------------------------- */

typedef struct {
    const pcre2_code *re;
    pcre2_code *owned;        /* custom rules: compiled for this engine */
    const dlp_pattern_t *pat; /* built-in pattern, NULL for a custom rule */
    int builtin;              /* -1 for a custom rule */
    const char *detector;
    char *owned_id;
    rl_dlp_severity_t severity;
    rl_dlp_action_t action;
    unsigned scope; /* RL_DLP_SCOPE_* bits */
    int rank;       /* -1 custom */
    bool utf;
} dlp_rule_t;

struct rl_dlp_engine {
    atomic_size_t refs;
    size_t nrules;
    dlp_rule_t *rules;
};

typedef struct {
    size_t start, end; /* absolute */
    uint32_t rule;
} dlp_cand_t;

typedef struct {
    dlp_cand_t *v;
    size_t n, cap;
} dlp_cands_t;

/* Where each pattern's stems occur in a short text (one-shot scans only). */
typedef struct dlp_occ dlp_occ_t;

rl_status_t dlp_findings_push(rl_dlp_findings_t *f, const rl_dlp_finding_t *x);
rl_status_t dlp_cands_push(dlp_cands_t *c, size_t start, size_t end, uint32_t rule);

/* Searches rule r (index ri) over subj[0..len) from pos; candidates (offsets
 * + base) go to out. final: the subject is complete. Otherwise the search is
 * partial-hard and stops at the first candidate that touches the end of
 * the subject. *resume: where this rule's next search must start (relative):
 * that candidate's start, or len. digits: count of ASCII digits in the
 * whole subject, or SIZE_MAX when not counted; occ: stem occurrences, or
 * NULL. */
rl_status_t dlp_search(const dlp_rule_t *r, uint32_t ri, const char *subj, size_t len, size_t pos,
                       bool final, size_t base, size_t digits, const dlp_occ_t *occ,
                       rl_dlp_scratch_t *sc, dlp_cands_t *out, size_t *resume);

/* True when candidate b makes a go (overlap resolution). */
bool dlp_dominates(const dlp_rule_t *rules, const dlp_cand_t *b, const dlp_cand_t *a);
/* qsort order of candidates: by start, longer first, then rule order. */
int dlp_cand_cmp(const void *x, const void *y);
rl_dlp_finding_t dlp_finding_of(const rl_dlp_engine_t *e, const dlp_cand_t *c);
/* where is request or response (what a scan must be told). */
bool dlp_where_ok(rl_dlp_scope_t where);

typedef struct {
    size_t start, end;
    const char *detector;
} dlp_span_t;

/* Writes text (absolute [base, base + len)) to out with spans (clipped,
 * sorted here) replaced by their markers; out is unchanged on error. */
rl_status_t dlp_redact_spans(const char *text, size_t len, size_t base, dlp_span_t *sp, size_t n,
                             rl_buf_t *out);

#endif
