/* px_cache: the proxy's in-memory configuration (see px_cache.h and
 * docs/proxy-cache.md).
 *
 * One loader thread owns the loading connection. A load reads every table in
 * one REPEATABLE READ, READ ONLY transaction (one statement per table), ends
 * the transaction, then builds a complete snapshot from the results and swaps
 * it in under the cache mutex. Readers take a reference under the same mutex
 * (a pointer copy and an atomic increment); the last release frees a
 * snapshot, so a reader holding an old one keeps valid memory across any
 * number of swaps. */
#include "px_cache.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "rl_crypto.h"
#include "rl_dlp.h"
#include "rl_gate_secret.h"
#include "rl_json.h"
#include "rl_log.h"
#include "rl_pg.h"
#include "rl_policy.h"
#include "rl_cond.h"

#define CHANNEL "renlayer_config"
#define DEFAULT_REFRESH_MS 60000
#define DEFAULT_DEBOUNCE_MS 20
#define RETRY_MIN_MS 250  /* first pause after a failed load */
#define RETRY_MAX_MS 5000 /* pause cap (doubled per failure) */
#define LOAD_QUERY_TIMEOUT_MS 30000
#define LOAD_CONNECT_TIMEOUT_MS 3000
#define MAX_SKIP_LOG 16        /* skipped headers named in one log event */
#define MAX_SEALED_BYTES 65536 /* a sealed header value larger than this is skipped */

/* ---- string map: open addressing over borrowed keys, no allocation on lookup ---------- */

typedef struct {
    const char *key; /* borrowed from the snapshot; NULL: empty slot */
    size_t len;
    void *val;
} slot_t;

typedef struct {
    slot_t *slots;
    size_t mask; /* capacity - 1 */
} strmap_t;

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = UINT64_C(1469598103934665603);
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= UINT64_C(1099511628211);
    }
    return h;
}

/* Capacity: a power of two at least twice n (load factor <= 0.5), at least 8. */
static size_t table_cap(size_t n)
{
    size_t cap = 8;
    while (cap < 2 * n)
        cap <<= 1;
    return cap;
}

static rl_status_t strmap_init(strmap_t *m, size_t n)
{
    size_t cap = table_cap(n);
    m->slots = calloc(cap, sizeof *m->slots);
    if (m->slots == NULL)
        return rl_error(RL_ERR_NOMEM, "config cache: map of %zu", n);
    m->mask = cap - 1;
    return RL_OK;
}

static void strmap_free(strmap_t *m)
{
    free(m->slots);
    m->slots = NULL;
}

/* Inserts key (borrowed) unless present: false when it was (the first wins).
 * The map was sized for every insert, so a free slot always exists. */
static bool strmap_put(strmap_t *m, const char *key, void *val)
{
    size_t len = strlen(key);
    for (size_t i = fnv1a(key, len) & m->mask;; i = (i + 1) & m->mask) {
        slot_t *s = &m->slots[i];
        if (s->key == NULL) {
            *s = (slot_t){key, len, val};
            return true;
        }
        if (s->len == len && memcmp(s->key, key, len) == 0)
            return false;
    }
}

/* The value of the len bytes at key (not necessarily NUL-terminated), or NULL. */
static void *strmap_get(const strmap_t *m, const char *key, size_t len)
{
    if (m->slots == NULL)
        return NULL;
    for (size_t i = fnv1a(key, len) & m->mask;; i = (i + 1) & m->mask) {
        const slot_t *s = &m->slots[i];
        if (s->key == NULL)
            return NULL;
        if (s->len == len && memcmp(s->key, key, len) == 0)
            return s->val;
    }
}

/* ---- the snapshot ------------------------------------------------------------------ */

typedef struct {
    char model[PX_MODEL_MAX];
    px_price_t price;
} price_row_t;

/* pub comes first: agents point at it, and it converts back. */
typedef struct {
    px_tenant_t pub;
    strmap_t prices; /* model -> px_price_t *, the tenant's overrides */
    rl_policy_set_t *default_set; /* borrowed from the snapshot's sets; NULL: none */
    rl_dlp_engine_t *own_dlp;     /* owned: the tenant's own engine; NULL: the default */
} tenant_entry_t;

/* A compiled policy set (or the deny-all set of one that did not compile). */
typedef struct {
    char id[PX_ID_LEN];
    char tenant_id[PX_ID_LEN];
    bool is_default;
    rl_policy_set_t *set; /* owned */
} pset_entry_t;

struct px_snapshot {
    _Atomic long refs;
    uint64_t generation;
    tenant_entry_t *tenants;
    size_t ntenants;
    strmap_t tenant_map; /* id -> tenant_entry_t * */
    px_agent_t *agents;
    size_t nagents;
    strmap_t agent_map; /* id -> px_agent_t * */
    size_t ngates;
    strmap_t gate_map; /* id -> px_gate_t * */
    px_key_t *keys;
    size_t nkeys;
    uint32_t *key_slots; /* index + 1 into keys; 0: empty */
    size_t key_mask;
    price_row_t *list_prices;
    size_t nlist_prices;
    strmap_t list_map; /* model -> px_price_t * */
    price_row_t *tenant_prices;
    size_t ntenant_prices;
    size_t headers_skipped;
    pset_entry_t *psets;
    size_t npsets;
    strmap_t pset_map;        /* id -> pset_entry_t * */
    rl_dlp_engine_t *dlp_default; /* owned: every built-in with its defaults */
    uint64_t config_errors_hash;  /* of the policy/DLP errors of this build: logged on change */
};

static void gate_free(px_gate_t *g)
{
    if (g == NULL)
        return;
    free(g->upstream_url);
    free(g->pinned_model);
    free(g->fallbacks);
    json_decref(g->request_defaults);
    for (size_t i = 0; g->headers && i < g->nheaders; i++) {
        free(g->headers[i].name);
        if (g->headers[i].value) {
            explicit_bzero(g->headers[i].value, strlen(g->headers[i].value));
            free(g->headers[i].value);
        }
    }
    free(g->headers);
    free(g);
}

static void snapshot_free(px_snapshot_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; s->agents && i < s->nagents; i++) {
        px_agent_t *a = &s->agents[i];
        for (size_t j = 0; a->gates && j < a->ngates; j++)
            gate_free(a->gates[j]);
        free(a->gates);
    }
    free(s->agents);
    for (size_t i = 0; s->tenants && i < s->ntenants; i++) {
        strmap_free(&s->tenants[i].prices);
        rl_dlp_engine_release(s->tenants[i].own_dlp);
    }
    free(s->tenants);
    for (size_t i = 0; s->psets && i < s->npsets; i++)
        rl_policy_set_destroy(s->psets[i].set);
    free(s->psets);
    strmap_free(&s->pset_map);
    rl_dlp_engine_release(s->dlp_default);
    strmap_free(&s->tenant_map);
    strmap_free(&s->agent_map);
    strmap_free(&s->gate_map);
    free(s->keys);
    free(s->key_slots);
    free(s->list_prices);
    strmap_free(&s->list_map);
    free(s->tenant_prices);
    free(s);
}

/* ---- the cache ---------------------------------------------------------------------- */

