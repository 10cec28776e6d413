/* Tests of services/proxy/px_cache.c against a private PostgreSQL 15 that the
 * test starts itself (tests/harness/pg.sh), with the schema applied from
 * migrations/ and configuration rows inserted directly. */
#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <stdarg.h>
#include <setjmp.h>
#include <cmocka.h>

#include "px_cache.h"
#include "rl_apikey.h"
#include "rl_crypto.h"
#include "rl_gate_secret.h"
#include "rl_log.h"
#include "rl_pg.h"
#include "rl_test_servers.h"

/* Every wait on the server or the cache is bounded by this. */
#define WAIT_MS 15000
/* A change must reach the cache within this (debounce 20 ms + a load). */
#define VISIBLE_MS 2000

#define T1 "01900000-0000-7000-8000-0000000000a1"
#define T2 "01900000-0000-7000-8000-0000000000a2"
#define A1 "01900000-0000-7000-8000-0000000000b1"
#define A2 "01900000-0000-7000-8000-0000000000b2" /* deleted */
#define A3 "01900000-0000-7000-8000-0000000000b3"
#define G1 "01900000-0000-7000-8000-0000000000c1"
#define G2 "01900000-0000-7000-8000-0000000000c2"
#define G3 "01900000-0000-7000-8000-0000000000c3"
#define G4 "01900000-0000-7000-8000-0000000000c4"
#define GMISSING "01900000-0000-7000-8000-0000000000cf"

static struct {
    rl_test_pg_t *pg; /* the server, running but in test_database_down_and_back */
    const char *url;
    uint8_t secret[32];
    uint8_t hash_key[32];
    rl_pg_t *admin;
    px_cache_t *cache; /* the shared cache, created by test_first_load */
} g;

/* ---- helpers ------------------------------------------------------------------ */

/* Runs sql with text parameters on the admin connection; fails the test on error. */
static void sql(const char *q, int n, const char *const *v)
{
    PGresult *r = NULL;
    rl_status_t st = rl_pg_query(g.admin, q, n, v, &r);
    if (st != RL_OK)
        fail_msg("%s: %s", q, rl_error_last());
    PQclear(r);
}

/* The first column of the first row as text ("" for NULL or no row). */
static void scalar(const char *q, int n, const char *const *v, char *buf, size_t len)
{
    PGresult *r = NULL;
    rl_status_t st = rl_pg_query(g.admin, q, n, v, &r);
    if (st != RL_OK)
        fail_msg("%s: %s", q, rl_error_last());
    snprintf(buf, len, "%s", PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
}

static void key_hash(const char *secret, uint8_t out[32])
{
    assert_int_equal(rl_apikey_hash(g.hash_key, secret, out), RL_OK);
}

/* Inserts an api key of agent whose hash is that of secret; expires_at is a
 * timestamp or NULL, revoked sets revoked_at. */
static void insert_key(const char *id, const char *tenant, const char *agent, const char *secret,
                       const char *expires_at, bool revoked)
{
    uint8_t h[32];
    key_hash(secret, h);
    char hex[2 + 65] = "\\x";
    rl_hex_encode(h, sizeof h, hex + 2, sizeof hex - 2);
    const char *v[] = {id, tenant, agent, hex, expires_at, revoked ? "t" : "f"};
    sql("INSERT INTO renlayer.api_keys (id, tenant_id, agent_id, key_hash, prefix, expires_at, "
        "revoked_at) VALUES ($1, $2, $3, $4::bytea, 'rl_live_test', $5::timestamptz, "
        "CASE WHEN $6::boolean THEN now() END)",
        6, v);
}

/* Inserts a header of gate_id (tenant) whose value is sealed for sealed_for/name. */
static void insert_header(const char *id, const char *tenant, const char *gate_id, const char *name,
                          const char *sealed_for, const char *value)
{
    uint8_t *sealed = NULL;
    size_t n = 0;
    assert_int_equal(rl_gate_secret_seal(g.secret, sealed_for, name, value, &sealed, &n), RL_OK);
    char *hex = malloc(2 * n + 3);
    assert_non_null(hex);
    hex[0] = '\\', hex[1] = 'x';
    rl_hex_encode(sealed, n, hex + 2, 2 * n + 1);
    free(sealed);
    const char *v[] = {id, tenant, gate_id, name, hex};
    sql("INSERT INTO renlayer.gate_headers (id, tenant_id, gate_id, name, value_ciphertext) "
        "VALUES ($1, $2, $3, $4, $5::bytea)",
        5, v);
    free(hex);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Applies the .sql files of migrations/ in name order, each in one transaction. */
static int apply_migrations(void)
{
    char dir[PATH_MAX];
    if (!rl_test_source_path("migrations", dir, sizeof dir))
        return -1;
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    char *names[128];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 128) {
        size_t len = strlen(e->d_name);
        if (len > 4 && strcmp(e->d_name + len - 4, ".sql") == 0)
            names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof names[0], cmp_str);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX + 256];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "rb");
        char *text = NULL;
        size_t len = 0;
        if (f) {
            fseek(f, 0, SEEK_END);
            len = (size_t)ftell(f);
            fseek(f, 0, SEEK_SET);
            text = malloc(len + 1);
            if (text && fread(text, 1, len, f) == len)
                text[len] = '\0';
            fclose(f);
        }
        rl_status_t st = text ? rl_pg_begin(g.admin) : RL_ERR_IO;
        if (st == RL_OK)
            st = rl_pg_exec_simple(g.admin, text);
        if (st == RL_OK)
            st = rl_pg_commit(g.admin);
        if (st != RL_OK) {
            fprintf(stderr, "test_px_cache: %s: %s\n", names[i], rl_error_last());
            rl_pg_rollback(g.admin);
            rc = -1;
        }
        free(text);
        free(names[i]);
    }
    return n > 0 ? rc : -1;
}

