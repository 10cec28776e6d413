/* rl_policy_internal: the compiled form of a policy set, shared by
 * rl_policy.c (compiling), rl_policy_eval.c (evaluating) and rl_policy_tz.c
 * (time zones). Not part of the public API; tests may include it. */
#ifndef RL_POLICY_INTERNAL_H
#define RL_POLICY_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rl_policy.h"

/* ---- time zones (rl_policy_tz.c) ---- */

/* One date of a POSIX TZ rule ("M3.5.0/2", "J60", "59"). */
typedef struct {
    uint8_t kind;  /* 'J' (1..365, no Feb 29), 'D' (0..365), 'M' (month.week.weekday) */
    int16_t day;   /* J and D */
    uint8_t month; /* M: 1..12 */
    uint8_t week;  /* M: 1..5, 5 = last */
    uint8_t wday;  /* M: 0 = Sunday */
    int32_t time;  /* seconds after local midnight, -167h..167h */
} rl_tz_date_t;

/* A POSIX TZ string, the footer of a TZif file ("CET-1CEST,M3.5.0,M10.5.0/3"). */
typedef struct {
    int32_t std_off; /* seconds east of UTC */
    int32_t dst_off;
    bool has_dst;
    rl_tz_date_t start, end;
} rl_tz_rule_t;

/* A time zone: a fixed offset, or the transitions of a TZif file followed by
 * its footer rule. Immutable once loaded. */
typedef struct rl_tz {
    struct rl_tz *next; /* the owning set's list */
    const char *name;
    bool fixed;
    int32_t fixed_off;
    size_t ntrans;
    const int64_t *trans; /* ascending UTC transition times */
    const uint8_t *trans_type;
    size_t ntypes;
    const int32_t *type_off; /* seconds east of UTC */
    bool has_rule;
    rl_tz_rule_t rule;
} rl_tz_t;

/* Loads "UTC", "Z", "+HH:MM" / "-HH:MM", or an IANA name read from $TZDIR or
 * /usr/share/zoneinfo. Returns owned *out (rl_tz_free) or RL_ERR_INVALID /
 * RL_ERR_NOT_FOUND / RL_ERR_NOMEM with a message in err. */
rl_status_t rl_tz_load(const char *name, rl_tz_t **out, char *err, size_t cap);

void rl_tz_free(rl_tz_t *tz);

/* The UTC offset (seconds east) in force at Unix time t. false when t is
 * outside years 1..9999. Allocation-free, thread-safe. */
bool rl_tz_offset(const rl_tz_t *tz, int64_t t, int32_t *off);

/* Parses a POSIX TZ string. RL_ERR_INVALID when malformed. */
rl_status_t rl_tz_parse_rule(const char *s, rl_tz_rule_t *r);

/* Days since 1970-01-01 of a proleptic Gregorian date. */
int64_t rl_tz_days_from_civil(int64_t y, unsigned m, unsigned d);

/* ---- compiled policies ---- */

typedef enum {
    RL_PAT_ANY,      /* "*" */
    RL_PAT_EXACT,    /* no wildcard */
    RL_PAT_PREFIX,   /* "abc*" */
    RL_PAT_SUFFIX,   /* "*abc" */
    RL_PAT_CONTAINS, /* "*abc*", case-sensitive */
    RL_PAT_GLOB,     /* anything else with * or ? */
    RL_PAT_REGEX,
} rl_pat_kind_t;

typedef struct {
    uint8_t kind;
    bool icase;
    bool jit;     /* REGEX: JIT-compiled */
    uint32_t len; /* bytes of text */
    const char
        *text; /* literal (unescaped) for EXACT/PREFIX/SUFFIX/CONTAINS, glob (escaped) for GLOB */
    pcre2_code *re; /* REGEX */
} rl_pat_t;

typedef struct {
    const rl_pat_t *v;
    uint32_t n;
} rl_pats_t;

typedef enum {
    RL_COND_ALL,
    RL_COND_ANY,
    RL_COND_NOT,
    RL_COND_ACTION,
    RL_COND_METHOD,
    RL_COND_TOKENS,
    RL_COND_PATH,
    RL_COND_MODEL,
    RL_COND_USER,
    RL_COND_HEADER,
    RL_COND_DLP,
    RL_COND_TOOL,
    RL_COND_TIME,
} rl_cond_kind_t;

typedef struct rl_cond {
    uint8_t kind;
    union {
        struct {
            const struct rl_cond *v;
            uint32_t n;
        } list;                      /* ALL, ANY */
        const struct rl_cond *child; /* NOT */
        uint32_t actions;            /* ACTION: bit per action */
        struct {
            const char *const *v;
            uint32_t n;
        } methods;      /* METHOD: uppercase tokens */
        int64_t tokens; /* TOKENS: holds when estimate > tokens */
        rl_pats_t pats; /* PATH, MODEL, USER, DLP, TOOL */
        struct {
            const char *name; /* lowercase */
            int8_t presence;  /* 1 present, 0 absent, -1 value matches pats */
            rl_pats_t pats;
        } header;
        struct {
            int32_t start, end; /* seconds after local midnight; end may be 86400 */
            uint8_t days;       /* bit per weekday, 0 = Sunday; 0x7f = every day */
            const rl_tz_t *tz;
        } time;
    } u;
} rl_cond_t;

typedef struct {
    const char *id;
    const char *name;
    const char *message;
    int64_t priority;
    uint8_t action; /* rl_policy_action_t */
    bool enabled;
    const char *const *agents; /* empty: every agent */
    uint32_t nagents;
    const char *const *gates;
    uint32_t ngates;
    rl_cond_t root; /* RL_COND_ALL */
} rl_pol_t;

typedef struct rl_arena_chunk rl_arena_chunk_t;

typedef struct rl_re_node {
    struct rl_re_node *next;
    pcre2_code *code;
} rl_re_node_t;

struct rl_policy_set {
    atomic_uint refs;
    rl_arena_chunk_t *arena;
    const rl_pol_t *pols; /* enabled policies in evaluation order */
    size_t n;
    unsigned needs;
    pcre2_match_context *mctx;
    rl_re_node_t *res; /* compiled regexes, for freeing */
    rl_tz_t *tzs;      /* loaded zones, for freeing */
    bool failed;       /* rl_policy_set_create_failed: every evaluation denies */
    const char *fail_id;
    const char *fail_reason;
};

/* The bit of an action name ("chat" 1, "embedding" 2, "mcp" 4, "tool_call" 8,
 * "http" 16); 0 for NULL or an unknown name. */
uint32_t rl_policy_action_bit(const char *a);

/* Matches s against one compiled pattern: 1 match, 0 no match, a negative
 * PCRE2 error code when the regex failed (match limit, ...). */
int rl_pat_match(const rl_pat_t *p, const char *s, const pcre2_match_context *mctx);

/* Full-string glob match: `*` any run, `?` one UTF-8 character, `\` escapes
 * the next byte; icase folds ASCII letters. */
bool rl_glob_match(const char *glob, const char *s, bool icase);

#endif
