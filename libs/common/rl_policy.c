/* Compiling policies from their JSON rows into an immutable set: strict
 * validation with errors naming the policy and the field, every string and
 * node in one arena, regexes compiled with JIT, time zones loaded once. */
#include "rl_policy_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_CHUNK 16384
#define NAME_MAX_CHARS 200
#define MESSAGE_MAX_CHARS 2000
#define SCOPE_ID_MAX 64
#define METHOD_MAX 32
#define HEADER_NAME_MAX 128

/* ---- arena: everything a set points to, freed in one walk ---- */

struct rl_arena_chunk {
    rl_arena_chunk_t *next;
    size_t used, cap;
    max_align_t data[];
};

static void *arena_alloc(rl_arena_chunk_t **head, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    rl_arena_chunk_t *c = *head;
    if (c == NULL || c->cap - c->used < size) {
        size_t cap = size > ARENA_CHUNK ? size : ARENA_CHUNK;
        c = malloc(sizeof *c + cap);
        if (c == NULL)
            return NULL;
        c->used = 0;
        c->cap = cap;
        c->next = *head;
        *head = c;
    }
    void *p = (unsigned char *)c->data + c->used;
    c->used += size;
    memset(p, 0, size);
    return p;
}

static void arena_free(rl_arena_chunk_t *c)
{
    while (c != NULL) {
        rl_arena_chunk_t *next = c->next;
        free(c);
        c = next;
    }
}

/* ---- compile context and errors ---- */

typedef struct {
    rl_arena_chunk_t *arena;
    rl_re_node_t *res;
    rl_tz_t *tzs;
    pcre2_compile_context *cctx;
    unsigned needs; /* of the policy being compiled */
    size_t nodes;   /* of the policy being compiled */
    rl_policy_error_t *err;
    const char *pid; /* id of the policy being compiled, NULL before it is known */
    size_t pindex;
    bool indexed; /* the policy came from an array at pindex */
    char path[128];
    size_t plen;
} cc_t;

static rl_status_t cfail(cc_t *cc, rl_status_t st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static rl_status_t cfail(cc_t *cc, rl_status_t st, const char *fmt, ...)
{
    char detail[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    char who[96];
    if (cc->pid != NULL)
        snprintf(who, sizeof who, "policy \"%.40s\"", cc->pid);
    else if (cc->indexed)
        snprintf(who, sizeof who, "policies[%zu]", cc->pindex);
    else
        snprintf(who, sizeof who, "policy");
    rl_policy_error_t *e = cc->err;
    snprintf(e->policy_id, sizeof e->policy_id, "%s", cc->pid ? cc->pid : "");
    snprintf(e->field, sizeof e->field, "%s", cc->path);
    /* Messages are cut at the buffer's size; the checks only say so to gcc. */
    int n = cc->path[0] != '\0'
                ? snprintf(e->message, sizeof e->message, "%s: %s: %s", who, cc->path, detail)
                : snprintf(e->message, sizeof e->message, "%s: %s", who, detail);
    if (n < 0)
        e->message[0] = '\0';
    return rl_error(st, "%s", e->message);
}

static rl_status_t nomem(cc_t *cc)
{
    return cfail(cc, RL_ERR_NOMEM, "out of memory");
}

/* Appends a path segment (".key" or "[i]"); returns the length to pop to. */
static size_t path_push(cc_t *cc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static size_t path_push(cc_t *cc, const char *fmt, ...)
{
    size_t saved = cc->plen;
    if (cc->plen < sizeof cc->path - 1) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(cc->path + cc->plen, sizeof cc->path - cc->plen, fmt, ap);
        va_end(ap);
        if (n > 0)
            cc->plen +=
                (size_t)n < sizeof cc->path - cc->plen ? (size_t)n : sizeof cc->path - cc->plen - 1;
    }
    return saved;
}

static size_t path_key(cc_t *cc, const char *key)
{
    return cc->plen == 0 ? path_push(cc, "%.60s", key) : path_push(cc, ".%.60s", key);
}

static void path_pop(cc_t *cc, size_t saved)
{
    cc->plen = saved;
    cc->path[saved] = '\0';
}

static const char *type_name(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "a value";
}

static char *arena_strndup(cc_t *cc, const char *s, size_t n)
{
    char *d = arena_alloc(&cc->arena, n + 1);
    if (d != NULL)
        memcpy(d, s, n);
    return d;
}

static char *arena_strdup(cc_t *cc, const char *s)
{
    return arena_strndup(cc, s, strlen(s));
}

static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* ---- patterns ---- */

static const char PATS_SHAPE[] =
    "must be a glob string, a {\"regex\": \"...\"} object or a non-empty array of them";

static rl_status_t compile_regex(cc_t *cc, const json_t *obj, bool icase, rl_pat_t *p)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        if (strcmp(key, "regex") != 0) {
            size_t s = path_key(cc, key);
            rl_status_t st =
                cfail(cc, RL_ERR_INVALID, "unknown field (a pattern object has only \"regex\")");
            path_pop(cc, s);
            return st;
        }
    }
    v = json_object_get(obj, "regex");
    size_t saved = path_key(cc, "regex");
    rl_status_t st = RL_OK;
    if (v == NULL || !json_is_string(v)) {
        st = cfail(cc, RL_ERR_INVALID, "must be a string, not %s", v ? type_name(v) : "missing");
        goto out;
    }
    const char *src = json_string_value(v);
    size_t len = json_string_length(v);
    if (len == 0) {
        st = cfail(cc, RL_ERR_INVALID, "must not be empty");
        goto out;
    }
    if (len > RL_POLICY_MAX_PATTERN) {
        st = cfail(cc, RL_ERR_TOO_LARGE, "is %zu bytes long, more than %d", len,
                   RL_POLICY_MAX_PATTERN);
        goto out;
    }
    int ec;
    PCRE2_SIZE eoff;
    uint32_t opts = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_NEVER_BACKSLASH_C |
                    (icase ? PCRE2_CASELESS : 0);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)src, len, opts, &ec, &eoff, cc->cctx);
    if (re == NULL) {
        char msg[128];
        pcre2_get_error_message(ec, (PCRE2_UCHAR *)msg, sizeof msg);
        st = cfail(cc, RL_ERR_INVALID, "invalid regular expression at offset %zu: %s", (size_t)eoff,
                   msg);
        goto out;
    }
    rl_re_node_t *node = arena_alloc(&cc->arena, sizeof *node);
    if (node == NULL) {
        pcre2_code_free(re);
        st = nomem(cc);
        goto out;
    }
    node->code = re;
    node->next = cc->res;
    cc->res = node;
    /* Without JIT (not built in, or no executable memory) pcre2_match runs
     * the interpreter under the same limits: slower, same answers. */
    p->jit = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
    p->kind = RL_PAT_REGEX;
    p->icase = icase;
    p->re = re;
    p->len = (uint32_t)len;
    p->text = arena_strndup(cc, src, len);
    if (p->text == NULL)
        st = nomem(cc);