/* The configuration every test reads. */
static void insert_fixture(void)
{
    sql("INSERT INTO renlayer.tenants (id, name, fail_closed) VALUES "
        "('" T1 "', 'one', false), ('" T2 "', 'two', true)",
        0, NULL);
    sql("INSERT INTO renlayer.agents (id, tenant_id, name, soft_limit_usd, idle_timeout_s) VALUES "
        "('" A1 "', '" T1 "', 'agent-one', 1.5, 600)",
        0, NULL);
    sql("INSERT INTO renlayer.agents (id, tenant_id, name, deleted_at) VALUES "
        "('" A2 "', '" T1 "', 'agent-gone', now())",
        0, NULL);
    sql("INSERT INTO renlayer.agents (id, tenant_id, name, soft_limit_usd, hard_limit_usd) VALUES "
        "('" A3 "', '" T2 "', 'agent-three', 1, 5)",
        0, NULL);
    insert_key("01900000-0000-7000-8000-0000000000d1", T1, A1, "rl_live_key1", NULL, false);
    insert_key("01900000-0000-7000-8000-0000000000d2", T1, A1, "rl_live_key2", NULL, true);
    insert_key("01900000-0000-7000-8000-0000000000d3", T1, A2, "rl_live_key3", NULL, false);
    insert_key("01900000-0000-7000-8000-0000000000d4", T1, A1, "rl_live_key4",
               "2030-01-01T00:00:00Z", false);
    insert_key("01900000-0000-7000-8000-0000000000d5", T2, A3, "rl_live_key5", NULL, false);

    sql("INSERT INTO renlayer.gates (id, tenant_id, agent_id, name, kind, upstream_url, "
        "is_default, strategy, fallback_gate_ids, request_defaults, session_settings) VALUES "
        "('" G1 "', '" T1 "', '" A1 "', 'main', 'openai', 'https://api.example.com/v1/', true, "
        "'fallback', ARRAY['" G2 "', '" G3 "', '" GMISSING "']::uuid[], "
        "'{\"temperature\": 0.2}', '{\"soft_limit_usd\": 2.5, \"idle_timeout_s\": 120, "
        "\"hard_limit_usd\": \"x\"}')",
        0, NULL);
    sql("INSERT INTO renlayer.gates (id, tenant_id, agent_id, name, kind, upstream_url, "
        "pinned_model) VALUES ('" G2 "', '" T1 "', '" A1 "', 'backup', 'anthropic', "
        "'https://b.example.com', 'claude-sonnet-4-5')",
        0, NULL);
    sql("INSERT INTO renlayer.gates (id, tenant_id, agent_id, name, kind, strategy) VALUES "
        "('" G3 "', '" T1 "', '" A1 "', 'tools', 'mcp', 'round-robin')",
        0, NULL);
    /* a fallback naming another agent's gate is dropped */
    sql("INSERT INTO renlayer.gates (id, tenant_id, agent_id, name, kind, fallback_gate_ids) "
        "VALUES ('" G4 "', '" T2 "', '" A3 "', 'other', 'http', ARRAY['" G2 "']::uuid[])",
        0, NULL);

    insert_header("01900000-0000-7000-8000-0000000000e1", T1, G1, "Authorization", G1,
                  "Bearer sk-test-1");
    insert_header("01900000-0000-7000-8000-0000000000e2", T1, G1, "X-Case", G1, "case-ok");
    /* sealed for another gate: does not open, skipped */
    insert_header("01900000-0000-7000-8000-0000000000e3", T1, G1, "X-Org", G2, "stolen");
    insert_header("01900000-0000-7000-8000-0000000000e4", T1, G2, "x-api-key", G2, "sk-ant-2");

    sql("INSERT INTO renlayer.tenant_model_prices (tenant_id, model, provider, input_per_mtok, "
        "output_per_mtok) VALUES ('" T1 "', 'gpt-4o', 'openai', 1, 2), "
        "('" T1 "', 'custom-model', 'custom', 7, 8)",
        0, NULL);
}