struct px_cache {
    pthread_mutex_t mu;
    pthread_cond_t wake; /* the loader: a reload was asked for, or stop */
    pthread_cond_t done; /* px_cache_reload waiters: a load finished */
    px_snapshot_t *cur;  /* guarded by mu; the cache holds one reference */
    _Atomic uint64_t generation;
    _Atomic bool loaded;
    _Atomic bool last_ok;
    bool stop;
    int64_t due_ms;        /* a load is due at this monotonic time; 0: none scheduled */
    int64_t refresh_at_ms; /* the next periodic load */
    uint64_t reload_req;   /* px_cache_reload requests made */
    uint64_t reload_done;  /* requests covered by a finished load */
    rl_status_t reload_status;
    int retry_ms;
    px_cache_stats_t stats;
    long refresh_ms, debounce_ms;
    struct {
        rl_counter_t *loads, *load_failures, *notifications;
        rl_gauge_t *last_success_s, *load_seconds, *headers_skipped;
    } m;
    uint8_t secret_key[32];
    rl_pg_t *pg; /* the loader thread's only */
    rl_pg_listener_t *listener;
    pthread_t thread;
    bool thread_started;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Makes a load due within delay_ms (an earlier due time is kept, so a burst
 * of notifications is one load, and a steady stream cannot postpone it). */
static void schedule(px_cache_t *c, long delay_ms)
{
    pthread_mutex_lock(&c->mu);
    int64_t at = mono_ms() + delay_ms;
    if (c->due_ms == 0 || at < c->due_ms) {
        c->due_ms = at;
        pthread_cond_signal(&c->wake);
    }
    pthread_mutex_unlock(&c->mu);
}

/* Tables whose rows are in the snapshot. A notification for another table
 * (limits: read elsewhere) does not cause a load. */
static bool relevant(const char *payload)
{
    static const char *const tables[] = {"tenants",
                                         "agents",
                                         "policy_sets",
                                         "policies",
                                         "dlp_rules",
                                         "dlp_builtin_overrides",
                                         "api_keys",
                                         "gates",
                                         "gate_headers",
                                         "model_prices",
                                         "tenant_model_prices",
                                         NULL};
    json_t *j = json_loads(payload, 0, NULL);
    const char *t = json_string_value(json_object_get(j, "table"));
    bool yes = t == NULL; /* unreadable: reload to be safe */
    for (size_t i = 0; t && tables[i] && !yes; i++)
        yes = strcmp(t, tables[i]) == 0;
    json_decref(j);
    return yes;
}

static void on_notify(const char *channel, const char *payload, void *ctx)
{
    (void)channel;
    px_cache_t *c = ctx;
    pthread_mutex_lock(&c->mu);
    c->stats.notifications++;
    pthread_mutex_unlock(&c->mu);
    rl_counter_add(c->m.notifications, 1);
    if (relevant(payload))
        schedule(c, c->debounce_ms);
}

/* LISTEN is (again) in place: what changed while it was not was never
 * notified, so load everything. */
static void on_connected(void *ctx)
{
    schedule(ctx, ((px_cache_t *)ctx)->debounce_ms);
}

/* ---- building a snapshot from the load's results ------------------------------------ */

enum {
    R_TENANTS,
    R_AGENTS,
    R_GATES,
    R_HEADERS,
    R_KEYS,
    R_PRICES,
    R_TPRICES,
    R_PSETS,
    R_POLICIES,
    R_DLP_RULES,
    R_DLP_OVERRIDES,
    R_COUNT
};

static const char *const load_sql[R_COUNT] = {
    [R_TENANTS] = "SELECT id::text, fail_closed FROM renlayer.tenants",
    [R_AGENTS] = "SELECT id::text, tenant_id::text, name, "
                 "coalesce(default_policy_set_id::text, ''), coalesce(soft_limit_usd::float8, 0), "
                 "coalesce(hard_limit_usd::float8, 0), idle_timeout_s "
                 "FROM renlayer.agents WHERE deleted_at IS NULL",
    [R_GATES] =
        "SELECT g.id::text, g.agent_id::text, g.name, g.kind, g.upstream_url, g.is_default, "
        "g.pinned_model, g.strategy, array_to_string(g.fallback_gate_ids, ','), "
        "g.request_defaults::text, g.session_settings::text "
        "FROM renlayer.gates g JOIN renlayer.agents a "
        "ON a.tenant_id = g.tenant_id AND a.id = g.agent_id "
        "WHERE a.deleted_at IS NULL ORDER BY g.agent_id, g.name",
    [R_HEADERS] = "SELECT h.gate_id::text, h.name, encode(h.value_ciphertext, 'hex') "
                  "FROM renlayer.gate_headers h "
                  "JOIN renlayer.gates g ON g.tenant_id = h.tenant_id AND g.id = h.gate_id "
                  "JOIN renlayer.agents a ON a.tenant_id = g.tenant_id AND a.id = g.agent_id "
                  "WHERE a.deleted_at IS NULL ORDER BY h.gate_id, lower(h.name)",
    [R_KEYS] = "SELECT k.id::text, k.agent_id::text, encode(k.key_hash, 'hex'), "
               "coalesce(floor(extract(epoch FROM k.expires_at) * 1000)::int8, 0) "
               "FROM renlayer.api_keys k JOIN renlayer.agents a "
               "ON a.tenant_id = k.tenant_id AND a.id = k.agent_id "
               "WHERE k.revoked_at IS NULL AND a.deleted_at IS NULL "
               "AND octet_length(k.key_hash) = 32",
    [R_PRICES] = "SELECT model, input_per_mtok::float8, output_per_mtok::float8, "
                 "coalesce(cached_input_per_mtok::float8, -1), "
                 "coalesce(cache_write_per_mtok::float8, -1) FROM renlayer.model_prices",
    [R_TPRICES] = "SELECT tenant_id::text, model, input_per_mtok::float8, output_per_mtok::float8, "
                  "coalesce(cached_input_per_mtok::float8, -1), "
                  "coalesce(cache_write_per_mtok::float8, -1) FROM renlayer.tenant_model_prices",
    [R_PSETS] = "SELECT id::text, tenant_id::text, is_tenant_default FROM renlayer.policy_sets "
                "ORDER BY tenant_id, id",
    /* enabled and disabled: the engine validates both and skips disabled ones */
    [R_POLICIES] = "SELECT policy_set_id::text, json_build_object('id', id::text, 'name', name, "
                   "'priority', priority, 'enabled', enabled, 'scope', scope, "
                   "'conditions', conditions, 'action', action, 'message', message)::text "
                   "FROM renlayer.policies ORDER BY policy_set_id, priority, id",
    [R_DLP_RULES] = "SELECT tenant_id::text, id::text, name, pattern, severity, action, scope, "
                    "enabled FROM renlayer.dlp_rules ORDER BY tenant_id, id",
    [R_DLP_OVERRIDES] = "SELECT tenant_id::text, detector, disabled, coalesce(severity, ''), "
                        "coalesce(action, '') FROM renlayer.dlp_builtin_overrides "
                        "ORDER BY tenant_id, detector",
};

/* What a build tells the loader besides the snapshot. */
typedef struct {
    size_t nskipped;
    char skipped[MAX_SKIP_LOG][PX_ID_LEN + 140]; /* "<gate id>/<header name>" */
    size_t nerrors;                               /* policy sets / DLP rows that failed */
    char errors[MAX_SKIP_LOG][640];               /* what failed, naming the row (no values) */
    uint64_t errors_hash;                         /* of every error, to log changes only */
} build_notes_t;

static const char *val(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

static double num(const PGresult *r, int row, int col)
{
    const char *v = val(r, row, col);
    return v ? strtod(v, NULL) : 0;
}

/* Copies src into dst (cap bytes); a longer value is cut at a UTF-8
 * character boundary. */
static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static rl_status_t dup_str(const char *src, char **out)
{
    *out = NULL;
    if (src == NULL)
        return RL_OK;
    *out = strdup(src);
    return *out ? RL_OK : rl_error(RL_ERR_NOMEM, "config cache: string");
}

static rl_status_t build_tenants(px_snapshot_t *s, const PGresult *r)
{
    int n = PQntuples(r);
    s->tenants = calloc(n ? (size_t)n : 1, sizeof *s->tenants);
    if (s->tenants == NULL)
        return rl_error(RL_ERR_NOMEM, "config cache: %d tenants", n);
    rl_status_t st = strmap_init(&s->tenant_map, (size_t)n);
    for (int i = 0; i < n && st == RL_OK; i++) {
        tenant_entry_t *t = &s->tenants[s->ntenants];
        copy_str(t->pub.id, sizeof t->pub.id, PQgetvalue(r, i, 0));
        t->pub.fail_closed = PQgetvalue(r, i, 1)[0] == 't';
        s->ntenants++;
        strmap_put(&s->tenant_map, t->pub.id, t);
    }
    return st;
}

static rl_status_t build_agents(px_snapshot_t *s, const PGresult *r)
{
    int n = PQntuples(r);
    s->agents = calloc(n ? (size_t)n : 1, sizeof *s->agents);
    if (s->agents == NULL)
        return rl_error(RL_ERR_NOMEM, "config cache: %d agents", n);
    rl_status_t st = strmap_init(&s->agent_map, (size_t)n);
    for (int i = 0; i < n && st == RL_OK; i++) {
        const char *tid = PQgetvalue(r, i, 1);
        tenant_entry_t *t = strmap_get(&s->tenant_map, tid, strlen(tid));
        if (t == NULL)
            continue; /* cannot happen (foreign key): never point nowhere */
        px_agent_t *a = &s->agents[s->nagents];
        copy_str(a->id, sizeof a->id, PQgetvalue(r, i, 0));
        copy_str(a->name, sizeof a->name, PQgetvalue(r, i, 2));
        a->tenant = &t->pub;
        copy_str(a->default_policy_set_id, sizeof a->default_policy_set_id, PQgetvalue(r, i, 3));
        a->soft_limit_usd = num(r, i, 4);
        a->hard_limit_usd = num(r, i, 5);
        a->idle_timeout_s = strtol(PQgetvalue(r, i, 6), NULL, 10);
        s->nagents++;
        strmap_put(&s->agent_map, a->id, a);
    }
    return st;
}

static px_kind_t parse_kind(const char *s)
{
    if (strcmp(s, "anthropic") == 0)
        return PX_KIND_ANTHROPIC;
    if (strcmp(s, "mcp") == 0)
        return PX_KIND_MCP;
    if (strcmp(s, "http") == 0)
        return PX_KIND_HTTP;
    return PX_KIND_OPENAI;
}

static px_strategy_t parse_strategy(const char *s)
{
    if (strcmp(s, "fallback") == 0)
        return PX_STRATEGY_FALLBACK;
    if (strcmp(s, "round-robin") == 0)
        return PX_STRATEGY_ROUND_ROBIN;
    return PX_STRATEGY_SINGLE;
}

/* Session overrides; a value of the wrong type or range is ignored (the
 * agent's applies) rather than failing the whole load. */
static void parse_session(px_gate_t *g, const char *text)
{
    json_t *j = text ? json_loads(text, 0, NULL) : NULL;
    json_t *v = json_object_get(j, "soft_limit_usd");
    if (json_is_number(v) && json_number_value(v) > 0)
        g->soft_limit_usd = json_number_value(v);
    v = json_object_get(j, "hard_limit_usd");
    if (json_is_number(v) && json_number_value(v) > 0)
        g->hard_limit_usd = json_number_value(v);
    v = json_object_get(j, "idle_timeout_s");
    if (json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) <= 604800)
        g->idle_timeout_s = (long)json_integer_value(v);
    json_decref(j);
}

/* A base URL without trailing '/' (the scheme's "//" is kept). */
static rl_status_t dup_url(const char *src, char **out)
{
    rl_status_t st = dup_str(src, out);
    if (st != RL_OK || *out == NULL)
        return st;
    char *u = *out;
    const char *scheme = strstr(u, "://");
    size_t min = scheme ? (size_t)(scheme - u) + 4 : 1;
    size_t n = strlen(u);
    while (n > min && u[n - 1] == '/')
        u[--n] = '\0';
    return RL_OK;
}

static rl_status_t build_gate(const PGresult *r, int i, px_gate_t **out)
{
    px_gate_t *g = calloc(1, sizeof *g);
    if (g == NULL)
        return rl_error(RL_ERR_NOMEM, "config cache: gate");
    copy_str(g->id, sizeof g->id, PQgetvalue(r, i, 0));
    copy_str(g->name, sizeof g->name, PQgetvalue(r, i, 2));
    g->kind = parse_kind(PQgetvalue(r, i, 3));
    g->is_default = PQgetvalue(r, i, 5)[0] == 't';
    g->strategy = parse_strategy(PQgetvalue(r, i, 7));
    rl_status_t st = dup_url(val(r, i, 4), &g->upstream_url);
    if (st == RL_OK)
        st = dup_str(val(r, i, 6), &g->pinned_model);
    if (st == RL_OK) {
        const char *rd = PQgetvalue(r, i, 9);
        g->request_defaults = json_loads(rd, 0, NULL);
        if (!json_is_object(g->request_defaults)) {
            json_decref(g->request_defaults);
            g->request_defaults = json_object();
        }
        if (g->request_defaults == NULL)
            st = rl_error(RL_ERR_NOMEM, "config cache: request defaults");
    }
    parse_session(g, val(r, i, 10));
    if (st != RL_OK) {
        gate_free(g);
        return st;
    }
    *out = g;
    return RL_OK;
}

static const px_gate_t *agent_gate_by_id(const px_agent_t *a, const char *id, size_t len)
{
    for (size_t i = 0; i < a->ngates; i++)
        if (strlen(a->gates[i]->id) == len && memcmp(a->gates[i]->id, id, len) == 0)
            return a->gates[i];
    return NULL;
}

/* The fallback chain of gate g (row i): ids in order, resolved among the
 * agent's own gates; unknown ids and g itself are dropped. */
static rl_status_t resolve_fallbacks(px_gate_t *g, const px_agent_t *a, const char *ids)
{
    if (ids == NULL || *ids == '\0')
        return RL_OK;
    size_t max = 1;
    for (const char *p = ids; *p; p++)
        max += *p == ',';
    g->fallbacks = calloc(max, sizeof *g->fallbacks);
    if (g->fallbacks == NULL)
        return rl_error(RL_ERR_NOMEM, "config cache: fallbacks");
    for (const char *p = ids; *p;) {
        size_t len = strcspn(p, ",");
        const px_gate_t *f = agent_gate_by_id(a, p, len);
        if (f && f != g)
            g->fallbacks[g->nfallbacks++] = f;
        p += len + (p[len] == ',');
    }
    return RL_OK;
}

static rl_status_t build_gates(px_snapshot_t *s, const PGresult *r)
{
    int n = PQntuples(r);
    rl_status_t st = strmap_init(&s->gate_map, (size_t)n);
    size_t *cap = calloc(s->nagents ? s->nagents : 1, sizeof *cap);
    if (cap == NULL)
        st = rl_error(RL_ERR_NOMEM, "config cache: gates");
    for (int i = 0; i < n && st == RL_OK; i++) {
        const char *aid = PQgetvalue(r, i, 1);
        px_agent_t *a = strmap_get(&s->agent_map, aid, strlen(aid));
        if (a)
            cap[a - s->agents]++;
    }
    for (size_t i = 0; i < s->nagents && st == RL_OK; i++) {
        if (cap[i] == 0)
            continue;
        s->agents[i].gates = calloc(cap[i], sizeof *s->agents[i].gates);
        if (s->agents[i].gates == NULL)
            st = rl_error(RL_ERR_NOMEM, "config cache: gates");
    }
    free(cap);
    for (int i = 0; i < n && st == RL_OK; i++) {
        const char *aid = PQgetvalue(r, i, 1);
        px_agent_t *a = strmap_get(&s->agent_map, aid, strlen(aid));
        if (a == NULL)
            continue;
        px_gate_t *g = NULL;
        st = build_gate(r, i, &g);
        if (st != RL_OK)
            break;
        a->gates[a->ngates++] = g;
        s->ngates++;
        strmap_put(&s->gate_map, g->id, g);
        if (g->is_default && a->default_gate == NULL)
            a->default_gate = g;
    }
    /* second pass: every gate of the agent exists now */
    for (int i = 0; i < n && st == RL_OK; i++) {
        const char *aid = PQgetvalue(r, i, 1);
        const char *gid = PQgetvalue(r, i, 0);
        px_agent_t *a = strmap_get(&s->agent_map, aid, strlen(aid));
        px_gate_t *g = strmap_get(&s->gate_map, gid, strlen(gid));
        if (a && g)
            st = resolve_fallbacks(g, a, val(r, i, 8));
    }
    return st;
}

static void note_skip(build_notes_t *notes, const char *gate_id, const char *name)
{
    if (notes->nskipped < MAX_SKIP_LOG)
        snprintf(notes->skipped[notes->nskipped], sizeof notes->skipped[0], "%s/%.128s", gate_id,
                 name);
    notes->nskipped++;
}

/* Opens one sealed header value into g; a value that does not open (sealed
 * for another gate or header, under another key, altered) is skipped and
 * counted, never fatal: the gate then simply lacks that header. */
static rl_status_t add_header(px_snapshot_t *s, px_gate_t *g, const char *name, const char *hex,
                              const uint8_t key[32], build_notes_t *notes)
{
    size_t hexlen = strlen(hex);
    size_t cap = hexlen / 2;
    uint8_t *sealed = cap <= MAX_SEALED_BYTES ? malloc(cap ? cap : 1) : NULL;
    size_t n = 0;
    char *value = NULL;
    rl_status_t st = sealed ? rl_hex_decode(hex, hexlen, sealed, cap, &n) : RL_ERR_TOO_LARGE;
    if (st == RL_OK)
        st = rl_gate_secret_open(key, g->id, name, sealed, n, &value);
    free(sealed);
    if (st == RL_ERR_NOMEM)
        return st;
    if (st != RL_OK) {
        s->headers_skipped++;
        note_skip(notes, g->id, name);
        rl_error_clear();
        return RL_OK;
    }
    px_header_t *h = &g->headers[g->nheaders];
    h->name = strdup(name);
    if (h->name == NULL) {
        explicit_bzero(value, strlen(value));
        free(value);
        return rl_error(RL_ERR_NOMEM, "config cache: header");
    }
    h->value = value;
    g->nheaders++;
    return RL_OK;
}

static rl_status_t build_headers(px_snapshot_t *s, const PGresult *r, const uint8_t key[32],
                                 build_notes_t *notes)
{
    int n = PQntuples(r);
    rl_status_t st = RL_OK;
    /* count per gate in nheaders, allocate, then fill from 0 */
    for (int i = 0; i < n; i++) {
        const char *gid = PQgetvalue(r, i, 0);
        px_gate_t *g = strmap_get(&s->gate_map, gid, strlen(gid));
        if (g)
            g->nheaders++;
    }
    for (size_t i = 0; i < s->nagents; i++) {
        for (size_t j = 0; j < s->agents[i].ngates; j++) {
            px_gate_t *g = s->agents[i].gates[j];
            if (g->nheaders == 0)
                continue;
            g->headers = st == RL_OK ? calloc(g->nheaders, sizeof *g->headers) : NULL;
            if (g->headers == NULL && st == RL_OK)
                st = rl_error(RL_ERR_NOMEM, "config cache: headers");
            g->nheaders = 0;
        }
    }
    for (int i = 0; i < n && st == RL_OK; i++) {
        const char *gid = PQgetvalue(r, i, 0);
        px_gate_t *g = strmap_get(&s->gate_map, gid, strlen(gid));
        if (g)
            st = add_header(s, g, PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), key, notes);
    }
    return st;
}