out:
    path_pop(cc, saved);
    return st;
}

static rl_status_t compile_glob(cc_t *cc, const json_t *j, bool icase, rl_pat_t *p)
{
    const char *g = json_string_value(j);
    size_t len = json_string_length(j);
    if (len == 0)
        return cfail(cc, RL_ERR_INVALID, "must not be empty (\"*\" matches anything)");
    if (len > RL_POLICY_MAX_PATTERN)
        return cfail(cc, RL_ERR_TOO_LARGE, "is %zu bytes long, more than %d", len,
                     RL_POLICY_MAX_PATTERN);
    if (memchr(g, '\0', len) != NULL)
        return cfail(cc, RL_ERR_INVALID, "must not contain a NUL character");
    /* One pass: the unescaped literal text and where the wildcards are. */
    char *lit = arena_alloc(&cc->arena, len + 1);
    if (lit == NULL)
        return nomem(cc);
    size_t nlit = 0, lead = 0, trail = 0;
    bool inner_wild = false, seen_lit = false;
    for (size_t i = 0; i < len; i++) {
        char ch = g[i];
        if (ch == '\\') {
            if (i + 1 == len)
                return cfail(cc, RL_ERR_INVALID,
                             "ends with a lone backslash (write \\\\ for a backslash)");
            ch = g[++i];
        } else if (ch == '*' || ch == '?') {
            if (ch == '?')
                inner_wild = true; /* a ? anywhere needs the general matcher */
            if (!seen_lit)
                lead++;
            else
                trail++;
            continue;
        }
        if (trail > 0)
            inner_wild = true; /* a literal after a wildcard that followed a literal */
        trail = 0;
        seen_lit = true;
        lit[nlit++] = ch;
    }
    p->icase = icase;
    if (!seen_lit && !inner_wild) {
        p->kind = RL_PAT_ANY;
    } else if (!inner_wild && lead == 0) {
        p->kind = trail == 0 ? RL_PAT_EXACT : RL_PAT_PREFIX;
    } else if (!inner_wild && trail == 0) {
        p->kind = RL_PAT_SUFFIX;
    } else if (!inner_wild && !icase) {
        p->kind = RL_PAT_CONTAINS;
    } else {
        p->kind = RL_PAT_GLOB;
        p->text = arena_strndup(cc, g, len);
        p->len = (uint32_t)len;
        return p->text ? RL_OK : nomem(cc);
    }
    p->text = lit;
    p->len = (uint32_t)nlit;
    return RL_OK;
}

static rl_status_t compile_pat(cc_t *cc, const json_t *j, bool icase, rl_pat_t *p)
{
    if (json_is_string(j))
        return compile_glob(cc, j, icase, p);
    if (json_is_object(j))
        return compile_regex(cc, j, icase, p);
    return cfail(cc, RL_ERR_INVALID, "%s, not %s", PATS_SHAPE, type_name(j));
}

static rl_status_t compile_pats(cc_t *cc, const json_t *j, bool icase, rl_pats_t *out)
{
    if (!json_is_array(j)) {
        rl_pat_t *p = arena_alloc(&cc->arena, sizeof *p);
        if (p == NULL)
            return nomem(cc);
        out->v = p;
        out->n = 1;
        return compile_pat(cc, j, icase, p);
    }
    size_t n = json_array_size(j);
    if (n == 0)
        return cfail(cc, RL_ERR_INVALID, "%s (this array is empty)", PATS_SHAPE);
    if (n > RL_POLICY_MAX_LIST)
        return cfail(cc, RL_ERR_TOO_LARGE, "has %zu entries, more than %d", n, RL_POLICY_MAX_LIST);
    rl_pat_t *v = arena_alloc(&cc->arena, n * sizeof *v);
    if (v == NULL)
        return nomem(cc);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(j, i);
        size_t saved = path_push(cc, "[%zu]", i);
        rl_status_t st = json_is_array(e)
                             ? cfail(cc, RL_ERR_INVALID, "%s, not an array", PATS_SHAPE)
                             : compile_pat(cc, e, icase, &v[i]);
        path_pop(cc, saved);
        if (st != RL_OK)
            return st;
    }
    out->v = v;
    out->n = (uint32_t)n;
    return RL_OK;
}