static int group_setup(void **state)
{
    (void)state;
    rl_log_init("test_px_cache", RL_LOG_ERROR);
    if (rl_test_pg_create("px_cache_test", &g.pg) != RL_OK || rl_test_pg_start(g.pg) != RL_OK) {
        fprintf(stderr, "test_px_cache: %s\n", rl_error_last());
        return -1;
    }
    g.url = rl_test_pg_url(g.pg);

    rl_pg_options_t o = {.application_name = "px_cache_test_admin"};
    if (rl_pg_create(g.url, &o, &g.admin) != RL_OK || rl_pg_connect(g.admin, WAIT_MS) != RL_OK)
        return -1;
    if (apply_migrations() != 0)
        return -1;
    for (int i = 0; i < 32; i++)
        g.secret[i] = (uint8_t)(0x40 + i);
    rl_apikey_derive_hash_key(g.secret, g.hash_key);
    insert_fixture();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    px_cache_destroy(g.cache);
    rl_pg_destroy(g.admin);
    rl_test_pg_destroy(g.pg);
    return 0;
}

static px_cache_t *new_cache(long refresh_ms)
{
    px_cache_options_t o = {.database_url = g.url,
                            .secret_key = g.secret,
                            .hash_key = g.hash_key,
                            .refresh_interval_ms = refresh_ms,
                            .debounce_ms = 20};
    px_cache_t *c = NULL;
    assert_int_equal(px_cache_create(&o, &c), RL_OK);
    assert_non_null(c);
    return c;
}

static bool is_loaded(void *c)
{
    return px_cache_loaded(c);
}

static bool is_up(void *c)
{
    return px_cache_db_up(c);
}

static bool is_down(void *c)
{
    return !px_cache_db_up(c);
}

/* Looks secret up in a fresh snapshot of the shared cache. */
static bool has_key(const char *secret)
{
    uint8_t h[32];
    key_hash(secret, h);
    px_snapshot_t *s = px_cache_acquire(g.cache);
    bool found = px_snapshot_find_key(s, h) != NULL;
    px_snapshot_release(s);
    return found;
}

static bool key_present(void *secret)
{
    return has_key(secret);
}

static bool key_absent(void *secret)
{
    return !has_key(secret);
}

static const px_key_t *find(px_snapshot_t *s, const char *secret)
{
    uint8_t h[32];
    key_hash(secret, h);
    return px_snapshot_find_key(s, h);
}

/* ---- tests -------------------------------------------------------------------------- */

static void test_create_rejects_bad_input(void **state)
{
    (void)state;
    px_cache_t *c = (px_cache_t *)&g; /* must stay untouched */
    px_cache_options_t o = {.database_url = NULL, .secret_key = g.secret};
    assert_int_equal(px_cache_create(&o, &c), RL_ERR_INVALID);
    o = (px_cache_options_t){.database_url = g.url, .secret_key = NULL};
    assert_int_equal(px_cache_create(&o, &c), RL_ERR_INVALID);
    o = (px_cache_options_t){.database_url = "not a conninfo", .secret_key = g.secret};
    assert_int_equal(px_cache_create(&o, &c), RL_ERR_INVALID);
    assert_int_equal(px_cache_create(NULL, &c), RL_ERR_INVALID);
    assert_ptr_equal(c, (px_cache_t *)&g);
    px_cache_destroy(NULL);
    px_snapshot_release(NULL);
    assert_null(px_cache_acquire(NULL));
    assert_null(px_snapshot_find_key(NULL, g.secret));
    assert_null(px_snapshot_price(NULL, T1, "gpt-4o"));
}

static void test_first_load(void **state)
{
    (void)state;
    g.cache = new_cache(3600000); /* no periodic load during the tests */
    assert_true(rl_test_wait_until(is_loaded, g.cache, WAIT_MS));
    assert_true(rl_test_wait_until(is_up, g.cache, WAIT_MS));
    assert_true(px_cache_generation(g.cache) >= 1);

    px_snapshot_t *s = px_cache_acquire(g.cache);
    assert_non_null(s);
    assert_true(px_snapshot_generation(s) >= 1);
    size_t keys, agents, gates;
    px_snapshot_counts(s, &keys, &agents, &gates);
    assert_int_equal(keys, 3);   /* key1, key4, key5: key2 revoked, key3's agent deleted */
    assert_int_equal(agents, 2); /* agent-gone is deleted */
    assert_int_equal(gates, 4);
    px_snapshot_release(s);

    px_cache_stats_t st;
    px_cache_stats(g.cache, &st);
    assert_true(st.loads >= 1);
    assert_int_equal(st.headers_skipped, 1);
    assert_string_equal(st.last_error, "");
    assert_true(st.last_success_ms > 0);
}