static rl_status_t build_keys(px_snapshot_t *s, const PGresult *r)
{
    int n = PQntuples(r);
    size_t cap = table_cap((size_t)n);
    s->keys = calloc(n ? (size_t)n : 1, sizeof *s->keys);
    s->key_slots = calloc(cap, sizeof *s->key_slots);
    if (s->keys == NULL || s->key_slots == NULL)
        return rl_error(RL_ERR_NOMEM, "config cache: %d keys", n);
    s->key_mask = cap - 1;
    for (int i = 0; i < n; i++) {
        const char *aid = PQgetvalue(r, i, 1);
        const px_agent_t *a = strmap_get(&s->agent_map, aid, strlen(aid));
        px_key_t *k = &s->keys[s->nkeys];
        size_t hn = 0;
        const char *hex = PQgetvalue(r, i, 2);
        if (a == NULL || rl_hex_decode(hex, strlen(hex), k->hash, sizeof k->hash, &hn) != RL_OK ||
            hn != sizeof k->hash) {
            rl_error_clear();
            continue;
        }
        copy_str(k->id, sizeof k->id, PQgetvalue(r, i, 0));
        k->agent = a;
        k->expires_at_ms = strtoll(PQgetvalue(r, i, 3), NULL, 10);
        /* the hash is an HMAC output: its first 8 bytes are already uniform */
        uint64_t h;
        memcpy(&h, k->hash, sizeof h);
        size_t at = h & s->key_mask;
        bool dup = false;
        while (s->key_slots[at] != 0 && !dup) {
            dup = memcmp(s->keys[s->key_slots[at] - 1].hash, k->hash, sizeof k->hash) == 0;
            at = (at + 1) & s->key_mask;
        }
        if (dup)
            continue; /* cannot happen (unique index) */
        s->key_slots[at] = (uint32_t)(s->nkeys + 1);
        s->nkeys++;
    }
    return RL_OK;
}