/* A string or a non-empty array of strings, each passed to check. */
typedef rl_status_t (*str_fn)(cc_t *cc, const char *s, size_t i, void *arg);

static rl_status_t each_string(cc_t *cc, const json_t *j, const char *what, size_t *count,
                               str_fn fn, void *arg)
{
    if (json_is_string(j)) {
        *count = 1;
        return fn(cc, json_string_value(j), 0, arg);
    }
    if (!json_is_array(j))
        return cfail(cc, RL_ERR_INVALID, "must be %s or a non-empty array of them, not %s", what,
                     type_name(j));
    size_t n = json_array_size(j);
    if (n == 0)
        return cfail(cc, RL_ERR_INVALID,
                     "must be %s or a non-empty array of them (this array is empty)", what);
    if (n > RL_POLICY_MAX_LIST)
        return cfail(cc, RL_ERR_TOO_LARGE, "has %zu entries, more than %d", n, RL_POLICY_MAX_LIST);
    *count = n;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(j, i);
        size_t saved = path_push(cc, "[%zu]", i);
        rl_status_t st = json_is_string(e)
                             ? fn(cc, json_string_value(e), i, arg)
                             : cfail(cc, RL_ERR_INVALID, "must be %s, not %s", what, type_name(e));
        path_pop(cc, saved);
        if (st != RL_OK)
            return st;
    }
    return RL_OK;
}

/* ---- conditions ---- */

static rl_status_t add_action(cc_t *cc, const char *s, size_t i, void *arg)
{
    (void)i;
    uint32_t bit = rl_policy_action_bit(s);
    *(uint32_t *)arg |= bit;
    if (bit != 0)
        return RL_OK;
    return cfail(cc, RL_ERR_INVALID,
                 "unknown action \"%.40s\" (expected chat, embedding, mcp, tool_call or http)", s);
}

static bool is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool is_token(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!is_tchar(s[n]))
            return false;
    return n > 0 && n <= max;
}

typedef struct {
    const char **v;
} methods_arg_t;

static rl_status_t add_method(cc_t *cc, const char *s, size_t i, void *arg)
{
    if (!is_token(s, METHOD_MAX))
        return cfail(cc, RL_ERR_INVALID, "\"%.40s\" is not an HTTP method", s);
    char *u = arena_strdup(cc, s);
    if (u == NULL)
        return nomem(cc);
    for (char *p = u; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 32);
    ((methods_arg_t *)arg)->v[i] = u;
    return RL_OK;
}

/* "HH:MM" into seconds after midnight; max_h 24 allows "24:00" only. */
static bool parse_hhmm(const char *s, int max_h, int32_t *out)
{
    if (strlen(s) != 5 || s[2] != ':')
        return false;
    for (int i = 0; i < 5; i++)
        if (i != 2 && !(s[i] >= '0' && s[i] <= '9'))
            return false;
    int h = (s[0] - '0') * 10 + (s[1] - '0'), m = (s[3] - '0') * 10 + (s[4] - '0');
    if (m > 59 || h > max_h || (h == 24 && m != 0))
        return false;
    *out = h * 3600 + m * 60;
    return true;
}