static void test_key_lookup(void **state)
{
    (void)state;
    px_snapshot_t *s = px_cache_acquire(g.cache);
    const px_key_t *k = find(s, "rl_live_key1");
    assert_non_null(k);
    assert_string_equal(k->id, "01900000-0000-7000-8000-0000000000d1");
    assert_int_equal(k->expires_at_ms, 0);
    assert_string_equal(k->agent->id, A1);
    assert_string_equal(k->agent->name, "agent-one");
    assert_string_equal(k->agent->tenant->id, T1);
    assert_false(k->agent->tenant->fail_closed);
    assert_true(fabs(k->agent->soft_limit_usd - 1.5) < 1e-9);
    assert_true(k->agent->hard_limit_usd == 0);
    assert_int_equal(k->agent->idle_timeout_s, 600);
    assert_string_equal(k->agent->default_policy_set_id, "");

    assert_null(find(s, "rl_live_key2")); /* revoked */
    assert_null(find(s, "rl_live_key3")); /* agent deleted */
    assert_null(find(s, "rl_live_unknown"));

    k = find(s, "rl_live_key4");
    assert_non_null(k);
    assert_int_equal(k->expires_at_ms, INT64_C(1893456000000));

    k = find(s, "rl_live_key5");
    assert_non_null(k);
    assert_string_equal(k->agent->tenant->id, T2);
    assert_true(k->agent->tenant->fail_closed);
    assert_true(fabs(k->agent->hard_limit_usd - 5) < 1e-9);
    px_snapshot_release(s);
}

static const char *header(const px_gate_t *gate, const char *name)
{
    for (size_t i = 0; i < gate->nheaders; i++)
        if (strcasecmp(gate->headers[i].name, name) == 0)
            return gate->headers[i].value;
    return NULL;
}

static void test_gates(void **state)
{
    (void)state;
    px_snapshot_t *s = px_cache_acquire(g.cache);
    const px_agent_t *a = find(s, "rl_live_key1")->agent;
    assert_int_equal(a->ngates, 3);

    const px_gate_t *main = a->default_gate;
    assert_non_null(main);
    assert_string_equal(main->id, G1);
    assert_true(main->is_default);
    assert_ptr_equal(px_snapshot_find_gate(a, "main"), main);
    assert_ptr_equal(px_snapshot_find_gate(a, G1), main);
    assert_null(px_snapshot_find_gate(a, "Main")); /* names are case-sensitive */
    assert_null(px_snapshot_find_gate(a, "nope"));
    assert_null(px_snapshot_find_gate(a, G4)); /* another agent's */

    assert_int_equal(main->kind, PX_KIND_OPENAI);
    assert_int_equal(main->strategy, PX_STRATEGY_FALLBACK);
    assert_string_equal(main->upstream_url, "https://api.example.com/v1");
    assert_null(main->pinned_model);
    assert_true(
        fabs(json_real_value(json_object_get(main->request_defaults, "temperature")) - 0.2) < 1e-9);
    assert_true(fabs(main->soft_limit_usd - 2.5) < 1e-9);
    assert_true(main->hard_limit_usd == 0); /* "x" is not a number: the agent's */
    assert_int_equal(main->idle_timeout_s, 120);

    /* decrypted headers; the one sealed for another gate is skipped */
    assert_int_equal(main->nheaders, 2);
    assert_string_equal(header(main, "Authorization"), "Bearer sk-test-1");
    assert_string_equal(header(main, "X-Case"), "case-ok");
    assert_null(header(main, "X-Org"));

    /* fallbacks: in order, the missing id dropped */
    const px_gate_t *backup = px_snapshot_find_gate(a, "backup");
    const px_gate_t *tools = px_snapshot_find_gate(a, "tools");
    assert_non_null(backup);
    assert_non_null(tools);
    assert_int_equal(main->nfallbacks, 2);
    assert_ptr_equal(main->fallbacks[0], backup);
    assert_ptr_equal(main->fallbacks[1], tools);

    assert_int_equal(backup->kind, PX_KIND_ANTHROPIC);
    assert_false(backup->is_default);
    assert_string_equal(backup->upstream_url, "https://b.example.com");
    assert_string_equal(backup->pinned_model, "claude-sonnet-4-5");
    assert_string_equal(header(backup, "x-api-key"), "sk-ant-2");
    assert_int_equal(backup->nfallbacks, 0);
    assert_int_equal(json_object_size(backup->request_defaults), 0);

    assert_int_equal(tools->kind, PX_KIND_MCP);
    assert_int_equal(tools->strategy, PX_STRATEGY_ROUND_ROBIN);
    assert_null(tools->upstream_url);
    assert_int_equal(tools->nheaders, 0);

    const px_agent_t *a3 = find(s, "rl_live_key5")->agent;
    assert_null(a3->default_gate); /* no default gate */
    const px_gate_t *other = px_snapshot_find_gate(a3, "other");
    assert_non_null(other);
    assert_int_equal(other->kind, PX_KIND_HTTP);
    assert_int_equal(other->nfallbacks, 0); /* G2 belongs to another agent */
    px_snapshot_release(s);
}