static void fill_price(price_row_t *p, const PGresult *r, int i, int col)
{
    copy_str(p->model, sizeof p->model, PQgetvalue(r, i, col));
    p->price.input_per_mtok = num(r, i, col + 1);
    p->price.output_per_mtok = num(r, i, col + 2);
    p->price.cached_input_per_mtok = num(r, i, col + 3);
    p->price.cache_write_per_mtok = num(r, i, col + 4);
}

static rl_status_t build_prices(px_snapshot_t *s, const PGresult *list, const PGresult *own)
{
    int n = PQntuples(list);
    s->list_prices = calloc(n ? (size_t)n : 1, sizeof *s->list_prices);
    if (s->list_prices == NULL)
        return rl_error(RL_ERR_NOMEM, "config cache: prices");
    rl_status_t st = strmap_init(&s->list_map, (size_t)n);
    for (int i = 0; i < n && st == RL_OK; i++) {
        price_row_t *p = &s->list_prices[s->nlist_prices++];
        fill_price(p, list, i, 0);
        strmap_put(&s->list_map, p->model, &p->price);
    }
    if (st != RL_OK)
        return st;

    int m = PQntuples(own);
    s->tenant_prices = calloc(m ? (size_t)m : 1, sizeof *s->tenant_prices);
    size_t *per = calloc(s->ntenants ? s->ntenants : 1, sizeof *per);
    if (s->tenant_prices == NULL || per == NULL) {
        free(per);
        return rl_error(RL_ERR_NOMEM, "config cache: tenant prices");
    }
    for (int i = 0; i < m; i++) {
        const char *tid = PQgetvalue(own, i, 0);
        tenant_entry_t *t = strmap_get(&s->tenant_map, tid, strlen(tid));
        if (t)
            per[t - s->tenants]++;
    }
    for (size_t i = 0; i < s->ntenants && st == RL_OK; i++)
        if (per[i] > 0)
            st = strmap_init(&s->tenants[i].prices, per[i]);
    free(per);
    for (int i = 0; i < m && st == RL_OK; i++) {
        const char *tid = PQgetvalue(own, i, 0);
        tenant_entry_t *t = strmap_get(&s->tenant_map, tid, strlen(tid));
        if (t == NULL)
            continue;
        price_row_t *p = &s->tenant_prices[s->ntenant_prices++];
        fill_price(p, own, i, 1);
        strmap_put(&t->prices, p->model, &p->price);
    }
    return st;
}