static const char *const DAYS[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

static rl_status_t add_day(cc_t *cc, const char *s, size_t i, void *arg)
{
    (void)i;
    for (int k = 0; k < 7; k++) {
        if (strcmp(s, DAYS[k]) == 0) {
            *(uint8_t *)arg |= (uint8_t)(1u << k);
            return RL_OK;
        }
    }
    return cfail(cc, RL_ERR_INVALID,
                 "unknown day \"%.40s\" (expected mon, tue, wed, thu, fri, sat or sun)", s);
}

static rl_status_t load_tz(cc_t *cc, const char *name, const rl_tz_t **out)
{
    for (rl_tz_t *t = cc->tzs; t != NULL; t = t->next) {
        if (strcmp(t->name, name) == 0) {
            *out = t;
            return RL_OK;
        }
    }
    char msg[320];
    rl_tz_t *tz;
    rl_status_t st = rl_tz_load(name, &tz, msg, sizeof msg);
    if (st != RL_OK)
        return cfail(cc, st == RL_ERR_NOMEM ? RL_ERR_NOMEM : RL_ERR_INVALID, "%s", msg);
    tz->next = cc->tzs;
    cc->tzs = tz;
    *out = tz;
    return RL_OK;
}

static rl_status_t compile_time(cc_t *cc, const json_t *j, rl_cond_t *c)
{
    if (!json_is_object(j))
        return cfail(cc, RL_ERR_INVALID,
                     "must be an object {\"start\": \"HH:MM\", \"end\": \"HH:MM\", \"tz\", "
                     "\"days\"}, not %s",
                     type_name(j));
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)j, key, v)
    {
        if (strcmp(key, "start") && strcmp(key, "end") && strcmp(key, "tz") &&
            strcmp(key, "days")) {
            size_t s = path_key(cc, key);
            rl_status_t st =
                cfail(cc, RL_ERR_INVALID, "unknown field (expected start, end, tz or days)");
            path_pop(cc, s);
            return st;
        }
    }
    c->kind = RL_COND_TIME;
    rl_status_t st = RL_OK;
    static const char *const ends[] = {"start", "end"};
    int32_t *dst[] = {&c->u.time.start, &c->u.time.end};
    for (int k = 0; k < 2 && st == RL_OK; k++) {
        size_t s = path_key(cc, ends[k]);
        v = json_object_get(j, ends[k]);
        if (v == NULL || json_is_null(v))
            st = cfail(cc, RL_ERR_INVALID, "is required (\"HH:MM\")");
        else if (!json_is_string(v))
            st = cfail(cc, RL_ERR_INVALID, "must be a string \"HH:MM\", not %s", type_name(v));
        else if (!parse_hhmm(json_string_value(v), k == 0 ? 23 : 24, dst[k]))
            st = cfail(cc, RL_ERR_INVALID, "\"%.20s\" is not a time of day (HH:MM, 00:00 to %s)",
                       json_string_value(v), k == 0 ? "23:59" : "24:00");
        path_pop(cc, s);
    }
    if (st != RL_OK)
        return st;
    if (c->u.time.start == c->u.time.end) {
        size_t s = path_key(cc, "end");
        st = cfail(cc, RL_ERR_INVALID,
                   "equals start: the window is empty (for all day use 00:00 to 24:00)");
        path_pop(cc, s);
        return st;
    }
    size_t s = path_key(cc, "tz");
    v = json_object_get(j, "tz");
    if (v == NULL || json_is_null(v))
        st = load_tz(cc, "UTC", &c->u.time.tz);
    else if (!json_is_string(v))
        st =
            cfail(cc, RL_ERR_INVALID,
                  "must be a string (\"UTC\", \"+05:30\", \"Europe/Paris\"), not %s", type_name(v));
    else
        st = load_tz(cc, json_string_value(v), &c->u.time.tz);
    path_pop(cc, s);
    if (st != RL_OK)
        return st;
    s = path_key(cc, "days");
    v = json_object_get(j, "days");
    size_t n;
    if (v == NULL || json_is_null(v))
        c->u.time.days = 0x7f;
    else
        st = each_string(cc, v, "a day name (mon..sun)", &n, add_day, &c->u.time.days);
    path_pop(cc, s);
    cc->needs |= RL_POLICY_NEEDS_TIME;
    return st;
}

static rl_status_t compile_conds(cc_t *cc, const json_t *j, rl_cond_t *out, int depth, bool root);

static rl_status_t new_node(cc_t *cc, rl_cond_t **out, size_t n)
{
    cc->nodes += n;
    if (cc->nodes > RL_POLICY_MAX_NODES)
        return cfail(cc, RL_ERR_TOO_LARGE, "more than %d conditions in one policy",
                     RL_POLICY_MAX_NODES);
    *out = n ? arena_alloc(&cc->arena, n * sizeof **out) : NULL;
    return (n == 0 || *out) ? RL_OK : nomem(cc);
}

/* any_of / all_of: a non-empty array of condition objects. */
static rl_status_t compile_group(cc_t *cc, const json_t *j, rl_cond_t *c, uint8_t kind, int depth)
{
    if (!json_is_array(j) || json_array_size(j) == 0)
        return cfail(cc, RL_ERR_INVALID, "must be a non-empty array of condition objects, not %s",
                     json_is_array(j) ? "an empty array" : type_name(j));
    size_t n = json_array_size(j);
    if (n > RL_POLICY_MAX_LIST)
        return cfail(cc, RL_ERR_TOO_LARGE, "has %zu entries, more than %d", n, RL_POLICY_MAX_LIST);
    rl_cond_t *v;
    rl_status_t st = new_node(cc, &v, n);
    if (st != RL_OK)
        return st;
    for (size_t i = 0; i < n && st == RL_OK; i++) {
        size_t saved = path_push(cc, "[%zu]", i);
        json_t *e = json_array_get(j, i);
        st = json_is_object(e) ? compile_conds(cc, e, &v[i], depth + 1, false)
                               : cfail(cc, RL_ERR_INVALID,
                                       "must be an object of conditions, not %s", type_name(e));
        path_pop(cc, saved);
    }
    c->kind = kind;
    c->u.list.v = v;
    c->u.list.n = (uint32_t)n;
    return st;
}