static void test_prices(void **state)
{
    (void)state;
    px_snapshot_t *s = px_cache_acquire(g.cache);
    const px_price_t *p;

    p = px_snapshot_price(s, T2, "gpt-4o"); /* list, exact */
    assert_non_null(p);
    assert_true(fabs(p->input_per_mtok - 2.5) < 1e-9);
    assert_true(fabs(p->cached_input_per_mtok - 1.25) < 1e-9);
    assert_true(p->cache_write_per_mtok < 0); /* NULL in the table */
    assert_ptr_equal(px_snapshot_price(s, NULL, "gpt-4o"), p);

    p = px_snapshot_price(s, T1, "gpt-4o"); /* tenant override */
    assert_true(fabs(p->input_per_mtok - 1) < 1e-9);
    assert_true(fabs(p->output_per_mtok - 2) < 1e-9);
    assert_true(p->cached_input_per_mtok < 0);
    p = px_snapshot_price(s, T1, "gpt-4o-2024-08-06"); /* prefix of the override */
    assert_true(fabs(p->input_per_mtok - 1) < 1e-9);
    /* the longest prefix over overrides and list together */
    p = px_snapshot_price(s, T1, "gpt-4o-mini-2024-07-18");
    assert_true(fabs(p->input_per_mtok - 0.15) < 1e-9);
    p = px_snapshot_price(s, T1, "claude-sonnet-4-5-20250929");
    assert_true(fabs(p->input_per_mtok - 3) < 1e-9);
    assert_true(fabs(p->cache_write_per_mtok - 3.75) < 1e-9);

    assert_non_null(px_snapshot_price(s, T1, "custom-model"));
    assert_null(px_snapshot_price(s, T2, "custom-model")); /* another tenant's override */
    assert_null(px_snapshot_price(s, T1, "llama-3"));
    assert_null(px_snapshot_price(s, T1, "gpt"));
    assert_null(px_snapshot_price(s, T1, "gpt4o"));
    assert_null(px_snapshot_price(s, T1, ""));
    assert_null(px_snapshot_price(s, T1, NULL));

    /* the list rule agrees with renlayer.model_price_for() */
    static const char *const names[] = {"gpt-4o",
                                        "gpt-4o-mini",
                                        "gpt-4o-mini-2024-07-18",
                                        "gpt-4o-2024-08-06",
                                        "gpt-4o-",
                                        "gpt-4.1-nano-x",
                                        "o3-mini-high",
                                        "o3-pro",
                                        "claude-opus-4-1-20250805",
                                        "claude-opus-4-20250514",
                                        "claude-3-5-haiku-latest",
                                        "text-embedding-3-small",
                                        "gpt-5-codex",
                                        "llama-3",
                                        "o1",
                                        "o1-",
                                        "-",
                                        "o",
                                        NULL};
    for (size_t i = 0; names[i]; i++) {
        char want[64];
        const char *v[] = {names[i]};
        scalar("SELECT input_per_mtok::float8 FROM renlayer.model_price_for($1)", 1, v, want,
               sizeof want);
        p = px_snapshot_price(s, NULL, names[i]);
        if (want[0] == '\0') {
            if (p != NULL)
                fail_msg("%s: priced by the cache, not by SQL", names[i]);
        } else {
            if (p == NULL || fabs(p->input_per_mtok - strtod(want, NULL)) > 1e-9)
                fail_msg("%s: SQL says %s", names[i], want);
        }
    }
    px_snapshot_release(s);
}