/* ---- policies and DLP ------------------------------------------------------------------ */

static void note_error(build_notes_t *notes, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void note_error(build_notes_t *notes, const char *fmt, ...)
{
    char line[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    notes->errors_hash = (notes->errors_hash ^ fnv1a(line, strlen(line))) * UINT64_C(1099511628211);
    if (notes->nerrors < MAX_SKIP_LOG)
        snprintf(notes->errors[notes->nerrors], sizeof notes->errors[0], "%s", line);
    notes->nerrors++;
}

/* Compiles one set from its policies (rows [from, to) of r, JSON text in
 * column 1). A set that does not compile becomes the deny-all set naming the
 * failing policy, so the tenant's traffic fails closed. */
static rl_status_t compile_set(pset_entry_t *e, const PGresult *r, int from, int to,
                               build_notes_t *notes)
{
    json_t *arr = json_array();
    if (arr == NULL)
        return rl_error(RL_ERR_NOMEM, "config cache: policies");
    rl_policy_error_t err;
    memset(&err, 0, sizeof err);
    rl_status_t st = RL_OK;
    for (int i = from; i < to && st == RL_OK; i++) {
        json_t *p = json_loads(PQgetvalue(r, i, 1), 0, NULL);
        if (p == NULL) {
            st = RL_ERR_INVALID;
            snprintf(err.message, sizeof err.message, "policy row %d of set %s does not parse", i,
                     e->id);
            break;
        }
        json_array_append_new(arr, p);
    }
    if (st == RL_OK)
        st = rl_policy_compile(arr, &e->set, &err);
    json_decref(arr);
    if (st == RL_ERR_NOMEM)
        return st;
    if (st != RL_OK) {
        rl_error_clear();
        note_error(notes, "policy set %s does not compile (its requests are denied): %s", e->id,
                   err.message);
        if (rl_policy_set_create_failed(&err, &e->set) != RL_OK)
            return rl_error(RL_ERR_NOMEM, "config cache: failed policy set");
    }
    return RL_OK;
}

static rl_status_t build_policies(px_snapshot_t *s, const PGresult *sets, const PGresult *pol,
                                  build_notes_t *notes)
{
    int n = PQntuples(sets);
    s->psets = calloc(n ? (size_t)n : 1, sizeof *s->psets);
    if (s->psets == NULL)
        return rl_error(RL_ERR_NOMEM, "config cache: %d policy sets", n);
    rl_status_t st = strmap_init(&s->pset_map, (size_t)n);
    for (int i = 0; i < n && st == RL_OK; i++) {
        const char *tid = PQgetvalue(sets, i, 1);
        tenant_entry_t *t = strmap_get(&s->tenant_map, tid, strlen(tid));
        if (t == NULL)
            continue;
        pset_entry_t *e = &s->psets[s->npsets++];
        copy_str(e->id, sizeof e->id, PQgetvalue(sets, i, 0));
        copy_str(e->tenant_id, sizeof e->tenant_id, tid);
        e->is_default = PQgetvalue(sets, i, 2)[0] == 't';
        strmap_put(&s->pset_map, e->id, e);
    }
    /* policies come ordered by set: compile each run of rows */
    int m = PQntuples(pol);
    for (int i = 0; i < m && st == RL_OK;) {
        const char *sid = PQgetvalue(pol, i, 0);
        int j = i + 1;
        while (j < m && strcmp(PQgetvalue(pol, j, 0), sid) == 0)
            j++;
        pset_entry_t *e = strmap_get(&s->pset_map, sid, strlen(sid));
        if (e && e->set == NULL)
            st = compile_set(e, pol, i, j, notes);
        i = j;
    }
    /* sets without policies: an empty set allows everything */
    for (size_t i = 0; i < s->npsets && st == RL_OK; i++) {
        pset_entry_t *e = &s->psets[i];
        if (e->set == NULL)
            st = compile_set(e, pol, 0, 0, notes);
        tenant_entry_t *t = strmap_get(&s->tenant_map, e->tenant_id, strlen(e->tenant_id));
        if (st == RL_OK && e->is_default && t && t->default_set == NULL)
            t->default_set = e->set;
    }
    for (size_t i = 0; i < s->nagents && st == RL_OK; i++) {
        px_agent_t *a = &s->agents[i];
        const pset_entry_t *e =
            a->default_policy_set_id[0]
                ? strmap_get(&s->pset_map, a->default_policy_set_id, strlen(a->default_policy_set_id))
                : NULL;
        if (e && strcmp(e->tenant_id, a->tenant->id) == 0)
            a->policy_set = e->set;
        else
            a->policy_set = ((const tenant_entry_t *)a->tenant)->default_set;
    }
    return st;
}

static rl_dlp_severity_t severity_or_default(const char *v)
{
    rl_dlp_severity_t x = 0;
    if (v && *v && rl_dlp_severity_parse(v, &x) != RL_OK)
        x = 0;
    return x;
}

static rl_dlp_action_t action_or_default(const char *v)
{
    rl_dlp_action_t x = 0;
    if (v && *v && rl_dlp_action_parse(v, &x) != RL_OK)
        x = 0;
    return x;
}

/* One engine per tenant that has custom rules or overrides; the others
 * share the snapshot's default engine. A row the engine refuses (a rule
 * saved by an older version, an unknown detector) is skipped and noted. */
static rl_status_t build_dlp(px_snapshot_t *s, const PGresult *rules, const PGresult *ovr,
                             build_notes_t *notes)
{
    rl_status_t st = rl_dlp_engine_create(NULL, &s->dlp_default);
    if (st != RL_OK)
        return st;
    rl_dlp_config_t **cfg = calloc(s->ntenants ? s->ntenants : 1, sizeof *cfg);
    if (cfg == NULL)
        return rl_error(RL_ERR_NOMEM, "config cache: dlp");
    int n = PQntuples(ovr);
    for (int i = 0; i < n && st == RL_OK; i++) {
        const char *tid = PQgetvalue(ovr, i, 0);
        tenant_entry_t *t = strmap_get(&s->tenant_map, tid, strlen(tid));
        if (t == NULL)
            continue;
        size_t ti = (size_t)(t - s->tenants);
        if (cfg[ti] == NULL && (st = rl_dlp_config_create(&cfg[ti])) != RL_OK)
            break;
        rl_dlp_builtin_t d;
        if (rl_dlp_builtin_parse(PQgetvalue(ovr, i, 1), &d) != RL_OK ||
            rl_dlp_config_set_builtin(cfg[ti], d, PQgetvalue(ovr, i, 2)[0] != 't',
                                      severity_or_default(PQgetvalue(ovr, i, 3)),
                                      action_or_default(PQgetvalue(ovr, i, 4))) != RL_OK) {
            rl_error_clear();
            note_error(notes, "tenant %s: DLP override for unknown detector '%.64s' skipped", tid,
                       PQgetvalue(ovr, i, 1));
        }
    }
    n = PQntuples(rules);
    for (int i = 0; i < n && st == RL_OK; i++) {
        const char *tid = PQgetvalue(rules, i, 0);
        tenant_entry_t *t = strmap_get(&s->tenant_map, tid, strlen(tid));
        if (t == NULL)
            continue;
        size_t ti = (size_t)(t - s->tenants);
        if (cfg[ti] == NULL && (st = rl_dlp_config_create(&cfg[ti])) != RL_OK)
            break;
        rl_dlp_rule_t r = {.id = PQgetvalue(rules, i, 1),
                           .name = PQgetvalue(rules, i, 2),
                           .pattern = PQgetvalue(rules, i, 3),
                           .severity = severity_or_default(PQgetvalue(rules, i, 4)),
                           .action = action_or_default(PQgetvalue(rules, i, 5)),
                           .enabled = PQgetvalue(rules, i, 7)[0] == 't'};
        if (rl_dlp_scope_parse(PQgetvalue(rules, i, 6), &r.scope) != RL_OK)
            r.scope = RL_DLP_SCOPE_BOTH;
        rl_status_t rs = rl_dlp_config_add_rule(cfg[ti], &r);
        if (rs == RL_ERR_NOMEM) {
            st = rs;
        } else if (rs != RL_OK) {
            note_error(notes, "DLP rule %s skipped: %s", r.id, rl_error_last());
            rl_error_clear();
        }
    }
    for (size_t i = 0; i < s->ntenants; i++) {
        tenant_entry_t *t = &s->tenants[i];
        if (st == RL_OK && cfg[i]) {
            rl_status_t es = rl_dlp_engine_create(cfg[i], &t->own_dlp);
            if (es == RL_ERR_NOMEM) {
                st = es;
            } else if (es != RL_OK) {
                /* cannot happen (rules were checked when added): built-ins still protect */
                note_error(notes, "tenant %s: DLP engine does not compile, built-ins only: %s",
                           t->pub.id, rl_error_last());
                rl_error_clear();
            }
        }
        rl_dlp_config_destroy(cfg[i]);
        t->pub.dlp = t->own_dlp ? t->own_dlp : s->dlp_default;
    }
    free(cfg);
    return st;
}

static rl_status_t build(px_cache_t *c, PGresult *const *r, px_snapshot_t **out,
                         build_notes_t *notes)
{
    px_snapshot_t *s = calloc(1, sizeof *s);
    if (s == NULL)
        return rl_error(RL_ERR_NOMEM, "config cache: snapshot");
    atomic_init(&s->refs, 1);
    rl_status_t st = build_tenants(s, r[R_TENANTS]);
    if (st == RL_OK)
        st = build_agents(s, r[R_AGENTS]);
    if (st == RL_OK)
        st = build_gates(s, r[R_GATES]);
    if (st == RL_OK)
        st = build_headers(s, r[R_HEADERS], c->secret_key, notes);
    if (st == RL_OK)
        st = build_keys(s, r[R_KEYS]);
    if (st == RL_OK)
        st = build_prices(s, r[R_PRICES], r[R_TPRICES]);
    if (st == RL_OK)
        st = build_policies(s, r[R_PSETS], r[R_POLICIES], notes);
    if (st == RL_OK)
        st = build_dlp(s, r[R_DLP_RULES], r[R_DLP_OVERRIDES], notes);
    if (st == RL_OK)
        s->config_errors_hash = notes->errors_hash;
    if (st != RL_OK) {
        snapshot_free(s);
        return st;
    }
    *out = s;
    return RL_OK;
}

/* Reads every table in one consistent transaction, then builds. The
 * transaction ends before the build, so the database work is only the
 * statements themselves. */
static rl_status_t load(px_cache_t *c, px_snapshot_t **out, build_notes_t *notes)
{
    PGresult *r[R_COUNT] = {NULL};
    rl_status_t st = rl_pg_begin(c->pg);
    if (st == RL_OK)
        st = rl_pg_exec_simple(c->pg, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    for (int i = 0; i < R_COUNT && st == RL_OK; i++)
        st = rl_pg_query(c->pg, load_sql[i], 0, NULL, &r[i]);
    if (st == RL_OK) {
        st = rl_pg_commit(c->pg);
    } else {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", rl_error_last());
        if (rl_pg_rollback(c->pg) != RL_OK)
            rl_pg_reset(c->pg);
        rl_error(st, "config load: %s", msg);
    }
    if (st == RL_OK)
        st = build(c, r, out, notes);
    for (int i = 0; i < R_COUNT; i++)
        PQclear(r[i]);
    return st;
}

/* ---- the loader thread ------------------------------------------------------------------ */

/* Logs transitions only (first failure, recovery), so an outage is two lines. */
static void log_load(rl_status_t st, bool was_ok, bool first_failure, const px_snapshot_t *s,
                     const build_notes_t *notes, size_t prev_skipped, uint64_t prev_errors,
                     int64_t took_us)
{
    if (st != RL_OK) {
        if (was_ok || first_failure)
            rl_log(RL_LOG_WARN, "config cache load failed; serving the last snapshot", "{s:s,s:s}",
                   "status", rl_status_str(st), "error", rl_error_last());
        return;
    }
    rl_log(was_ok ? RL_LOG_DEBUG : RL_LOG_INFO, "config cache loaded", "{s:I,s:I,s:I,s:I,s:I}",
           "generation", (json_int_t)s->generation, "keys", (json_int_t)s->nkeys, "agents",
           (json_int_t)s->nagents, "gates", (json_int_t)s->ngates, "load_us", (json_int_t)took_us);
    if (notes->nskipped > 0 && notes->nskipped != prev_skipped) {
        for (size_t i = 0; i < notes->nskipped && i < MAX_SKIP_LOG; i++)
            rl_log(RL_LOG_WARN, "gate header value does not open with the secret key; skipped",
                   "{s:s}", "gate_header", notes->skipped[i]);
    }
    /* a broken policy set or DLP row is logged when it appears, not on every reload */
    if (notes->nerrors > 0 && notes->errors_hash != prev_errors) {
        for (size_t i = 0; i < notes->nerrors && i < MAX_SKIP_LOG; i++)
            rl_log(RL_LOG_WARN, "policy or DLP configuration refused", "{s:s}", "error",
                   notes->errors[i]);
    }
}

static void run_load(px_cache_t *c, uint64_t req)
{
    build_notes_t notes = {.nskipped = 0};
    px_snapshot_t *s = NULL;
    int64_t t0 = mono_us();
    rl_status_t st = load(c, &s, &notes);
    int64_t took = mono_us() - t0;

    pthread_mutex_lock(&c->mu);
    bool was_ok = atomic_load(&c->last_ok);
    bool first_failure = st != RL_OK && c->stats.load_failures == 0;
    size_t prev_skipped = c->cur ? c->cur->headers_skipped : (size_t)-1;
    uint64_t prev_errors = c->cur ? c->cur->config_errors_hash : 0;
    px_snapshot_t *old = NULL;
    int64_t now = mono_ms();
    if (st == RL_OK) {
        s->generation = atomic_load(&c->generation) + 1;
        old = c->cur;
        c->cur = s;
        atomic_store(&c->generation, s->generation);
        atomic_store(&c->loaded, true);
        atomic_store(&c->last_ok, true);
        c->stats.loads++;
        c->stats.last_load_us = took;
        c->stats.last_success_ms = wall_ms();
        c->stats.headers_skipped = s->headers_skipped;
        c->stats.last_error[0] = '\0';
        c->retry_ms = RETRY_MIN_MS;
        rl_counter_add(c->m.loads, 1);
        rl_gauge_set(c->m.last_success_s, (double)c->stats.last_success_ms / 1000);
        rl_gauge_set(c->m.load_seconds, (double)took / 1e6);
        rl_gauge_set(c->m.headers_skipped, (double)s->headers_skipped);
    } else {
        atomic_store(&c->last_ok, false);
        c->stats.load_failures++;
        rl_counter_add(c->m.load_failures, 1);
        snprintf(c->stats.last_error, sizeof c->stats.last_error, "%s", rl_error_last());
        /* retry with backoff, unless something asked for a load sooner */
        int64_t at = now + c->retry_ms;
        if (c->due_ms == 0 || at < c->due_ms)
            c->due_ms = at;
        c->retry_ms = c->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : c->retry_ms * 2;
    }
    c->refresh_at_ms = now + c->refresh_ms;
    if (req > c->reload_done) {
        c->reload_done = req;
        c->reload_status = st;
    }
    pthread_cond_broadcast(&c->done);
    pthread_mutex_unlock(&c->mu);

    log_load(st, was_ok, first_failure, s, &notes, prev_skipped, prev_errors, took);
    px_snapshot_release(old);
}

static void *loader_main(void *arg)
{
    px_cache_t *c = arg;
    pthread_setname_np(pthread_self(), "px-cache");
    pthread_mutex_lock(&c->mu);
    while (!c->stop) {
        int64_t now = mono_ms();
        int64_t next = c->refresh_at_ms;
        if (c->due_ms != 0 && c->due_ms < next)
            next = c->due_ms;
        if (c->reload_req > c->reload_done || now >= next) {
            uint64_t req = c->reload_req;
            c->due_ms = 0; /* anything arriving from now on needs a later load */
            pthread_mutex_unlock(&c->mu);
            run_load(c, req);
            pthread_mutex_lock(&c->mu);
            continue;
        }
        struct timespec ts = rl_cond_deadline(next - now);
        pthread_cond_timedwait(&c->wake, &c->mu, &ts);
    }
    pthread_cond_broadcast(&c->done);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* ---- public API -------------------------------------------------------------------------- */

/* Staleness is what an operator alerts on: time() minus the last success is
 * how old the rules every request is judged by may be (the database lost,
 * the snapshot kept: fail open). */
static void register_metrics(px_cache_t *c, rl_metrics_t *m)
{
    if (m == NULL)
        return;
    static const char *const loads = "renlayer_proxy_config_loads_total";
    static const char *const loads_help =
        "Loads of keys, agents, gates, prices, policies and DLP rules, by result";
    rl_metrics_counter(m, loads, loads_help, "result=\"ok\"", &c->m.loads);
    rl_metrics_counter(m, loads, loads_help, "result=\"error\"", &c->m.load_failures);
    rl_metrics_counter(m, "renlayer_proxy_config_notifications_total",
                       "Change notifications received from PostgreSQL (renlayer_config)", NULL,
                       &c->m.notifications);
    rl_metrics_gauge(m, "renlayer_proxy_config_last_success_timestamp_seconds",
                     "Unix time of the last successful load (0: none yet)", NULL,
                     &c->m.last_success_s);
    rl_metrics_gauge(m, "renlayer_proxy_config_load_seconds",
                     "Duration of the last successful load", NULL, &c->m.load_seconds);
    rl_metrics_gauge(m, "renlayer_proxy_config_gate_headers_skipped",
                     "Gate header values of the current snapshot that could not be opened "
                     "(sealed with another secret key)",
                     NULL, &c->m.headers_skipped);
}

rl_status_t px_cache_create(const px_cache_options_t *opts, px_cache_t **out)
{
    if (opts == NULL || out == NULL || opts->database_url == NULL || opts->secret_key == NULL ||
        opts->refresh_interval_ms < 0 || opts->debounce_ms < 0)
        return rl_error(RL_ERR_INVALID, "px_cache_create: bad options");
    px_cache_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return rl_error(RL_ERR_NOMEM, "config cache");
    memcpy(c->secret_key, opts->secret_key, sizeof c->secret_key);
    c->refresh_ms = opts->refresh_interval_ms > 0 ? opts->refresh_interval_ms : DEFAULT_REFRESH_MS;
    c->debounce_ms = opts->debounce_ms > 0 ? opts->debounce_ms : DEFAULT_DEBOUNCE_MS;
    c->retry_ms = RETRY_MIN_MS;
    c->reload_status = RL_OK;
    atomic_init(&c->generation, 0);
    atomic_init(&c->loaded, false);
    atomic_init(&c->last_ok, false);
    c->refresh_at_ms = mono_ms() + c->refresh_ms;
    c->due_ms = mono_ms(); /* the first load, at once */
    register_metrics(c, opts->metrics);

    pthread_mutex_init(&c->mu, NULL);
    rl_cond_init(&c->wake);
    rl_cond_init(&c->done);

    rl_pg_options_t po = {.application_name = "renlayer-proxy-cache",
                          .connect_timeout_ms = LOAD_CONNECT_TIMEOUT_MS,
                          .query_timeout_ms = LOAD_QUERY_TIMEOUT_MS};
    rl_status_t st = rl_pg_create(opts->database_url, &po, &c->pg);
    const char *channels[] = {CHANNEL};
    rl_pg_listener_callbacks_t cb = {.on_notify = on_notify, .on_connected = on_connected};
    if (st == RL_OK)
        st = rl_pg_listener_create(opts->database_url, channels, 1, &cb, c, &c->listener);
    if (st == RL_OK) {
        if (pthread_create(&c->thread, NULL, loader_main, c) != 0)
            st = rl_error(RL_ERR_IO, "config cache: cannot start the loader thread");
        else
            c->thread_started = true;
    }
    if (st != RL_OK) {
        px_cache_destroy(c);
        return st;
    }
    *out = c;
    return RL_OK;
}

void px_cache_destroy(px_cache_t *cache)
{
    if (cache == NULL)
        return;
    /* first the listener, so no callback runs on a cache being torn down */
    rl_pg_listener_destroy(cache->listener);
    pthread_mutex_lock(&cache->mu);
    cache->stop = true;
    pthread_cond_broadcast(&cache->wake);
    pthread_cond_broadcast(&cache->done);
    pthread_mutex_unlock(&cache->mu);
    if (cache->thread_started)
        pthread_join(cache->thread, NULL);
    px_snapshot_release(cache->cur);
    rl_pg_destroy(cache->pg);
    pthread_cond_destroy(&cache->wake);
    pthread_cond_destroy(&cache->done);
    pthread_mutex_destroy(&cache->mu);
    explicit_bzero(cache->secret_key, sizeof cache->secret_key);
    free(cache);
}

bool px_cache_loaded(px_cache_t *cache)
{
    return cache && atomic_load(&cache->loaded);
}

bool px_cache_db_up(px_cache_t *cache)
{
    return cache && atomic_load(&cache->last_ok) && rl_pg_listener_is_connected(cache->listener);
}

uint64_t px_cache_generation(px_cache_t *cache)
{
    return cache ? atomic_load(&cache->generation) : 0;
}

rl_status_t px_cache_reload(px_cache_t *cache)
{
    if (cache == NULL)
        return rl_error(RL_ERR_INVALID, "px_cache_reload: cache is NULL");
    pthread_mutex_lock(&cache->mu);
    uint64_t mine = ++cache->reload_req;
    pthread_cond_signal(&cache->wake);
    while (cache->reload_done < mine && !cache->stop)
        pthread_cond_wait(&cache->done, &cache->mu);
    rl_status_t st = cache->reload_done >= mine ? cache->reload_status : RL_ERR_UNAVAILABLE;
    char msg[sizeof cache->stats.last_error];
    snprintf(msg, sizeof msg, "%s",
             st == RL_OK ? "" : (cache->stop ? "config cache stopping" : cache->stats.last_error));
    pthread_mutex_unlock(&cache->mu);
    return st == RL_OK ? RL_OK : rl_error(st, "config cache load failed: %s", msg);
}

void px_cache_stats(px_cache_t *cache, px_cache_stats_t *out)
{
    if (cache == NULL || out == NULL)
        return;
    pthread_mutex_lock(&cache->mu);
    *out = cache->stats;
    pthread_mutex_unlock(&cache->mu);
}

px_snapshot_t *px_cache_acquire(px_cache_t *cache)
{
    if (cache == NULL)
        return NULL;
    pthread_mutex_lock(&cache->mu);
    px_snapshot_t *s = cache->cur;
    if (s)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&cache->mu);
    return s;
}

void px_snapshot_release(px_snapshot_t *snap)
{
    if (snap && atomic_fetch_sub_explicit(&snap->refs, 1, memory_order_acq_rel) == 1)
        snapshot_free(snap);
}

px_snapshot_t *px_snapshot_retain(px_snapshot_t *snap)
{
    if (snap)
        atomic_fetch_add_explicit(&snap->refs, 1, memory_order_relaxed);
    return snap;
}

uint64_t px_snapshot_generation(const px_snapshot_t *snap)
{
    return snap ? snap->generation : 0;
}

const px_key_t *px_snapshot_find_key(const px_snapshot_t *snap, const uint8_t hash[32])
{
    if (snap == NULL || hash == NULL || snap->key_slots == NULL)
        return NULL;
    uint64_t h;
    memcpy(&h, hash, sizeof h);
    /* the table is at most half full: an empty slot ends every probe */
    for (size_t i = h & snap->key_mask;; i = (i + 1) & snap->key_mask) {
        uint32_t at = snap->key_slots[i];
        if (at == 0)
            return NULL;
        const px_key_t *k = &snap->keys[at - 1];
        if (rl_ct_equal(k->hash, hash, sizeof k->hash))
            return k;
    }
}

const px_gate_t *px_snapshot_find_gate(const px_agent_t *agent, const char *name_or_id)
{
    if (agent == NULL || name_or_id == NULL)
        return NULL;
    for (size_t i = 0; i < agent->ngates; i++)
        if (strcmp(agent->gates[i]->name, name_or_id) == 0)
            return agent->gates[i];
    for (size_t i = 0; i < agent->ngates; i++)
        if (strcasecmp(agent->gates[i]->id, name_or_id) == 0)
            return agent->gates[i];
    return NULL;
}

/* The tenant's own price of the len bytes at model, else the list price. */
static const px_price_t *price_of(const px_snapshot_t *s, const tenant_entry_t *t,
                                  const char *model, size_t len)
{
    const px_price_t *p = t ? strmap_get(&t->prices, model, len) : NULL;
    return p ? p : strmap_get(&s->list_map, model, len);
}

/* The tenant's overrides lie over the list prices (the API's "effective
 * prices"), and the matching rule runs over that union: exact name, then the
 * longest "<priced>-" prefix, i.e. the candidates model[0..i) for every '-'
 * at i, rightmost first. */
const px_price_t *px_snapshot_price(const px_snapshot_t *snap, const char *tenant_id,
                                    const char *model)
{
    if (snap == NULL || model == NULL || *model == '\0')
        return NULL;
    const tenant_entry_t *t =
        tenant_id ? strmap_get(&snap->tenant_map, tenant_id, strlen(tenant_id)) : NULL;
    size_t n = strlen(model);
    const px_price_t *p = price_of(snap, t, model, n);
    for (size_t i = n; p == NULL && i-- > 0;)
        if (model[i] == '-')
            p = price_of(snap, t, model, i);
    return p;
}

void px_snapshot_counts(const px_snapshot_t *snap, size_t *keys, size_t *agents, size_t *gates)
{
    if (keys)
        *keys = snap ? snap->nkeys : 0;
    if (agents)
        *agents = snap ? snap->nagents : 0;
    if (gates)
        *gates = snap ? snap->ngates : 0;
}

double px_price_cost(const px_price_t *price, const px_usage_t *usage)
{
    if (price == NULL || usage == NULL)
        return 0;
    double cached = usage->cached_input_tokens > 0 ? (double)usage->cached_input_tokens : 0;
    double writes = usage->cache_write_tokens > 0 ? (double)usage->cache_write_tokens : 0;
    double input = usage->input_tokens > 0 ? (double)usage->input_tokens : 0;
    double output = usage->output_tokens > 0 ? (double)usage->output_tokens : 0;
    double plain = input - cached - writes;
    if (plain < 0)
        plain = 0;
    double in = price->input_per_mtok;
    double cached_p = price->cached_input_per_mtok < 0 ? in : price->cached_input_per_mtok;
    double write_p = price->cache_write_per_mtok < 0 ? in : price->cache_write_per_mtok;
    return (plain * in + cached * cached_p + writes * write_p + output * price->output_per_mtok) /
           1e6;
}