static rl_status_t compile_headers(cc_t *cc, const json_t *j, rl_cond_t *c)
{
    if (!json_is_object(j) || json_object_size(j) == 0)
        return cfail(cc, RL_ERR_INVALID,
                     "must be a non-empty object {header name: pattern, true or false}, not %s",
                     json_is_object(j) ? "an empty object" : type_name(j));
    size_t n = json_object_size(j);
    rl_cond_t *v;
    rl_status_t st = new_node(cc, &v, n);
    if (st != RL_OK)
        return st;
    size_t i = 0;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)j, key, val)
    {
        size_t saved = path_key(cc, key);
        rl_cond_t *h = &v[i++];
        h->kind = RL_COND_HEADER;
        if (!is_token(key, HEADER_NAME_MAX)) {
            st = cfail(cc, RL_ERR_INVALID, "is not a valid header name");
        } else {
            char *lname = arena_strdup(cc, key);
            if (lname == NULL) {
                st = nomem(cc);
            } else {
                for (char *p = lname; *p; p++)
                    if (*p >= 'A' && *p <= 'Z')
                        *p = (char)(*p + 32);
                h->u.header.name = lname;
                if (json_is_boolean(val)) {
                    h->u.header.presence = json_is_true(val) ? 1 : 0;
                } else {
                    h->u.header.presence = -1;
                    st = compile_pats(cc, val, false, &h->u.header.pats);
                }
            }
        }
        path_pop(cc, saved);
        if (st != RL_OK)
            return st;
    }
    c->kind = RL_COND_ALL;
    c->u.list.v = v;
    c->u.list.n = (uint32_t)n;
    cc->needs |= RL_POLICY_NEEDS_HEADERS;
    return RL_OK;
}

/* Condition keys, in the order they are evaluated (cheap first: within an
 * all-of every condition must hold, so only errors can see the order). */
static const struct {
    const char *key;
    uint8_t rank;
} KEYS[] = {
    {"action", 0},  {"method", 1},  {"input_tokens_above", 2},
    {"path", 3},    {"model", 4},   {"user", 5},
    {"headers", 6}, {"dlp", 7},     {"tool", 8},
    {"time", 9},    {"all_of", 10}, {"any_of", 11},
    {"not", 12},
};
#define NKEYS (sizeof KEYS / sizeof KEYS[0])

static int key_rank(const char *k)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(KEYS[i].key, k) == 0)
            return KEYS[i].rank;
    return -1;
}

static rl_status_t compile_one(cc_t *cc, const char *key, const json_t *v, rl_cond_t *c, int depth)
{
    size_t n = 0;
    rl_status_t st;
    if (strcmp(key, "action") == 0) {
        c->kind = RL_COND_ACTION;
        return each_string(cc, v, "an action name", &n, add_action, &c->u.actions);
    }
    if (strcmp(key, "method") == 0) {
        c->kind = RL_COND_METHOD;
        size_t cnt = json_is_array(v) ? json_array_size(v) : 1;
        methods_arg_t arg = {arena_alloc(&cc->arena, (cnt ? cnt : 1) * sizeof(char *))};
        if (arg.v == NULL)
            return nomem(cc);
        st = each_string(cc, v, "an HTTP method", &n, add_method, &arg);
        c->u.methods.v = arg.v;
        c->u.methods.n = (uint32_t)n;
        return st;
    }
    if (strcmp(key, "input_tokens_above") == 0) {
        c->kind = RL_COND_TOKENS;
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return cfail(cc, RL_ERR_INVALID, "must be an integer >= 0, not %s",
                         json_is_integer(v) ? "a negative one" : type_name(v));
        c->u.tokens = (int64_t)json_integer_value(v);
        cc->needs |= RL_POLICY_NEEDS_TOKENS;
        return RL_OK;
    }
    if (strcmp(key, "path") == 0 || strcmp(key, "model") == 0 || strcmp(key, "user") == 0 ||
        strcmp(key, "dlp") == 0 || strcmp(key, "tool") == 0) {
        bool icase = false;
        switch (key[0]) {
        case 'p':
            c->kind = RL_COND_PATH;
            break;
        case 'm':
            c->kind = RL_COND_MODEL;
            icase = true;
            break;
        case 'u':
            c->kind = RL_COND_USER;
            break;
        case 'd':
            c->kind = RL_COND_DLP;
            cc->needs |= RL_POLICY_NEEDS_DLP;
            break;
        default:
            c->kind = RL_COND_TOOL;
            cc->needs |= RL_POLICY_NEEDS_TOOLS;
            break;
        }
        return compile_pats(cc, v, icase, &c->u.pats);
    }
    if (strcmp(key, "headers") == 0)
        return compile_headers(cc, v, c);
    if (strcmp(key, "time") == 0)
        return compile_time(cc, v, c);
    if (strcmp(key, "any_of") == 0)
        return compile_group(cc, v, c, RL_COND_ANY, depth);
    if (strcmp(key, "all_of") == 0)
        return compile_group(cc, v, c, RL_COND_ALL, depth);
    /* "not" */
    if (!json_is_object(v) && !json_is_array(v))
        return cfail(cc, RL_ERR_INVALID, "must be an object of conditions, not %s", type_name(v));
    rl_cond_t *child;
    if ((st = new_node(cc, &child, 1)) != RL_OK)
        return st;
    c->kind = RL_COND_NOT;
    c->u.child = child;
    return compile_conds(cc, v, child, depth + 1, false);
}

typedef struct {
    const char *key;
    const json_t *val;
    int rank;
} kv_t;

static int kv_cmp(const void *a, const void *b)
{
    const kv_t *x = a, *y = b;
    if (x->rank != y->rank)
        return x->rank - y->rank;
    return strcmp(x->key, y->key);
}

/* An object (every key holds) or, at the root and under not, an array of
 * objects (every one holds). */