static void test_cost(void **state)
{
    (void)state;
    px_price_t p = {.input_per_mtok = 3,
                    .output_per_mtok = 15,
                    .cached_input_per_mtok = 0.3,
                    .cache_write_per_mtok = 3.75};
    px_usage_t u = {.input_tokens = 10000,
                    .cached_input_tokens = 2000,
                    .cache_write_tokens = 1000,
                    .output_tokens = 500,
                    .reasoning_tokens = 200,
                    .present = true};
    /* 7000*3 + 2000*0.3 + 1000*3.75 + 500*15 (reasoning is inside output) */
    assert_true(fabs(px_price_cost(&p, &u) - 0.03285) < 1e-12);
    p.cached_input_per_mtok = -1;
    p.cache_write_per_mtok = -1; /* both priced as input */
    assert_true(fabs(px_price_cost(&p, &u) - (10000 * 3 + 500 * 15) / 1e6) < 1e-12);
    px_usage_t zero = {.present = false};
    assert_true(px_price_cost(&p, &zero) == 0);
    assert_true(px_price_cost(NULL, &u) == 0);
    /* cache counts larger than input do not make the cost negative */
    px_usage_t odd = {.input_tokens = 10, .cached_input_tokens = 100};
    p.cached_input_per_mtok = 0.3;
    assert_true(fabs(px_price_cost(&p, &odd) - 100 * 0.3 / 1e6) < 1e-12);
}

/* A new key appears, then its revocation is visible within VISIBLE_MS. */
static void test_key_appears_and_revocation_is_prompt(void **state)
{
    (void)state;
    int64_t t0 = rl_test_now_ms();
    insert_key("01900000-0000-7000-8000-0000000000d6", T1, A1, "rl_live_key6", NULL, false);
    assert_true(rl_test_wait_until(key_present, "rl_live_key6", VISIBLE_MS));
    int64_t appear = rl_test_now_ms() - t0;

    t0 = rl_test_now_ms();
    sql("UPDATE renlayer.api_keys SET revoked_at = now() "
        "WHERE id = '01900000-0000-7000-8000-0000000000d6'",
        0, NULL);
    assert_true(rl_test_wait_until(key_absent, "rl_live_key6", VISIBLE_MS));
    int64_t revoke = rl_test_now_ms() - t0;
    print_message("new key visible after %lld ms, revocation after %lld ms\n", (long long)appear,
                  (long long)revoke);

    /* deleting an agent retires its keys */
    insert_key("01900000-0000-7000-8000-0000000000d7", T2, A3, "rl_live_key7", NULL, false);
    assert_true(rl_test_wait_until(key_present, "rl_live_key7", VISIBLE_MS));
    sql("UPDATE renlayer.agents SET deleted_at = now() WHERE id = '" A3 "'", 0, NULL);
    assert_true(rl_test_wait_until(key_absent, "rl_live_key7", VISIBLE_MS));
    assert_false(has_key("rl_live_key5"));
    sql("UPDATE renlayer.agents SET deleted_at = NULL WHERE id = '" A3 "'", 0, NULL);
    assert_true(rl_test_wait_until(key_present, "rl_live_key5", VISIBLE_MS));
}

typedef struct {
    uint64_t gen;
} gen_t;

static bool gen_passed(void *arg)
{
    return px_cache_generation(g.cache) > ((gen_t *)arg)->gen;
}

static bool notifications_reached(void *arg)
{
    px_cache_stats_t st;
    px_cache_stats(g.cache, &st);
    return st.notifications >= ((gen_t *)arg)->gen;
}

/* A burst of notifications is one load; other tables' notifications none. */
static void test_debounce(void **state)
{
    (void)state;
    assert_int_equal(px_cache_reload(g.cache), RL_OK);
    px_cache_stats_t st;
    px_cache_stats(g.cache, &st);
    uint64_t g0 = px_cache_generation(g.cache);

    sql("SELECT count(pg_notify('renlayer_config', json_build_object('table', 'limits', "
        "'op', 'UPDATE', 'tenant_id', NULL, 'id', i::text)::text)) FROM generate_series(1, 20) i",
        0, NULL);
    gen_t want = {st.notifications + 20};
    assert_true(rl_test_wait_until(notifications_reached, &want, WAIT_MS));
    struct timespec ts = {0, 300 * 1000000L}; /* 15 debounce periods: proves an absence */
    nanosleep(&ts, NULL);
    assert_int_equal(px_cache_generation(g.cache), g0);

    sql("SELECT count(pg_notify('renlayer_config', json_build_object('table', 'api_keys', "
        "'op', 'UPDATE', 'tenant_id', NULL, 'id', i::text)::text)) FROM generate_series(1, 50) i",
        0, NULL);
    want.gen += 50;
    assert_true(rl_test_wait_until(notifications_reached, &want, WAIT_MS));
    gen_t g1 = {g0};
    assert_true(rl_test_wait_until(gen_passed, &g1, VISIBLE_MS));
    nanosleep(&ts, NULL);
    uint64_t loads = px_cache_generation(g.cache) - g0;
    print_message("50 notifications in one transaction -> %llu load(s)\n",
                  (unsigned long long)loads);
    assert_true(loads >= 1 && loads <= 2);
}

/* A reader keeps its snapshot, and everything it points to, across swaps. */
static void test_old_snapshot_survives_swaps(void **state)
{
    (void)state;
    px_snapshot_t *old = px_cache_acquire(g.cache);
    uint64_t gen = px_snapshot_generation(old);
    const px_key_t *k = find(old, "rl_live_key1");
    const px_gate_t *main = k->agent->default_gate;
    for (int i = 0; i < 3; i++)
        assert_int_equal(px_cache_reload(g.cache), RL_OK);
    assert_true(px_cache_generation(g.cache) >= gen + 3);
    assert_int_equal(px_snapshot_generation(old), gen);

    px_snapshot_t *cur = px_cache_acquire(g.cache);
    assert_ptr_not_equal(cur, old);
    assert_ptr_not_equal(find(cur, "rl_live_key1"), k);
    px_snapshot_release(cur);

    /* under ASan any of these reads of freed memory would abort */
    assert_string_equal(k->agent->name, "agent-one");
    assert_string_equal(k->agent->tenant->id, T1);
    assert_string_equal(main->upstream_url, "https://api.example.com/v1");
    assert_string_equal(header(main, "Authorization"), "Bearer sk-test-1");
    assert_string_equal(main->fallbacks[0]->name, "backup");
    assert_non_null(json_object_get(main->request_defaults, "temperature"));
    assert_non_null(px_snapshot_price(old, T1, "gpt-4o"));
    px_snapshot_release(old);
}

typedef struct {
    atomic_bool *stop;
    long iterations;
    int errors;
} reader_t;

static void *reader_main(void *arg)
{
    reader_t *r = arg;
    uint8_t h[32];
    key_hash("rl_live_key1", h);
    uint64_t last = 0;
    while (!atomic_load(r->stop)) {
        px_snapshot_t *s = px_cache_acquire(g.cache);
        uint64_t gen = px_snapshot_generation(s);
        const px_key_t *k = px_snapshot_find_key(s, h);
        if (s == NULL || gen < last || k == NULL || strcmp(k->agent->name, "agent-one") != 0 ||
            k->agent->default_gate == NULL ||
            strcmp(header(k->agent->default_gate, "Authorization"), "Bearer sk-test-1") != 0 ||
            px_snapshot_price(s, T1, "gpt-4o-mini") == NULL)
            r->errors++;
        last = gen;
        px_snapshot_release(s);
        r->iterations++;
    }
    return NULL;
}

static void test_concurrent_readers_during_reloads(void **state)
{
    (void)state;
    atomic_bool stop;
    atomic_init(&stop, false);
    pthread_t th[4];
    reader_t rs[4];
    for (int i = 0; i < 4; i++) {
        rs[i] = (reader_t){.stop = &stop};
        assert_int_equal(pthread_create(&th[i], NULL, reader_main, &rs[i]), 0);
    }
    uint64_t g0 = px_cache_generation(g.cache);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(px_cache_reload(g.cache), RL_OK);
        sql("SELECT pg_notify('renlayer_config', '{\"table\":\"gates\"}')", 0, NULL);
    }
    atomic_store(&stop, true);
    long total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(rs[i].errors, 0);
        assert_true(rs[i].iterations > 0);
        total += rs[i].iterations;
    }
    assert_true(px_cache_generation(g.cache) >= g0 + 20);
    print_message("4 readers: %ld acquire/lookup/release during 20+ reloads\n", total);
}

/* Thousands of keys load in a few milliseconds (more under sanitizers). */
static void test_many_keys(void **state)
{
    (void)state;
    sql("INSERT INTO renlayer.api_keys (id, tenant_id, agent_id, key_hash, prefix) "
        "SELECT ('01900000-0000-7000-9000-' || lpad(to_hex(i), 12, '0'))::uuid, '" T1 "', '" A1
        "', sha256(convert_to('bulk-' || i, 'UTF8')), 'rl_live_bulk' "
        "FROM generate_series(1, 5000) i",
        0, NULL);
    assert_int_equal(px_cache_reload(g.cache), RL_OK);
    px_cache_stats_t st;
    px_cache_stats(g.cache, &st);
    px_snapshot_t *s = px_cache_acquire(g.cache);
    size_t keys;
    px_snapshot_counts(s, &keys, NULL, NULL);
    assert_true(keys >= 5000);
    for (int i = 1; i <= 5000; i += 499) {
        char name[32];
        uint8_t h[32];
        snprintf(name, sizeof name, "bulk-%d", i);
        assert_int_equal(rl_sha256(name, strlen(name), h), RL_OK);
        const px_key_t *k = px_snapshot_find_key(s, h);
        assert_non_null(k);
        assert_string_equal(k->agent->id, A1);
    }
    int64_t t0 = rl_test_now_ms();
    uint8_t miss[32] = {0};
    for (int i = 0; i < 100000; i++) {
        miss[0] = (uint8_t)i, miss[1] = (uint8_t)(i >> 8), miss[5] = (uint8_t)(i >> 16);
        if (px_snapshot_find_key(s, miss) != NULL)
            fail_msg("phantom key");
    }
    int64_t lookups = rl_test_now_ms() - t0;
    px_snapshot_release(s);
    print_message("%zu keys loaded in %.1f ms; 100000 missing-key lookups in %lld ms\n", keys,
                  st.last_load_us / 1000.0, (long long)lookups);
    assert_true(st.last_load_us < 2000000);
}