static rl_status_t compile_conds(cc_t *cc, const json_t *j, rl_cond_t *out, int depth, bool root)
{
    if (depth > RL_POLICY_MAX_DEPTH)
        return cfail(cc, RL_ERR_TOO_LARGE, "conditions nest deeper than %d levels",
                     RL_POLICY_MAX_DEPTH);
    if (json_is_array(j)) {
        if (root && json_array_size(j) == 0) {
            out->kind = RL_COND_ALL; /* like {}: always holds */
            return RL_OK;
        }
        return compile_group(cc, j, out, RL_COND_ALL, depth);
    }
    if (!json_is_object(j))
        return cfail(cc, RL_ERR_INVALID, "must be an object of conditions, not %s", type_name(j));
    if (json_object_size(j) == 0 && !root)
        return cfail(cc, RL_ERR_INVALID, "must not be empty");
    kv_t kv[NKEYS]; /* keys are unique and all known, so at most NKEYS */
    size_t k = 0;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)j, key, val)
    {
        int rank = key_rank(key);
        if (rank < 0 || k == NKEYS) {
            size_t saved = path_key(cc, key);
            rl_status_t st =
                cfail(cc, RL_ERR_INVALID,
                      "unknown condition (expected action, method, path, model, tool, "
                      "user, headers, dlp, input_tokens_above, time, not, any_of or all_of)");
            path_pop(cc, saved);
            return st;
        }
        kv[k++] = (kv_t){key, val, rank};
    }
    qsort(kv, k, sizeof kv[0], kv_cmp);
    rl_cond_t *v = NULL;
    rl_status_t st = new_node(cc, &v, k);
    for (size_t i = 0; i < k && st == RL_OK; i++) {
        size_t saved = path_key(cc, kv[i].key);
        if (json_is_null(kv[i].val))
            st = cfail(cc, RL_ERR_INVALID, "must not be null (leave the condition out instead)");
        else
            st = compile_one(cc, kv[i].key, kv[i].val, &v[i], depth);
        path_pop(cc, saved);
    }
    out->kind = RL_COND_ALL;
    out->u.list.v = v;
    out->u.list.n = (uint32_t)k;
    return st;
}

/* ---- policies ---- */

static rl_status_t add_scope_id(cc_t *cc, const char *s, size_t i, void *arg)
{
    size_t n = strlen(s);
    if (n == 0 || n > SCOPE_ID_MAX)
        return cfail(cc, RL_ERR_INVALID, "must be an id of 1 to %d bytes", SCOPE_ID_MAX);
    const char **v = arg;
    v[i] = arena_strdup(cc, s);
    return v[i] ? RL_OK : nomem(cc);
}

static rl_status_t compile_scope(cc_t *cc, const json_t *j, rl_pol_t *p)
{
    if (j == NULL || json_is_null(j))
        return RL_OK;
    if (!json_is_object(j))
        return cfail(cc, RL_ERR_INVALID,
                     "must be an object {\"agents\": [ids], \"gates\": [ids]}, not %s",
                     type_name(j));
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)j, key, v)
    {
        size_t saved = path_key(cc, key);
        rl_status_t st = RL_OK;
        const char *const **dst = NULL;
        uint32_t *dn = NULL;
        if (strcmp(key, "agents") == 0) {
            dst = &p->agents;
            dn = &p->nagents;
        } else if (strcmp(key, "gates") == 0) {
            dst = &p->gates;
            dn = &p->ngates;
        } else {
            st = cfail(cc, RL_ERR_INVALID, "unknown field (expected agents or gates)");
        }
        if (st == RL_OK && !json_is_null(v)) {
            if (!json_is_array(v)) {
                st = cfail(cc, RL_ERR_INVALID, "must be an array of ids (empty: all), not %s",
                           type_name(v));
            } else if (json_array_size(v) > RL_POLICY_MAX_LIST) {
                st = cfail(cc, RL_ERR_TOO_LARGE, "has %zu entries, more than %d",
                           json_array_size(v), RL_POLICY_MAX_LIST);
            } else if (json_array_size(v) > 0) {
                const char **ids = arena_alloc(&cc->arena, json_array_size(v) * sizeof(char *));
                size_t n;
                st = ids ? each_string(cc, v, "an id", &n, add_scope_id, ids) : nomem(cc);
                *dst = ids;
                *dn = (uint32_t)json_array_size(v);
            }
        }
        path_pop(cc, saved);
        if (st != RL_OK)
            return st;
    }
    return RL_OK;
}

static rl_status_t opt_string(cc_t *cc, const json_t *pol, const char *key, size_t max_chars,
                              const char **out)
{
    json_t *v = json_object_get(pol, key);
    *out = "";
    if (v == NULL || json_is_null(v))
        return RL_OK;
    size_t saved = path_key(cc, key);
    rl_status_t st = RL_OK;
    if (!json_is_string(v))
        st = cfail(cc, RL_ERR_INVALID, "must be a string, not %s", type_name(v));
    else if (utf8_chars(json_string_value(v)) > max_chars)
        st = cfail(cc, RL_ERR_TOO_LARGE, "is longer than %zu characters", max_chars);
    else if ((*out = arena_strdup(cc, json_string_value(v))) == NULL)
        st = nomem(cc);
    path_pop(cc, saved);
    return st;
}