/* Without any notification the periodic refresh loads again. */
static void test_periodic_refresh(void **state)
{
    (void)state;
    px_cache_t *c = new_cache(100);
    assert_true(rl_test_wait_until(is_loaded, c, WAIT_MS));
    uint64_t g0 = px_cache_generation(c);
    int64_t end = rl_test_now_ms() + WAIT_MS;
    while (px_cache_generation(c) < g0 + 3 && rl_test_now_ms() < end)
        rl_test_sleep_ms(5);
    assert_true(px_cache_generation(c) >= g0 + 3);
    px_cache_destroy(c);
}

/* The listener's connection is cut and a key revoked meanwhile: whether the
 * notification arrives or the reconnect's resync finds it, it is gone. */
static void test_listener_reconnect_resyncs(void **state)
{
    (void)state;
    insert_key("01900000-0000-7000-8000-0000000000d8", T1, A1, "rl_live_key8", NULL, false);
    assert_true(rl_test_wait_until(key_present, "rl_live_key8", VISIBLE_MS));
    char buf[16];
    scalar("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
           "WHERE query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()",
           0, NULL, buf, sizeof buf);
    assert_true(strtol(buf, NULL, 10) >= 1);
    sql("UPDATE renlayer.api_keys SET revoked_at = now() "
        "WHERE id = '01900000-0000-7000-8000-0000000000d8'",
        0, NULL);
    assert_true(rl_test_wait_until(key_absent, "rl_live_key8", WAIT_MS));
    assert_true(rl_test_wait_until(is_up, g.cache, WAIT_MS));
}

/* Runs last: stops and restarts the server. */
static void test_database_down_and_back(void **state)
{
    (void)state;
    assert_true(rl_test_wait_until(is_up, g.cache, WAIT_MS));
    uint64_t gen = px_cache_generation(g.cache);
    assert_int_equal(rl_test_pg_stop(g.pg), RL_OK);

    assert_true(rl_test_wait_until(is_down, g.cache, WAIT_MS));
    assert_int_not_equal(px_cache_reload(g.cache), RL_OK);
    assert_true(px_cache_loaded(g.cache));
    assert_true(has_key("rl_live_key1")); /* fail open: the snapshot keeps serving */
    assert_int_equal(px_cache_generation(g.cache), gen);
    px_cache_stats_t st;
    px_cache_stats(g.cache, &st);
    assert_true(st.load_failures >= 1);
    assert_string_not_equal(st.last_error, "");

    /* a cache created while the database is down starts empty */
    px_cache_t *late = new_cache(60000);
    assert_false(px_cache_loaded(late));
    assert_false(px_cache_db_up(late));
    assert_null(px_cache_acquire(late));

    assert_int_equal(rl_test_pg_start(g.pg), RL_OK);
    assert_true(rl_test_wait_until(is_up, g.cache, WAIT_MS));
    assert_true(px_cache_generation(g.cache) > gen);
    assert_true(rl_test_wait_until(is_loaded, late, WAIT_MS));
    assert_true(rl_test_wait_until(is_up, late, WAIT_MS));
    px_cache_destroy(late);

    /* and notifications flow again */
    rl_pg_reset(g.admin);
    insert_key("01900000-0000-7000-8000-0000000000d9", T1, A1, "rl_live_key9", NULL, false);
    assert_true(rl_test_wait_until(key_present, "rl_live_key9", VISIBLE_MS));
    px_cache_stats(g.cache, &st);
    assert_string_equal(st.last_error, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_rejects_bad_input),
        cmocka_unit_test(test_first_load),
        cmocka_unit_test(test_key_lookup),
        cmocka_unit_test(test_gates),
        cmocka_unit_test(test_prices),
        cmocka_unit_test(test_cost),
        cmocka_unit_test(test_key_appears_and_revocation_is_prompt),
        cmocka_unit_test(test_debounce),
        cmocka_unit_test(test_old_snapshot_survives_swaps),
        cmocka_unit_test(test_concurrent_readers_during_reloads),
        cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_periodic_refresh),
        cmocka_unit_test(test_listener_reconnect_resyncs),
        cmocka_unit_test(test_database_down_and_back),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