static rl_status_t compile_policy(cc_t *cc, const json_t *j, rl_pol_t *p, bool need_id)
{
    cc->pid = NULL;
    cc->nodes = 0;
    cc->needs = 0;
    path_pop(cc, 0);
    if (!json_is_object(j))
        return cfail(cc, RL_ERR_INVALID, "must be an object, not %s", type_name(j));
    rl_status_t st;
    json_t *v = json_object_get(j, "id");
    size_t saved = path_key(cc, "id");
    if (v == NULL || json_is_null(v)) {
        if (need_id)
            return cfail(cc, RL_ERR_INVALID, "is required");
        p->id = "";
    } else if (!json_is_string(v) || json_string_length(v) == 0 ||
               json_string_length(v) >= RL_POLICY_ID_MAX) {
        return cfail(cc, RL_ERR_INVALID, "must be a string of 1 to %d bytes", RL_POLICY_ID_MAX - 1);
    } else if ((p->id = arena_strdup(cc, json_string_value(v))) == NULL) {
        return nomem(cc);
    } else {
        cc->pid = p->id;
    }
    path_pop(cc, saved);
    if ((st = opt_string(cc, j, "name", NAME_MAX_CHARS, &p->name)) != RL_OK ||
        (st = opt_string(cc, j, "message", MESSAGE_MAX_CHARS, &p->message)) != RL_OK)
        return st;

    saved = path_key(cc, "priority");
    v = json_object_get(j, "priority");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < INT32_MIN ||
            json_integer_value(v) > INT32_MAX)
            return cfail(cc, RL_ERR_INVALID, "must be an integer from %d to %d", INT32_MIN,
                         INT32_MAX);
        p->priority = (int64_t)json_integer_value(v);
    }
    path_pop(cc, saved);

    saved = path_key(cc, "enabled");
    v = json_object_get(j, "enabled");
    p->enabled = true;
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_boolean(v))
            return cfail(cc, RL_ERR_INVALID, "must be true or false, not %s", type_name(v));
        p->enabled = json_is_true(v);
    }
    path_pop(cc, saved);

    saved = path_key(cc, "action");
    v = json_object_get(j, "action");
    const char *a = json_is_string(v) ? json_string_value(v) : NULL;
    if (a != NULL && strcmp(a, "ALLOW") == 0)
        p->action = RL_POLICY_ALLOW;
    else if (a != NULL && strcmp(a, "FLAG") == 0)
        p->action = RL_POLICY_FLAG;
    else if (a != NULL && strcmp(a, "DENY") == 0)
        p->action = RL_POLICY_DENY;
    else if (v == NULL || json_is_null(v))
        return cfail(cc, RL_ERR_INVALID, "is required (ALLOW, FLAG or DENY)");
    else if (a == NULL)
        return cfail(cc, RL_ERR_INVALID, "must be ALLOW, FLAG or DENY, not %s", type_name(v));
    else
        return cfail(cc, RL_ERR_INVALID, "must be ALLOW, FLAG or DENY, not \"%.20s\"", a);
    path_pop(cc, saved);

    saved = path_key(cc, "scope");
    st = compile_scope(cc, json_object_get(j, "scope"), p);
    path_pop(cc, saved);
    if (st != RL_OK)
        return st;

    saved = path_key(cc, "conditions");
    v = json_object_get(j, "conditions");
    if (v == NULL || json_is_null(v))
        p->root.kind = RL_COND_ALL; /* no conditions: always holds */
    else
        st = compile_conds(cc, v, &p->root, 0, true);
    path_pop(cc, saved);
    return st;
}

static void cc_init(cc_t *cc, rl_policy_error_t *err)
{
    memset(cc, 0, sizeof *cc);
    cc->err = err;
    memset(err, 0, sizeof *err);
}

static rl_status_t cc_prepare(cc_t *cc)
{
    cc->cctx = pcre2_compile_context_create(NULL);
    if (cc->cctx == NULL)
        return nomem(cc);
    pcre2_set_max_pattern_length(cc->cctx, RL_POLICY_MAX_PATTERN);
    pcre2_set_parens_nest_limit(cc->cctx, 64);
    return RL_OK;
}

static void cc_free(cc_t *cc)
{
    for (rl_re_node_t *r = cc->res; r != NULL; r = r->next)
        pcre2_code_free(r->code);
    while (cc->tzs != NULL) {
        rl_tz_t *next = cc->tzs->next;
        rl_tz_free(cc->tzs);
        cc->tzs = next;
    }
    pcre2_compile_context_free(cc->cctx);
    arena_free(cc->arena);
    memset(cc, 0, sizeof *cc);
}

rl_status_t rl_policy_validate_one(const json_t *policy, rl_policy_error_t *err)
{
    rl_policy_error_t scratch;
    cc_t cc;
    cc_init(&cc, err ? err : &scratch);
    rl_pol_t p;
    memset(&p, 0, sizeof p);
    rl_status_t st = cc_prepare(&cc);
    if (st == RL_OK)
        st = compile_policy(&cc, policy, &p, false);
    cc_free(&cc);
    return st;
}

typedef struct {
    const rl_pol_t *p;
    size_t index;
} ord_t;

static int ord_by_id(const void *a, const void *b)
{
    const ord_t *x = a, *y = b;
    int c = strcmp(x->p->id, y->p->id);
    return c ? c : (x->index > y->index) - (x->index < y->index);
}

static int pol_cmp(const void *a, const void *b)
{
    const rl_pol_t *x = a, *y = b;
    if (x->priority != y->priority)
        return x->priority < y->priority ? -1 : 1;
    return strcmp(x->id, y->id);
}

static rl_policy_set_t *set_new(cc_t *cc)
{
    rl_policy_set_t *set = calloc(1, sizeof *set);
    if (set == NULL)
        return NULL;
    atomic_init(&set->refs, 1);
    set->arena = cc->arena;
    set->res = cc->res;
    set->tzs = cc->tzs;
    cc->arena = NULL;
    cc->res = NULL;
    cc->tzs = NULL;
    return set;
}

rl_status_t rl_policy_compile(const json_t *policies, rl_policy_set_t **out, rl_policy_error_t *err)
{
    rl_policy_error_t scratch;
    cc_t cc;
    cc_init(&cc, err ? err : &scratch);
    if (!json_is_array(policies))
        return cfail(&cc, RL_ERR_INVALID, "the policies must be a JSON array, not %s",
                     policies ? type_name(policies) : "nothing");
    size_t n = json_array_size(policies);
    if (n > RL_POLICY_MAX_POLICIES)
        return cfail(&cc, RL_ERR_TOO_LARGE, "%zu policies, more than %d in one set", n,
                     RL_POLICY_MAX_POLICIES);
    rl_status_t st = cc_prepare(&cc);
    rl_pol_t *all = NULL;
    ord_t *ord = NULL;
    pcre2_match_context *mctx = NULL;
    unsigned needs = 0;
    size_t nenabled = 0;
    if (st != RL_OK)
        goto fail;
    all = arena_alloc(&cc.arena, (n ? n : 1) * sizeof *all);
    ord = malloc((n ? n : 1) * sizeof *ord);
    mctx = pcre2_match_context_create(NULL);
    if (all == NULL || ord == NULL || mctx == NULL) {
        st = nomem(&cc);
        goto fail;
    }
    cc.indexed = true;
    for (size_t i = 0; i < n; i++) {
        cc.pindex = i;
        if ((st = compile_policy(&cc, json_array_get(policies, i), &all[i], true)) != RL_OK)
            goto fail;
        ord[i] = (ord_t){&all[i], i};
        if (all[i].enabled) {
            needs |= cc.needs;
            nenabled++;
        }
    }
    qsort(ord, n, sizeof *ord, ord_by_id);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(ord[i].p->id, ord[i - 1].p->id) == 0) {
            cc.pid = ord[i].p->id;
            cc.pindex = ord[i].index;
            path_pop(&cc, 0);
            path_key(&cc, "id");
            st = cfail(&cc, RL_ERR_INVALID, "duplicate id (policies[%zu] and policies[%zu])",
                       ord[i - 1].index, ord[i].index);
            goto fail;
        }
    }
    rl_pol_t *pols = arena_alloc(&cc.arena, (nenabled ? nenabled : 1) * sizeof *pols);
    if (pols == NULL) {
        st = nomem(&cc);
        goto fail;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (all[i].enabled)
            pols[k++] = all[i];
    qsort(pols, k, sizeof *pols, pol_cmp);
    pcre2_set_match_limit(mctx, RL_POLICY_REGEX_MATCH_LIMIT);
    pcre2_set_depth_limit(mctx, RL_POLICY_REGEX_MATCH_LIMIT);
    pcre2_set_heap_limit(mctx, 4096); /* KiB, interpreter only */
    rl_policy_set_t *set = set_new(&cc);
    if (set == NULL) {
        st = nomem(&cc);
        goto fail;
    }
    set->pols = pols;
    set->n = k;
    set->needs = needs;
    set->mctx = mctx;
    free(ord);
    cc_free(&cc);
    *out = set;
    return RL_OK;
fail:
    pcre2_match_context_free(mctx);
    free(ord);
    cc_free(&cc);
    return st;
}

rl_status_t rl_policy_set_create_failed(const rl_policy_error_t *err, rl_policy_set_t **out)
{
    rl_policy_error_t scratch;
    cc_t cc;
    cc_init(&cc, &scratch);
    const char *id = arena_strdup(&cc, err && err->policy_id[0] ? err->policy_id : "");
    const char *why = arena_strdup(
        &cc, err && err->message[0] ? err->message : "the policies could not be compiled");
    rl_policy_set_t *set = (id && why) ? set_new(&cc) : NULL;
    if (set == NULL) {
        cc_free(&cc);
        return rl_error(RL_ERR_NOMEM, "out of memory");
    }
    set->failed = true;
    set->fail_id = id;
    set->fail_reason = why;
    cc_free(&cc);
    *out = set;
    return RL_OK;
}

rl_policy_set_t *rl_policy_set_retain(rl_policy_set_t *set)
{
    if (set != NULL)
        atomic_fetch_add_explicit(&set->refs, 1, memory_order_relaxed);
    return set;
}

void rl_policy_set_destroy(rl_policy_set_t *set)
{
    if (set == NULL || atomic_fetch_sub_explicit(&set->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (rl_re_node_t *r = set->res; r != NULL; r = r->next)
        pcre2_code_free(r->code);
    while (set->tzs != NULL) {
        rl_tz_t *next = set->tzs->next;
        rl_tz_free(set->tzs);
        set->tzs = next;
    }
    pcre2_match_context_free(set->mctx);
    arena_free(set->arena);
    free(set);
}

size_t rl_policy_set_count(const rl_policy_set_t *set)
{
    return set ? set->n : 0;
}

unsigned rl_policy_set_needs(const rl_policy_set_t *set)
{
    return set ? set->needs : 0;
}
