#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "rl_policy.h"

/* Mon 2024-01-15 00:00:00 UTC and Mon 2024-07-15 00:00:00 UTC. */
#define WINTER_MON 1705276800LL
#define SUMMER_MON 1721001600LL
#define H(h, m) ((h)*3600LL + (m)*60LL)
#define DAY 86400LL

/* Test JSON is written with single quotes; this swaps them for double ones. */
static json_t *J(const char *text)
{
    char *s = strdup(text);
    for (char *p = s; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_error_t e;
    json_t *v = json_loads(s, JSON_DECODE_ANY, &e);
    if (v == NULL)
        fail_msg("bad test JSON: %s: %s", e.text, s);
    free(s);
    return v;
}

static rl_policy_set_t *compile_ok(const char *text)
{
    json_t *v = J(text);
    rl_policy_set_t *set = NULL;
    rl_policy_error_t err;
    rl_status_t st = rl_policy_compile(v, &set, &err);
    if (st != RL_OK)
        fail_msg("compile failed: %s", err.message);
    json_decref(v);
    return set;
}

/* One policy p1 with the given conditions and action. */
static rl_policy_set_t *one(const char *conds, const char *action)
{
    char buf[4096];
    snprintf(buf, sizeof buf,
             "[{'id':'p1','name':'one','priority':0,'enabled':true,"
             "'conditions':%s,'action':'%s','message':'m1'}]",
             conds, action);
    return compile_ok(buf);
}

static rl_status_t compile_err(const char *text, rl_policy_error_t *err)
{
    json_t *v = J(text);
    rl_policy_set_t *set = NULL;
    rl_status_t st = rl_policy_compile(v, &set, err);
    assert_null(set);
    json_decref(v);
    return st;
}

static rl_policy_input_t base(void)
{
    rl_policy_input_t in = {
        .agent_id = "agent-1",
        .gate_id = "gate-1",
        .action = "chat",
        .method = "POST",
        .path = "/v1/chat/completions",
        .model = "gpt-4o",
        .user = "alice@example.com",
        .estimated_input_tokens = 100,
        .now_unix = WINTER_MON + H(12, 0),
    };
    return in;
}

static rl_policy_result_t eval(const rl_policy_set_t *set, const rl_policy_input_t *in)
{
    rl_policy_result_t r;
    rl_policy_evaluate(set, in, &r);
    return r;
}

/* Whether p1 (a DENY policy) matched. Fails the test on an error result. */
static bool hits(const rl_policy_set_t *set, const rl_policy_input_t *in)
{
    rl_policy_result_t r = eval(set, in);
    if (r.error)
        fail_msg("unexpected error: %s", r.reason);
    return r.matched;
}

static void empty_set_allows(void **state)
{
    (void)state;
    rl_policy_set_t *set = compile_ok("[]");
    rl_policy_input_t in = base();
    rl_policy_result_t r = eval(set, &in);
    assert_int_equal(r.action, RL_POLICY_ALLOW);
    assert_false(r.matched);
    assert_false(r.error);
    assert_string_equal(r.policy_id, "");
    assert_string_equal(r.reason, "");
    assert_int_equal(rl_policy_set_count(set), 0);
    assert_int_equal(rl_policy_set_needs(set), 0);
    rl_policy_set_destroy(set);
}

static void empty_conditions_match_everything(void **state)
{
    (void)state;
    const char *forms[] = {"{}", "[]", "null"};
    for (size_t i = 0; i < 3; i++) {
        rl_policy_set_t *set = one(forms[i], "DENY");
        rl_policy_input_t in = {0};
        rl_policy_result_t r = eval(set, &in);
        assert_int_equal(r.action, RL_POLICY_DENY);
        assert_true(r.matched);
        assert_string_equal(r.policy_id, "p1");
        assert_string_equal(r.policy_name, "one");
        assert_string_equal(r.message, "m1");
        rl_policy_set_destroy(set);
    }
    /* A policy with no conditions key at all */
    rl_policy_set_t *set = compile_ok("[{'id':'x','action':'FLAG'}]");
    rl_policy_input_t in = base();
    rl_policy_result_t r = eval(set, &in);
    assert_int_equal(r.action, RL_POLICY_FLAG);
    assert_string_equal(r.message, "");
    assert_string_equal(r.policy_name, "");
    rl_policy_set_destroy(set);
}

static void action_condition(void **state)
{
    (void)state;
    rl_policy_set_t *set = one("{'action':'mcp'}", "DENY");
    rl_policy_input_t in = base();
    assert_false(hits(set, &in));
    in.action = "mcp";
    assert_true(hits(set, &in));
    in.action = "MCP"; /* action names are exact */
    assert_false(hits(set, &in));
    in.action = NULL;
    assert_false(hits(set, &in));
    rl_policy_set_destroy(set);

    set = one("{'action':['embedding','tool_call','http']}", "DENY");
    in = base();
    assert_false(hits(set, &in));
    const char *yes[] = {"embedding", "tool_call", "http"};
    for (size_t i = 0; i < 3; i++) {
        in.action = yes[i];
        assert_true(hits(set, &in));
    }
    in.action = "unknown";
    assert_false(hits(set, &in));
    rl_policy_set_destroy(set);
}

static void method_condition(void **state)
{
    (void)state;
    rl_policy_set_t *set = one("{'method':['get','Delete']}", "DENY");
    rl_policy_input_t in = base();
    assert_false(hits(set, &in));
    in.method = "GET";
    assert_true(hits(set, &in));
    in.method = "delete";
    assert_true(hits(set, &in));
    in.method = "GETX";
    assert_false(hits(set, &in));
    in.method = NULL;
    assert_false(hits(set, &in));
    rl_policy_set_destroy(set);
}

static void path_globs(void **state)
{
    (void)state;
    static const struct {
        const char *glob, *path;
        bool match;
    } cases[] = {
        {"/v1/chat/*", "/v1/chat/completions", true},
        {"/v1/chat/*", "/v1/chat/", true},
        {"/v1/chat/*", "/v1/chat", false},
        {"/v1/chat/*", "/v1/embeddings", false},
        {"/v1/chat/*", "/V1/CHAT/completions", false}, /* paths are case-sensitive */
        {"/v1/*/completions", "/v1/chat/completions", true},
        {"/v1/*/completions", "/v1/a/b/completions", true}, /* * crosses / */
        {"/v1/*/completions", "/v1/chat/completions/x", false},
        {"*/completions", "/v1/completions", true},
        {"*/completions", "/v1/completion", false},
        {"/v1/respons?s", "/v1/responses", true},
        {"/v1/respons?s", "/v1/responss", false},
        {"/v1/respons?s", "/v1/responsees", false},
        {"/v?/*", "/v2/x", true},
        {"/v?/*", "/v/x", false},
        {"/x/?", "/x/\xc3\xa9", true}, /* ? is one UTF-8 character */
        {"/x/??", "/x/\xc3\xa9", false},
        {"/x/*?", "/x/\xc3\xa9\xc3\xa9", true},
        {"*", "", true},
        {"*", "/anything", true},
        {"**", "/anything", true},
        {"/exact", "/exact", true},
        {"/exact", "/exact/", false},
        {"/lit\\*", "/lit*", true}, /* \* is a literal star */
        {"/lit\\*", "/literal", false},
        {"/q\\?", "/q?", true},
        {"/q\\?", "/qx", false},
        {"*a*b*c*", "xxaxxbxxcxx", true},
        {"*a*b*c*", "xxaxxcxxbxx", false},
        {"a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
        {"*.json", "/v1/files/a.json", true},
        {"*.json", "/v1/files/a.jsonx", false},
        {"*/files/*", "/v1/files/a.json", true},
        {"*/files/*", "/files/", true},
        {"*/files/*", "/v1/file/a", false},
        {"*/files/*", "/v1/FILES/a", false},
        {"*\\**", "a*b", true}, /* an escaped star inside: contains "*" */
        {"*\\**", "ab", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *g = json_string(cases[i].glob);
        char *gs = json_dumps(g, JSON_ENCODE_ANY);
        char conds[512];
        snprintf(conds, sizeof conds, "{\"path\":%s}", gs);
        free(gs);
        json_decref(g);
        rl_policy_set_t *set = one(conds, "DENY");
        rl_policy_input_t in = base();
        in.path = cases[i].path;
        if (hits(set, &in) != cases[i].match)
            fail_msg("glob %s on %s: expected %d", cases[i].glob, cases[i].path, cases[i].match);
        rl_policy_set_destroy(set);
    }
    rl_policy_set_t *set = one("{'path':'/v1/*'}", "DENY");
    rl_policy_input_t in = base();
    in.path = NULL;
    assert_false(hits(set, &in));
    rl_policy_set_destroy(set);
}

static void model_is_case_insensitive(void **state)
{
    (void)state;
    rl_policy_set_t *set = one("{'model':['gpt-4*','*-OPUS','claude-3-haiku','*MINI*']}", "DENY");
    rl_policy_input_t in = base();
    const char *yes[] = {"gpt-4o",        "GPT-4-turbo",    "Gpt-4",
                         "claude-3-opus", "CLAUDE-3-HAIKU", "o4-mini-high"};
    const char *no[] = {"gpt-3.5-turbo",    "gpt4", "claude-3-sonnet",
                        "claude-3-haiku-x", "",     "o4-min"};
    for (size_t i = 0; i < 6; i++) {
        in.model = yes[i];
        if (!hits(set, &in))
            fail_msg("model %s should match", yes[i]);
        in.model = no[i];
        if (hits(set, &in))
            fail_msg("model %s should not match", no[i]);
    }
    in.model = NULL;
    assert_false(hits(set, &in));
    rl_policy_set_destroy(set);

    set = one("{'model':{'regex':'^o[0-9]'}}", "DENY"); /* regex follows the field's case rule */
    in.model = "O1-preview";
    assert_true(hits(set, &in));
    in.model = "gpt-o1";
    assert_false(hits(set, &in));
    rl_policy_set_destroy(set);
}

static void tool_condition(void **state)
{
    (void)state;
    rl_policy_set_t *set = one("{'tool':['delete_*','shell']}", "DENY");
    rl_policy_input_t in = base();
    assert_false(hits(set, &in)); /* no tools */
    const char *t1[] = {"read_file", "search"};
    in.tool_names = t1;
    in.ntools = 2;
    assert_false(hits(set, &in));
    const char *t2[] = {"read_file", "delete_repo"};
    in.tool_names = t2;
    assert_true(hits(set, &in));
    const char *t3[] = {"Shell"}; /* tool names are case-sensitive */
    in.tool_names = t3;
    in.ntools = 1;
    assert_false(hits(set, &in));
    const char *t4[] = {"shell"};
    in.tool_names = t4;
    assert_true(hits(set, &in));
    in.ntools = 0; /* ntools rules, not the array */
    assert_false(hits(set, &in));
    rl_policy_set_destroy(set);

    set = one("{'tool':{'regex':'^(rm|drop)_[a-z]+$'}}", "DENY");
    const char *t5[] = {"drop_table"};
    in.tool_names = t5;
    in.ntools = 1;
    assert_true(hits(set, &in));
    const char *t6[] = {"drop_Table", "xrm_x"};
    in.tool_names = t6;
    in.ntools = 2;
    assert_false(hits(set, &in));
    rl_policy_set_destroy(set);

    set = one("{'not':{'tool':'*'}}", "DENY"); /* "no tool involved" */
    in.ntools = 0;
    assert_true(hits(set, &in));
    in.ntools = 1;
    assert_false(hits(set, &in));
    rl_policy_set_destroy(set);
}

static void user_condition(void **state)
{
    (void)state;
    rl_policy_set_t *set = one("{'user':['*@example.com','bob']}", "DENY");
    rl_policy_input_t in = base();
    assert_true(hits(set, &in));
    in.user = "bob";
    assert_true(hits(set, &in));
    in.user = "Bob"; /* users are case-sensitive */
    assert_false(hits(set, &in));
    in.user = "alice@example.org";
    assert_false(hits(set, &in));
    in.user = NULL;
    assert_false(hits(set, &in));
    rl_policy_set_destroy(set);
}

static const char *cb_header(void *ctx, const char *name)
{
    const rl_policy_header_t *h = ctx;
    for (; h->name; h++)
        if (strcasecmp(h->name, name) == 0)
            return h->value;
    return NULL;
}

/* Answers only the exact lowercase name: the engine must pass names lowercased. */
static const char *lowercase_only(void *ctx, const char *name)
{
    (void)ctx;
    return strcmp(name, "x-env") == 0 ? "prod" : NULL;
}

static void header_condition(void **state)
{
    (void)state;
    rl_policy_set_t *set = one(
        "{'headers':{'X-Env':'prod*','x-team':['payments','risk'],'X-Debug':false,'X-Trace':true}}",
        "DENY");
    rl_policy_header_t hs[] = {
        {"x-env", "production"}, {"X-TEAM", "risk"}, {"x-trace", "1"}, {NULL, NULL}};
    rl_policy_input_t in = base();
    in.headers = hs;
    in.nheaders = 3;
    assert_true(hits(set, &in));
    assert_int_equal(rl_policy_set_needs(set), RL_POLICY_NEEDS_HEADERS);

    /* the same through a callback */
    rl_policy_input_t cb = base();
    cb.header = cb_header;
    cb.header_ctx = hs;
    assert_true(hits(set, &cb));

    rl_policy_set_t *mixed = one("{'headers':{'X-ENV':'prod'}}", "DENY");
    rl_policy_input_t lc = base();
    lc.header = lowercase_only;
    assert_true(hits(mixed, &lc));
    rl_policy_set_destroy(mixed);

    hs[0].value = "Production"; /* values are case-sensitive */
    assert_false(hits(set, &in));
    hs[0].value = "prod";
    assert_true(hits(set, &in));
    hs[1].value = "ops";
    assert_false(hits(set, &in));
    hs[1].value = "payments";
    hs[2].name = "x-other"; /* X-Trace: true needs it present */
    assert_false(hits(set, &in));
    hs[2].name = "x-debug"; /* X-Debug: false needs it absent */
    assert_false(hits(set, &in));
    hs[2].name = "x-trace";
    assert_true(hits(set, &in));
    in.nheaders = 1; /* x-team gone */
    assert_false(hits(set, &in));
    in.nheaders = 0;
    in.headers = NULL;
    assert_false(hits(set, &in));
    rl_policy_set_destroy(set);

    /* with an array, the first header of a name is the one tested */
    set = one("{'headers':{'x-a':'1'}}", "DENY");
    rl_policy_header_t dup[] = {{"X-A", "2"}, {"x-a", "1"}};
    in = base();
    in.headers = dup;
    in.nheaders = 2;
    assert_false(hits(set, &in));
    dup[0].value = "1";
    assert_true(hits(set, &in));
    rl_policy_set_destroy(set);
}

static void dlp_condition(void **state)
{
    (void)state;
    rl_policy_set_t *set = one("{'dlp':['credit_card','iban']}", "DENY");
    rl_policy_input_t in = base();
    assert_false(hits(set, &in));
    const char *d1[] = {"email"};
    in.dlp_detectors = d1;
    in.ndlp = 1;
    assert_false(hits(set, &in));
    const char *d2[] = {"email", "iban"};
    in.dlp_detectors = d2;
    in.ndlp = 2;
    assert_true(hits(set, &in));
    assert_int_equal(rl_policy_set_needs(set), RL_POLICY_NEEDS_DLP);
    rl_policy_set_destroy(set);

    set = one("{'dlp':'*'}", "FLAG"); /* any finding at all */
    assert_true(hits(set, &in));
    in.ndlp = 0;
    assert_false(hits(set, &in));
    rl_policy_set_destroy(set);
}

static void tokens_condition(void **state)
{
    (void)state;
    rl_policy_set_t *set = one("{'input_tokens_above':4000}", "DENY");
    rl_policy_input_t in = base();
    in.estimated_input_tokens = 4000;
    assert_false(hits(set, &in)); /* above, not at */
    in.estimated_input_tokens = 4001;
    assert_true(hits(set, &in));
    in.estimated_input_tokens = -1; /* unknown */
    assert_false(hits(set, &in));
    rl_policy_set_destroy(set);
    set = one("{'input_tokens_above':0}", "DENY");
    in.estimated_input_tokens = 0;
    assert_false(hits(set, &in));
    in.estimated_input_tokens = 1;
    assert_true(hits(set, &in));
    rl_policy_set_destroy(set);
}

static void time_window_utc(void **state)
{
    (void)state;
    rl_policy_set_t *set = one("{'time':{'start':'09:00','end':'17:00'}}", "DENY");
    rl_policy_input_t in = base();
    in.now_unix = WINTER_MON + H(8, 59) + 59;
    assert_false(hits(set, &in));
    in.now_unix = WINTER_MON + H(9, 0); /* start is inclusive */
    assert_true(hits(set, &in));
    in.now_unix = WINTER_MON + H(16, 59) + 59;
    assert_true(hits(set, &in));
    in.now_unix = WINTER_MON + H(17, 0); /* end is exclusive */
    assert_false(hits(set, &in));
    assert_int_equal(rl_policy_set_needs(set), RL_POLICY_NEEDS_TIME);
    rl_policy_set_destroy(set);

    set = one("{'time':{'start':'00:00','end':'24:00','days':['sat','sun']}}", "DENY");
    in.now_unix = WINTER_MON - 1; /* Sunday 23:59:59 */
    assert_true(hits(set, &in));
    in.now_unix = WINTER_MON;
    assert_false(hits(set, &in));
    in.now_unix = WINTER_MON + 5 * DAY; /* Saturday 00:00 */
    assert_true(hits(set, &in));
    in.now_unix = -1; /* 1969-12-31 23:59:59, a Wednesday */
    assert_false(hits(set, &in));
    rl_policy_set_destroy(set);
}

static void time_window_across_midnight(void **state)
{
    (void)state;
    rl_policy_set_t *set = one("{'time':{'start':'22:00','end':'06:00','tz':'UTC'}}", "DENY");
    rl_policy_input_t in = base();
    int64_t yes[] = {H(22, 0), H(23, 59), H(0, 0), H(3, 0), H(5, 59) + 59};
    int64_t no[] = {H(6, 0), H(12, 0), H(21, 59) + 59};
    for (size_t i = 0; i < 5; i++) {
        in.now_unix = WINTER_MON + yes[i];
        assert_true(hits(set, &in));
    }
    for (size_t i = 0; i < 3; i++) {
        in.now_unix = WINTER_MON + no[i];
        assert_false(hits(set, &in));
    }
    rl_policy_set_destroy(set);

    /* Friday night: the hours after midnight belong to Friday's window */
    set = one("{'time':{'start':'22:00','end':'06:00','days':['fri']}}", "DENY");
    int64_t fri = WINTER_MON + 4 * DAY;
    in.now_unix = fri + H(23, 0);
    assert_true(hits(set, &in));
    in.now_unix = fri + DAY + H(3, 0); /* Saturday 03:00 */
    assert_true(hits(set, &in));
    in.now_unix = fri + H(3, 0); /* Friday 03:00: Thursday's window */
    assert_false(hits(set, &in));
    in.now_unix = fri + DAY + H(23, 0); /* Saturday 23:00 */
    assert_false(hits(set, &in));
    rl_policy_set_destroy(set);

    set = one("{'time':{'start':'09:00','end':'17:00','days':['mon','tue','wed','thu','fri']}}",
              "DENY");
    for (int d = 0; d < 7; d++) {
        in.now_unix = WINTER_MON + d * DAY + H(10, 0);
        assert_int_equal(hits(set, &in), d < 5);
    }
    rl_policy_set_destroy(set);
}

static void time_window_timezones(void **state)
{
    (void)state;
    rl_policy_set_t *set =
        one("{'time':{'start':'09:00','end':'17:00','tz':'Europe/Paris'}}", "DENY");
    rl_policy_input_t in = base();
    in.now_unix = WINTER_MON + H(8, 30); /* 09:30 CET */
    assert_true(hits(set, &in));
    in.now_unix = WINTER_MON + H(16, 30); /* 17:30 CET */
    assert_false(hits(set, &in));
    in.now_unix = SUMMER_MON + H(7, 30); /* 09:30 CEST */
    assert_true(hits(set, &in));
    in.now_unix = SUMMER_MON + H(15, 30); /* 17:30 CEST */
    assert_false(hits(set, &in));
    in.now_unix = SUMMER_MON + H(6, 30); /* 08:30 CEST, 09:30 in winter time */
    assert_false(hits(set, &in));
    /* 2024-03-31: 01:59:59 UTC is 03:59:59 CEST; the hour 02:00-03:00 does not exist */
    rl_policy_set_destroy(set);

    set = one("{'time':{'start':'02:30','end':'03:00','tz':'Europe/Paris'}}", "DENY");
    in.now_unix = 1711846800 - 1; /* 01:59:59 CET */
    assert_false(hits(set, &in));
    in.now_unix = 1711846800; /* 03:00:00 CEST */
    assert_false(hits(set, &in));
    in.now_unix = 1711846800 - DAY + H(0, 45); /* Saturday 01:45 UTC = 02:45 CET */
    assert_true(hits(set, &in));
    rl_policy_set_destroy(set);

    /* A fixed offset, with the weekday taken in local time */
    set = one("{'time':{'start':'00:00','end':'01:00','tz':'+05:30','days':['tue']}}", "DENY");
    in.now_unix = WINTER_MON + H(18, 45); /* Monday 18:45 UTC = Tuesday 00:15 +05:30 */
    assert_true(hits(set, &in));
    in.now_unix = WINTER_MON + H(19, 30); /* Tuesday 01:00 */
    assert_false(hits(set, &in));
    rl_policy_set_destroy(set);

    set = one("{'time':{'start':'20:00','end':'23:00','tz':'-08:00','days':['sun']}}", "DENY");
    in.now_unix = WINTER_MON + H(5, 0); /* Sunday 21:00 -08:00 */
    assert_true(hits(set, &in));
    rl_policy_set_destroy(set);

    /* Southern hemisphere, DST in January */
    set = one("{'time':{'start':'11:00','end':'12:00','tz':'Australia/Sydney'}}", "DENY");
    in.now_unix = WINTER_MON + H(0, 30); /* 11:30 AEDT (+11) */
    assert_true(hits(set, &in));
    in.now_unix = SUMMER_MON + H(1, 30); /* 11:30 AEST (+10) */
    assert_true(hits(set, &in));
    in.now_unix = SUMMER_MON + H(0, 30); /* 10:30 AEST */
    assert_false(hits(set, &in));
    rl_policy_set_destroy(set);

    /* Past the TZif transitions (2037): the footer rule keeps DST going */
    set = one("{'time':{'start':'12:00','end':'13:00','tz':'America/New_York'}}", "DENY");
    in.now_unix = 4118083200LL + H(16, 30); /* 2100-07-01 12:30 EDT */
    assert_true(hits(set, &in));
    in.now_unix = 4102444800LL + H(17, 30); /* 2100-01-01 12:30 EST */
    assert_true(hits(set, &in));
    in.now_unix = 4102444800LL + H(16, 30); /* 11:30 EST */
    assert_false(hits(set, &in));
    rl_policy_set_destroy(set);
}

static void combinators(void **state)
{
    (void)state;
    rl_policy_set_t *set = one("{'action':'chat','any_of':[{'model':'gpt-4*'},{'user':'bob'}],"
                               "'not':{'headers':{'x-approved':'yes'}}}",
                               "DENY");
    rl_policy_input_t in = base();
    assert_true(hits(set, &in));
    in.model = "gpt-3.5";
    assert_false(hits(set, &in));
    in.user = "bob";
    assert_true(hits(set, &in));
    rl_policy_header_t hs[] = {{"X-Approved", "yes"}};
    in.headers = hs;
    in.nheaders = 1;
    assert_false(hits(set, &in));
    rl_policy_set_destroy(set);

    /* conditions as an array: every object holds; all_of the same */
    const char *forms[] = {
        "[{'action':'chat'},{'model':'gpt-4o'}]",
        "{'all_of':[{'action':'chat'},{'model':'gpt-4o'}]}",
        "{'not':{'any_of':[{'not':{'action':'chat'}},{'not':{'model':'gpt-4o'}}]}}"};
    for (size_t i = 0; i < 3; i++) {
        set = one(forms[i], "DENY");
        in = base();
        assert_true(hits(set, &in));
        in.model = "gpt-4";
        assert_false(hits(set, &in));
        in = base();
        in.action = "mcp";
        assert_false(hits(set, &in));
        rl_policy_set_destroy(set);
    }
}

static void priority_and_ties(void **state)
{
    (void)state;
    /* listed out of order; equal priorities go by id */
    rl_policy_set_t *set = compile_ok(
        "[{'id':'c','priority':10,'action':'DENY','message':'c'},"
        " {'id':'b','priority':5,'action':'FLAG','message':'b','conditions':{'user':'bob'}},"
        " {'id':'a2','priority':5,'action':'ALLOW','message':'a2'},"
        " {'id':'a1','priority':5,'action':'DENY','message':'a1','conditions':{'model':'x'}},"
        " {'id':'z','priority':-3,'action':'DENY','message':'z','conditions':{'model':'none'}}]");
    assert_int_equal(rl_policy_set_count(set), 5);
    rl_policy_input_t in = base();
    rl_policy_result_t r = eval(set, &in);
    assert_string_equal(r.policy_id, "a2"); /* z and a1 miss, a2 matches before b and c */
    assert_int_equal(r.action, RL_POLICY_ALLOW);
    assert_true(r.matched);
    in.model = "x";
    r = eval(set, &in);
    assert_string_equal(r.policy_id, "a1");
    assert_int_equal(r.action, RL_POLICY_DENY);
    in.model = "none";
    r = eval(set, &in);
    assert_string_equal(r.policy_id, "z");
    rl_policy_set_destroy(set);

    /* the first match decides, FLAG included: a FLAG shadows a later DENY */
    set = compile_ok("[{'id':'deny','priority':2,'action':'DENY'},"
                     " {'id':'flag','priority':1,'action':'FLAG','message':'watch'}]");
    r = eval(set, &in);
    assert_int_equal(r.action, RL_POLICY_FLAG);
    assert_string_equal(r.policy_id, "flag");
    assert_string_equal(r.message, "watch");
    assert_string_equal(rl_policy_status_str(r.action), "FLAGGED");
    rl_policy_set_destroy(set);
}

static void disabled_policies_are_skipped(void **state)
{
    (void)state;
    rl_policy_set_t *set = compile_ok("[{'id':'off','priority':0,'enabled':false,'action':'DENY',"
                                      "  'conditions':{'tool':'x','dlp':'y'}},"
                                      " {'id':'on','priority':1,'action':'FLAG'}]");
    assert_int_equal(rl_policy_set_count(set), 1);
    assert_int_equal(rl_policy_set_needs(set), 0); /* the disabled policy's needs do not count */
    rl_policy_input_t in = base();
    rl_policy_result_t r = eval(set, &in);
    assert_string_equal(r.policy_id, "on");
    rl_policy_set_destroy(set);

    /* disabled policies are still validated */
    rl_policy_error_t err;
    assert_int_equal(
        compile_err("[{'id':'off','enabled':false,'action':'DENY','conditions':{'bad':1}}]", &err),
        RL_ERR_INVALID);
    assert_string_equal(err.policy_id, "off");
}

static void scope_by_agent_and_gate(void **state)
{
    (void)state;
    rl_policy_set_t *set =
        compile_ok("[{'id':'p1','priority':1,'action':'DENY','scope':{'agents':['agent-1','AGENT-2'"
                   "],'gates':[]}},"
                   " {'id':'p2','priority':2,'action':'FLAG','scope':{'gates':['gate-9']}},"
                   " {'id':'p3','priority':3,'action':'ALLOW','scope':{'agents':['agent-3'],'gates'"
                   ":['gate-3']}}]");
    rl_policy_input_t in = base();
    assert_string_equal(eval(set, &in).policy_id, "p1");
    in.agent_id = "agent-2"; /* ids compare ignoring ASCII case (UUID text) */
    assert_string_equal(eval(set, &in).policy_id, "p1");
    in.agent_id = "agent-3";
    rl_policy_result_t r = eval(set, &in);
    assert_false(r.matched); /* p2 wants gate-9, p3 gate-3 */
    in.gate_id = "gate-3";
    assert_string_equal(eval(set, &in).policy_id, "p3");
    in.gate_id = "gate-9";
    assert_string_equal(eval(set, &in).policy_id, "p2");
    in.gate_id = NULL; /* no gate: policies scoped to gates do not apply */
    assert_false(eval(set, &in).matched);
    in.agent_id = NULL;
    assert_false(eval(set, &in).matched);
    rl_policy_set_destroy(set);
}

typedef struct {
    const char *json;
    rl_status_t status;
    const char *policy_id;
    const char *field;
    const char *message; /* a substring of the message */
} bad_case_t;

static const bad_case_t BAD[] = {
    {"{}", RL_ERR_INVALID, "", "", "must be a JSON array, not an object"},
    {"[3]", RL_ERR_INVALID, "", "", "policies[0]: must be an object, not an integer"},
    {"[{'action':'DENY'}]", RL_ERR_INVALID, "", "id", "policies[0]: id: is required"},
    {"[{'id':'','action':'DENY'}]", RL_ERR_INVALID, "", "id", "must be a string of 1 to 39 bytes"},
    {"[{'id':7,'action':'DENY'}]", RL_ERR_INVALID, "", "id", "must be a string"},
    {"[{'id':'p','action':'deny'}]", RL_ERR_INVALID, "p", "action",
     "policy \"p\": action: must be ALLOW, FLAG or DENY, not \"deny\""},
    {"[{'id':'p'}]", RL_ERR_INVALID, "p", "action", "is required (ALLOW, FLAG or DENY)"},
    {"[{'id':'p','action':'DENY','priority':1.5}]", RL_ERR_INVALID, "p", "priority",
     "must be an integer"},
    {"[{'id':'p','action':'DENY','priority':3000000000}]", RL_ERR_INVALID, "p", "priority",
     "must be an integer"},
    {"[{'id':'p','action':'DENY','enabled':'yes'}]", RL_ERR_INVALID, "p", "enabled",
     "must be true or false, not a string"},
    {"[{'id':'p','action':'DENY','name':5}]", RL_ERR_INVALID, "p", "name",
     "must be a string, not an integer"},
    {"[{'id':'p','action':'DENY','scope':[]}]", RL_ERR_INVALID, "p", "scope", "must be an object"},
    {"[{'id':'p','action':'DENY','scope':{'agent':[]}}]", RL_ERR_INVALID, "p", "scope.agent",
     "unknown field (expected agents or gates)"},
    {"[{'id':'p','action':'DENY','scope':{'agents':'a'}}]", RL_ERR_INVALID, "p", "scope.agents",
     "must be an array of ids"},
    {"[{'id':'p','action':'DENY','scope':{'gates':['g',3]}}]", RL_ERR_INVALID, "p",
     "scope.gates[1]", "must be an id"},
    {"[{'id':'p','action':'DENY','conditions':'x'}]", RL_ERR_INVALID, "p", "conditions",
     "must be an object of conditions, not a string"},
    {"[{'id':'p','action':'DENY','conditions':{'colour':'red'}}]", RL_ERR_INVALID, "p",
     "conditions.colour",
     "policy \"p\": conditions.colour: unknown condition (expected action, method"},
    {"[{'id':'p','action':'DENY','conditions':{'action':'chatt'}}]", RL_ERR_INVALID, "p",
     "conditions.action",
     "unknown action \"chatt\" (expected chat, embedding, mcp, tool_call or http)"},
    {"[{'id':'p','action':'DENY','conditions':{'action':['chat',1]}}]", RL_ERR_INVALID, "p",
     "conditions.action[1]", "must be an action name, not an integer"},
    {"[{'id':'p','action':'DENY','conditions':{'action':[]}}]", RL_ERR_INVALID, "p",
     "conditions.action", "this array is empty"},
    {"[{'id':'p','action':'DENY','conditions':{'method':'GE T'}}]", RL_ERR_INVALID, "p",
     "conditions.method", "\"GE T\" is not an HTTP method"},
    {"[{'id':'p','action':'DENY','conditions':{'model':5}}]", RL_ERR_INVALID, "p",
     "conditions.model",
     "must be a glob string, a {\"regex\": \"...\"} object or a non-empty array of them, not an "
     "integer"},
    {"[{'id':'p','action':'DENY','conditions':{'model':['a',['b']]}}]", RL_ERR_INVALID, "p",
     "conditions.model[1]", "not an array"},
    {"[{'id':'p','action':'DENY','conditions':{'path':''}}]", RL_ERR_INVALID, "p",
     "conditions.path", "must not be empty"},
    {"[{'id':'p','action':'DENY','conditions':{'path':'/a\\\\'}}]", RL_ERR_INVALID, "p",
     "conditions.path", "ends with a lone backslash"},
    {"[{'id':'p','action':'DENY','conditions':{'model':null}}]", RL_ERR_INVALID, "p",
     "conditions.model", "must not be null"},
    {"[{'id':'p','action':'DENY','conditions':{'tool':{'regex':'(a'}}}]", RL_ERR_INVALID, "p",
     "conditions.tool.regex",
     "invalid regular expression at offset 2: missing closing parenthesis"},
    {"[{'id':'p','action':'DENY','conditions':{'tool':[{'regex':'a'},{'regex':'[z-a]'}]}}]",
     RL_ERR_INVALID, "p", "conditions.tool[1].regex",
     "invalid regular expression at offset 3: range out of order"},
    {"[{'id':'p','action':'DENY','conditions':{'tool':{'regex':5}}}]", RL_ERR_INVALID, "p",
     "conditions.tool.regex", "must be a string, not an integer"},
    {"[{'id':'p','action':'DENY','conditions':{'tool':{'glob':'x'}}}]", RL_ERR_INVALID, "p",
     "conditions.tool.glob", "unknown field (a pattern object has only \"regex\")"},
    {"[{'id':'p','action':'DENY','conditions':{'headers':{}}}]", RL_ERR_INVALID, "p",
     "conditions.headers", "must be a non-empty object"},
    {"[{'id':'p','action':'DENY','conditions':{'headers':{'bad name':'x'}}}]", RL_ERR_INVALID, "p",
     "conditions.headers.bad name", "is not a valid header name"},
    {"[{'id':'p','action':'DENY','conditions':{'headers':{'x-a':3}}}]", RL_ERR_INVALID, "p",
     "conditions.headers.x-a", "must be a glob string"},
    {"[{'id':'p','action':'DENY','conditions':{'dlp':[]}}]", RL_ERR_INVALID, "p", "conditions.dlp",
     "this array is empty"},
    {"[{'id':'p','action':'DENY','conditions':{'input_tokens_above':-1}}]", RL_ERR_INVALID, "p",
     "conditions.input_tokens_above", "must be an integer >= 0, not a negative one"},
    {"[{'id':'p','action':'DENY','conditions':{'input_tokens_above':'10'}}]", RL_ERR_INVALID, "p",
     "conditions.input_tokens_above", "not a string"},
    {"[{'id':'p','action':'DENY','conditions':{'time':'9-5'}}]", RL_ERR_INVALID, "p",
     "conditions.time", "must be an object {\"start\""},
    {"[{'id':'p','action':'DENY','conditions':{'time':{'start':'25:00','end':'06:00'}}}]",
     RL_ERR_INVALID, "p", "conditions.time.start",
     "\"25:00\" is not a time of day (HH:MM, 00:00 to 23:59)"},
    {"[{'id':'p','action':'DENY','conditions':{'time':{'start':'9:00','end':'17:00'}}}]",
     RL_ERR_INVALID, "p", "conditions.time.start", "\"9:00\" is not a time of day"},
    {"[{'id':'p','action':'DENY','conditions':{'time':{'start':'09:00','end':'24:01'}}}]",
     RL_ERR_INVALID, "p", "conditions.time.end", "00:00 to 24:00"},
    {"[{'id':'p','action':'DENY','conditions':{'time':{'start':'09:00'}}}]", RL_ERR_INVALID, "p",
     "conditions.time.end", "is required"},
    {"[{'id':'p','action':'DENY','conditions':{'time':{'start':'09:00','end':'09:00'}}}]",
     RL_ERR_INVALID, "p", "conditions.time.end", "equals start"},
    {"[{'id':'p','action':'DENY','conditions':{'time':{'start':'09:00','end':'10:00','tz':'Mars/"
     "Olympus'}}}]",
     RL_ERR_INVALID, "p", "conditions.time.tz", "unknown time zone \"Mars/Olympus\""},
    {"[{'id':'p','action':'DENY','conditions':{'time':{'start':'09:00','end':'10:00','tz':'../../"
     "etc/passwd'}}}]",
     RL_ERR_INVALID, "p", "conditions.time.tz", "is not a time zone name"},
    {"[{'id':'p','action':'DENY','conditions':{'time':{'start':'09:00','end':'10:00','tz':'+25:00'}"
     "}}]",
     RL_ERR_INVALID, "p", "conditions.time.tz", "is not a UTC offset"},
    {"[{'id':'p','action':'DENY','conditions':{'time':{'start':'09:00','end':'10:00','tz':'Europe'}"
     "}}]",
     RL_ERR_INVALID, "p", "conditions.time.tz", "unknown time zone \"Europe\""},
    {"[{'id':'p','action':'DENY','conditions':{'time':{'start':'09:00','end':'10:00','days':['"
     "monday']}}}]",
     RL_ERR_INVALID, "p", "conditions.time.days[0]", "unknown day \"monday\""},
    {"[{'id':'p','action':'DENY','conditions':{'time':{'start':'09:00','end':'10:00','zone':'UTC'}}"
     "}]",
     RL_ERR_INVALID, "p", "conditions.time.zone",
     "unknown field (expected start, end, tz or days)"},
    {"[{'id':'p','action':'DENY','conditions':{'not':'x'}}]", RL_ERR_INVALID, "p", "conditions.not",
     "must be an object of conditions"},
    {"[{'id':'p','action':'DENY','conditions':{'not':{}}}]", RL_ERR_INVALID, "p", "conditions.not",
     "must not be empty"},
    {"[{'id':'p','action':'DENY','conditions':{'any_of':[]}}]", RL_ERR_INVALID, "p",
     "conditions.any_of", "must be a non-empty array of condition objects, not an empty array"},
    {"[{'id':'p','action':'DENY','conditions':{'any_of':[{'model':'a'},{'modle':'b'}]}}]",
     RL_ERR_INVALID, "p", "conditions.any_of[1].modle", "unknown condition"},
    {"[{'id':'p','action':'DENY','conditions':{'all_of':[{'not':{'tool':{'regex':'('}}}]}}]",
     RL_ERR_INVALID, "p", "conditions.all_of[0].not.tool.regex", "invalid regular expression"},
    {"[{'id':'p','action':'DENY','conditions':[{'action':'chat'},'x']}]", RL_ERR_INVALID, "p",
     "conditions[1]", "must be an object of conditions, not a string"},
    {"[{'id':'a','action':'DENY'},{'id':'b','action':'DENY'},{'id':'a','action':'FLAG'}]",
     RL_ERR_INVALID, "a", "id", "duplicate id (policies[0] and policies[2])"},
    {"[{'id':'ok','action':'DENY'},{'id':'bad','action':'DENY','conditions':{'x':1}}]",
     RL_ERR_INVALID, "bad", "conditions.x", "policy \"bad\""},
    {"[{'id':'p','action':'DENY','conditions':{'not':{'not':{'not':{'not':{'not':{'not':{'not':{'"
     "not':{'not':"
     "{'action':'chat'}}}}}}}}}}}]",
     RL_ERR_TOO_LARGE, "p", "conditions.not.not.not.not.not.not.not.not.not",
     "nest deeper than 8 levels"},
};

static void compile_errors_are_precise(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        rl_policy_error_t err;
        rl_status_t st = compile_err(BAD[i].json, &err);
        if (st != BAD[i].status || strcmp(err.policy_id, BAD[i].policy_id) != 0 ||
            strcmp(err.field, BAD[i].field) != 0 || strstr(err.message, BAD[i].message) == NULL)
            fail_msg("case %zu %s:\n got %s id=\"%s\" field=\"%s\" message=%s", i, BAD[i].json,
                     rl_status_str(st), err.policy_id, err.field, err.message);
        /* the message names the policy, and the field when there is one */
        if (err.field[0] != '\0' && strstr(err.message, err.field) == NULL)
            fail_msg("case %zu: message does not name the field: %s", i, err.message);
        assert_non_null(strstr(rl_error_last(), err.message));
    }
    /* NULL err is allowed */
    json_t *v = J("[{'id':'p'}]");
    rl_policy_set_t *set = NULL;
    assert_int_equal(rl_policy_compile(v, &set, NULL), RL_ERR_INVALID);
    assert_null(set);
    assert_int_equal(rl_policy_compile(NULL, &set, NULL), RL_ERR_INVALID);
    json_decref(v);
}

static void compile_limits(void **state)
{
    (void)state;
    rl_policy_error_t err;
    /* a glob past RL_POLICY_MAX_PATTERN */
    size_t big_cap = RL_POLICY_MAX_PATTERN + 200;
    char *big = malloc(big_cap);
    assert_non_null(big);
    int n = snprintf(big, big_cap, "[{'id':'p','action':'DENY','conditions':{'path':'");
    memset(big + n, 'a', RL_POLICY_MAX_PATTERN + 1);
    snprintf(big + n + RL_POLICY_MAX_PATTERN + 1, big_cap - (size_t)n - RL_POLICY_MAX_PATTERN - 1,
             "'}}]");
    assert_int_equal(compile_err(big, &err), RL_ERR_TOO_LARGE);
    assert_string_equal(err.field, "conditions.path");
    assert_non_null(strstr(err.message, "more than 1024"));
    free(big);

    /* more than RL_POLICY_MAX_NODES conditions */
    size_t cap = 64 * 1024;
    char *many = malloc(cap);
    size_t len = (size_t)snprintf(many, cap, "[{'id':'p','action':'DENY','conditions':{'any_of':[");
    for (int i = 0; i < 200; i++)
        len += (size_t)snprintf(many + len, cap - len, "%s{'model':'a','user':'b'}", i ? "," : "");
    snprintf(many + len, cap - len, "]}}]");
    assert_int_equal(compile_err(many, &err), RL_ERR_TOO_LARGE);
    assert_non_null(strstr(err.message, "more than 256 conditions in one policy"));
    free(many);
}

static void validate_one_at_save_time(void **state)
{
    (void)state;
    rl_policy_error_t err;
    json_t *p =
        J("{'name':'no id yet','priority':3,'action':'DENY','conditions':{'model':'gpt-4*'}}");
    assert_int_equal(rl_policy_validate_one(p, &err), RL_OK);
    json_decref(p);
    p = J("{'name':'bad','action':'DENY','conditions':{'time':{'start':'08:00','end':'x'}}}");
    assert_int_equal(rl_policy_validate_one(p, &err), RL_ERR_INVALID);
    assert_string_equal(
        err.message,
        "policy: conditions.time.end: \"x\" is not a time of day (HH:MM, 00:00 to 24:00)");
    assert_string_equal(err.field, "conditions.time.end");
    json_decref(p);
    p = J("{'id':'0192f5a8-7c4e-7000-8000-000000000001','action':'DENY','conditions':{'tool':{'"
          "regex':'+'}}}");
    assert_int_equal(rl_policy_validate_one(p, &err), RL_ERR_INVALID);
    assert_string_equal(err.policy_id, "0192f5a8-7c4e-7000-8000-000000000001");
    assert_non_null(strstr(
        err.message, "policy \"0192f5a8-7c4e-7000-8000-000000000001\": conditions.tool.regex: "
                     "invalid regular expression at offset 0: quantifier does not follow"));
    json_decref(p);
    /* a DB row with extra columns is fine */
    p = J("{'id':'x','tenant_id':'t','policy_set_id':'s','description':'d','created_at':'2024',"
          "'updated_at':'2024','action':'ALLOW','scope':{'agents':[],'gates':[]},'conditions':{}}");
    assert_int_equal(rl_policy_validate_one(p, NULL), RL_OK);
    json_decref(p);
}

static void catastrophic_regex_fails_closed(void **state)
{
    (void)state;
    rl_policy_set_t *set = compile_ok("[{'id':'evil','name':'evil','priority':1,'action':'FLAG','"
                                      "conditions':{'tool':{'regex':'^(a+)+$'}}},"
                                      " {'id':'later','priority':2,'action':'ALLOW'}]");
    rl_policy_input_t in = base();
    const char *ok[] = {"aaaa"};
    in.tool_names = ok;
    in.ntools = 1;
    rl_policy_result_t r = eval(set, &in);
    assert_int_equal(r.action, RL_POLICY_FLAG);
    assert_false(r.error);

    char evil[200];
    memset(evil, 'a', sizeof evil - 2);
    evil[sizeof evil - 2] = '!';
    evil[sizeof evil - 1] = '\0';
    const char *bad[] = {"fine", evil};
    in.tool_names = bad;
    in.ntools = 2;
    r = eval(set, &in);
    assert_int_equal(r.action, RL_POLICY_DENY);
    assert_true(r.error);
    assert_false(r.matched);
    assert_string_equal(r.policy_id, "evil");
    assert_string_equal(r.policy_name, "evil");
    assert_non_null(
        strstr(r.reason, "policy \"evil\": tool regex \"^(a+)+$\": match limit exceeded"));
    assert_non_null(strstr(r.message, "policy evaluation failed"));
    rl_policy_set_destroy(set);

    /* an error even under not: still a DENY, never an accidental ALLOW */
    set = one("{'not':{'user':{'regex':'^(a|aa)+$'}}}", "ALLOW");
    in = base();
    char user[120];
    memset(user, 'a', sizeof user - 2);
    user[sizeof user - 2] = 'b';
    user[sizeof user - 1] = '\0';
    in.user = user;
    r = eval(set, &in);
    assert_true(r.error);
    assert_int_equal(r.action, RL_POLICY_DENY);
    rl_policy_set_destroy(set);
}

static void fails_closed(void **state)
{
    (void)state;
    rl_policy_input_t in = base();
    rl_policy_result_t r;
    rl_policy_evaluate(NULL, &in, &r);
    assert_int_equal(r.action, RL_POLICY_DENY);
    assert_true(r.error);
    assert_non_null(strstr(r.reason, "no policy set"));

    rl_policy_set_t *set = compile_ok("[]");
    rl_policy_evaluate(set, NULL, &r);
    assert_int_equal(r.action, RL_POLICY_DENY);
    assert_true(r.error);
    rl_policy_set_destroy(set);

    /* a tenant whose policies do not compile: the proxy installs a failed set */
    rl_policy_error_t err;
    assert_int_equal(compile_err("[{'id':'broken','action':'DENY','conditions':{'x':1}}]", &err),
                     RL_ERR_INVALID);
    assert_int_equal(rl_policy_set_create_failed(&err, &set), RL_OK);
    r = eval(set, &in);
    assert_int_equal(r.action, RL_POLICY_DENY);
    assert_true(r.error);
    assert_string_equal(r.policy_id, "broken");
    assert_non_null(strstr(r.reason, "policy \"broken\": conditions.x: unknown condition"));
    rl_policy_set_destroy(set);
    assert_int_equal(rl_policy_set_create_failed(NULL, &set), RL_OK);
    r = eval(set, &in);
    assert_true(r.error);
    assert_string_equal(r.policy_id, "");
    rl_policy_set_destroy(set);

    /* a time outside the zone code's range */
    set = one("{'time':{'start':'09:00','end':'10:00','tz':'Europe/Paris'}}", "ALLOW");
    in.now_unix = INT64_MAX;
    r = eval(set, &in);
    assert_true(r.error);
    assert_string_equal(r.policy_id, "p1");
    assert_non_null(strstr(r.reason, "outside the supported range"));
    rl_policy_set_destroy(set);
}

static void needs_bits(void **state)
{
    (void)state;
    rl_policy_set_t *set = compile_ok(
        "[{'id':'a','action':'DENY','conditions':{'not':{'tool':'x'},'input_tokens_above':5}},"
        " {'id':'b','action':'DENY','conditions':{'any_of':[{'dlp':'iban'},{'time':{'start':'01:00'"
        ",'end':'02:00'}}]}}]");
    assert_int_equal(rl_policy_set_needs(set), RL_POLICY_NEEDS_TOOLS | RL_POLICY_NEEDS_TOKENS |
                                                   RL_POLICY_NEEDS_DLP | RL_POLICY_NEEDS_TIME);
    assert_ptr_equal(rl_policy_set_retain(set), set);
    rl_policy_set_destroy(set); /* drops the extra reference */
    rl_policy_input_t in = base();
    assert_false(eval(set, &in).error); /* still alive */
    rl_policy_set_destroy(set);
    rl_policy_set_destroy(NULL);
}

static void json_input_gives_the_same_answer(void **state)
{
    (void)state;
    rl_policy_set_t *set =
        compile_ok("[{'id':'t','priority':1,'action':'DENY','message':'no "
                   "deletes','conditions':{'tool':'delete_*','headers':{'x-env':'prod'}}},"
                   " {'id':'d','priority':2,'action':'FLAG','conditions':{'dlp':'iban','input_"
                   "tokens_above':10}},"
                   " {'id':'w','priority':3,'action':'DENY','scope':{'agents':['agent-1']},"
                   "  "
                   "'conditions':{'time':{'start':'22:00','end':'06:00'},'user':'*@example.com','"
                   "model':'GPT-4*'}}]");
    json_t *body =
        J("{'agent_id':'agent-1','gate_id':null,'action':'chat','method':'POST','path':'/v1/chat/"
          "completions',"
          "'model':'gpt-4o','user':'alice@example.com','tool_names':['read','delete_all'],"
          "'dlp_detectors':['iban'],'estimated_input_tokens':50,'now':1705276800,'headers':{'X-Env'"
          ":'prod'}}");
    const char *scratch[8];
    rl_policy_input_t in;
    rl_policy_error_t err;
    assert_int_equal(rl_policy_input_from_json(body, &in, scratch, 8, &err), RL_OK);
    rl_policy_result_t r = eval(set, &in);
    assert_string_equal(r.policy_id, "t");
    json_t *out = rl_policy_result_to_json(&r);
    char *s = json_dumps(out, JSON_COMPACT);
    assert_string_equal(
        s, "{\"decision\":\"DENY\",\"status\":\"DENIED\",\"matched\":true,\"error\":false,"
           "\"policy_id\":\"t\",\"policy_name\":null,\"message\":\"no deletes\",\"reason\":null}");
    free(s);
    json_decref(out);

    /* walk the same cases through the struct and through JSON */
    const char *tools_alt[] = {"read", "delete_all"};
    const char *dlp_alt[] = {"iban"};
    rl_policy_header_t hs[] = {{"x-env", "prod"}};
    for (int variant = 0; variant < 4; variant++) {
        json_t *b = json_deep_copy(body);
        rl_policy_input_t direct = {.agent_id = "agent-1",
                                    .action = "chat",
                                    .method = "POST",
                                    .path = "/v1/chat/completions",
                                    .model = "gpt-4o",
                                    .user = "alice@example.com",
                                    .tool_names = tools_alt,
                                    .ntools = 2,
                                    .dlp_detectors = dlp_alt,
                                    .ndlp = 1,
                                    .estimated_input_tokens = 50,
                                    .now_unix = 1705276800,
                                    .headers = hs,
                                    .nheaders = 1};
        if (variant >= 1) {
            json_object_set_new(b, "headers", json_object());
            direct.nheaders = 0;
        }
        if (variant >= 2) {
            json_object_del(b, "dlp_detectors");
            direct.ndlp = 0;
        }
        if (variant >= 3) {
            json_object_del(b, "estimated_input_tokens");
            direct.estimated_input_tokens = -1;
        }
        assert_int_equal(rl_policy_input_from_json(b, &in, scratch, 8, &err), RL_OK);
        rl_policy_result_t a = eval(set, &in), c = eval(set, &direct);
        assert_int_equal(a.action, c.action);
        assert_string_equal(a.policy_id, c.policy_id);
        assert_int_equal(a.matched, c.matched);
        json_decref(b);
    }
    json_decref(body);

    json_t *bad = J("{'action':'chatt'}");
    assert_int_equal(rl_policy_input_from_json(bad, &in, scratch, 8, &err), RL_ERR_INVALID);
    assert_string_equal(err.message, "action: must be chat, embedding, mcp, tool_call or http");
    json_decref(bad);
    bad = J("{}");
    int64_t before = (int64_t)time(NULL);
    assert_int_equal(rl_policy_input_from_json(bad, &in, scratch, 0, &err), RL_OK);
    assert_true(in.now_unix >= before && in.now_unix <= before + 5);
    assert_int_equal(in.estimated_input_tokens, -1);
    assert_null(in.model);
    assert_int_equal(in.ntools, 0);
    json_decref(bad);
    bad = J("{'modle':'x'}");
    assert_int_equal(rl_policy_input_from_json(bad, &in, scratch, 8, &err), RL_ERR_INVALID);
    assert_string_equal(err.field, "modle");
    json_decref(bad);
    bad = J("{'tool_names':['a','b','c']}");
    assert_int_equal(rl_policy_input_from_json(bad, &in, scratch, 2, &err), RL_ERR_INVALID);
    json_decref(bad);
    bad = J("{'headers':{'a':1}}");
    assert_int_equal(rl_policy_input_from_json(bad, &in, scratch, 2, &err), RL_ERR_INVALID);
    assert_non_null(strstr(err.message, "value of \"a\" must be a string"));
    json_decref(bad);

    rl_policy_result_t er;
    rl_policy_evaluate(NULL, &in, &er);
    out = rl_policy_result_to_json(&er);
    assert_string_equal(json_string_value(json_object_get(out, "decision")), "DENY");
    assert_true(json_is_true(json_object_get(out, "error")));
    assert_true(json_is_null(json_object_get(out, "policy_id")));
    json_decref(out);
    rl_policy_set_destroy(set);
}

/* ---- many threads on one set ---- */

#define NPOL 20

/* Twenty policies of the kinds a tenant writes; none matches base(). */
static const char *TWENTY =
    "[{'id':'p00','priority':0,'action':'DENY','scope':{'agents':['agent-9']}},"
    " {'id':'p01','priority':1,'action':'DENY','conditions':{'action':'mcp','tool':['delete_*','"
    "drop_*']}},"
    " {'id':'p02','priority':2,'action':'DENY','conditions':{'model':['o1*','gpt-4.5*'],'user':'"
    "intern-*'}},"
    " {'id':'p03','priority':3,'action':'FLAG','conditions':{'input_tokens_above':100000}},"
    " {'id':'p04','priority':4,'action':'DENY','conditions':{'path':'/v1/admin/*'}},"
    " {'id':'p05','priority':5,'action':'DENY','conditions':{'method':['DELETE','PUT']}},"
    " {'id':'p06','priority':6,'action':'FLAG','conditions':{'dlp':['credit_card','iban']}},"
    " {'id':'p07','priority':7,'action':'DENY','scope':{'gates':['gate-7']},'conditions':{'model':'"
    "claude-*'}},"
    " {'id':'p08','priority':8,'action':'DENY','conditions':{'headers':{'x-env':'staging*'}}},"
    " {'id':'p09','priority':9,'action':'DENY','conditions':{'action':'chat','time':{'start':'01:"
    "00','end':'05:00','tz':'Europe/Paris'}}},"
    " {'id':'p10','priority':10,'action':'FLAG','conditions':{'user':['*@contractor.example','"
    "guest']}},"
    " {'id':'p11','priority':11,'action':'DENY','conditions':{'tool':{'regex':'^(rm|shell|exec)_'}}"
    "},"
    " {'id':'p12','priority':12,'action':'DENY','conditions':{'action':'embedding','model':'text-"
    "embedding-3-large'}},"
    " {'id':'p13','priority':13,'action':'FLAG','conditions':{'not':{'headers':{'x-renlayer-user':"
    "true}},'action':'http'}},"
    " {'id':'p14','priority':14,'action':'DENY','conditions':{'any_of':[{'model':'*-32k'},{'input_"
    "tokens_above':200000}]}},"
    " {'id':'p15','priority':15,'action':'DENY','conditions':{'path':'*/files/*','method':'POST'}},"
    " {'id':'p16','priority':16,'action':'DENY','conditions':{'time':{'start':'22:00','end':'06:00'"
    ",'tz':'America/New_York','days':['sat','sun']}}},"
    " {'id':'p17','priority':17,'action':'FLAG','conditions':{'model':{'regex':'preview$'}}},"
    " {'id':'p18','priority':18,'action':'DENY','scope':{'agents':['agent-1'],'gates':['gate-x']}},"
    " {'id':'p19','priority':19,'action':'DENY','conditions':{'user':'blocked@example.com'}}]";

typedef struct {
    rl_policy_input_t in;
    const char *expect_id; /* "" = no match */
    rl_policy_action_t expect;
} tcase_t;

static const char *T_TOOLS_RM[] = {"read", "rm_rf"};
static const char *T_TOOLS_DEL[] = {"delete_user"};
static const char *T_DLP[] = {"email", "iban"};

static size_t thread_cases(tcase_t *c)
{
    size_t n = 0;
    c[n++] = (tcase_t){base(), "", RL_POLICY_ALLOW};
    c[n] = (tcase_t){base(), "p00", RL_POLICY_DENY};
    c[n++].in.agent_id = "agent-9";
    c[n] = (tcase_t){base(), "p01", RL_POLICY_DENY};
    c[n].in.action = "mcp";
    c[n].in.tool_names = T_TOOLS_DEL;
    c[n++].in.ntools = 1;
    c[n] = (tcase_t){base(), "p11", RL_POLICY_DENY};
    c[n].in.tool_names = T_TOOLS_RM;
    c[n++].in.ntools = 2;
    c[n] = (tcase_t){base(), "p06", RL_POLICY_FLAG};
    c[n].in.dlp_detectors = T_DLP;
    c[n++].in.ndlp = 2;
    c[n] = (tcase_t){base(), "p09", RL_POLICY_DENY};
    c[n++].in.now_unix = WINTER_MON + H(2, 0); /* 03:00 Paris */
    c[n] = (tcase_t){base(), "p17", RL_POLICY_FLAG};
    c[n++].in.model = "gpt-4o-PREVIEW"; /* model regex is case-insensitive */
    c[n] = (tcase_t){base(), "p19", RL_POLICY_DENY};
    c[n++].in.user = "blocked@example.com";
    return n;
}

typedef struct {
    const rl_policy_set_t *set;
    const tcase_t *cases;
    size_t ncases;
    atomic_int *mismatches;
    int iterations;
} targ_t;

static void *thread_main(void *p)
{
    targ_t *a = p;
    for (int i = 0; i < a->iterations; i++) {
        const tcase_t *c = &a->cases[(size_t)i % a->ncases];
        rl_policy_result_t r;
        rl_policy_evaluate(a->set, &c->in, &r);
        if (r.error || r.action != c->expect || strcmp(r.policy_id, c->expect_id) != 0)
            atomic_fetch_add(a->mismatches, 1);
    }
    return NULL;
}

static void four_threads_share_a_set(void **state)
{
    (void)state;
    rl_policy_set_t *set = compile_ok(TWENTY);
    assert_int_equal(rl_policy_set_count(set), NPOL);
    tcase_t cases[16];
    size_t n = thread_cases(cases);
    for (size_t i = 0; i < n; i++) { /* the expectations hold single-threaded first */
        rl_policy_result_t r = eval(set, &cases[i].in);
        if (r.error || r.action != cases[i].expect || strcmp(r.policy_id, cases[i].expect_id) != 0)
            fail_msg("case %zu: got %s from \"%s\" (%s)", i, rl_policy_action_str(r.action),
                     r.policy_id, r.reason);
    }
    atomic_int mismatches;
    atomic_init(&mismatches, 0);
    pthread_t th[4];
    targ_t args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (targ_t){set, cases, n, &mismatches, 20000};
        assert_int_equal(pthread_create(&th[i], NULL, thread_main, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(atomic_load(&mismatches), 0);
    rl_policy_set_destroy(set);
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Prints ns per evaluation of the twenty-policy set; asserts nothing about
 * speed (sanitizer builds are several times slower). */
static void timing(void **state)
{
    (void)state;
    rl_policy_set_t *set = compile_ok(TWENTY);
    tcase_t cases[16];
    thread_cases(cases);
    const char *tools[] = {"read_file", "search"};
    rl_policy_header_t hs[] = {{"x-renlayer-user", "alice"}, {"x-env", "prod"}};
    rl_policy_input_t miss = base(); /* every policy evaluated, none matches */
    miss.tool_names = tools;
    miss.ntools = 2;
    miss.headers = hs;
    miss.nheaders = 2;
    struct {
        const char *what;
        const rl_policy_input_t *in;
    } runs[] = {{"no match (all 20 evaluated)", &miss},
                {"match at p06 (dlp)", &cases[4].in},
                {"match at p17 (regex, 18th)", &cases[6].in}};
    volatile unsigned sink = 0;
    for (size_t k = 0; k < sizeof runs / sizeof runs[0]; k++) {
        enum { BATCHES = 9, ITERS = 50000 };
        double ns[BATCHES];
        rl_policy_result_t r;
        for (int i = 0; i < 1000; i++)
            rl_policy_evaluate(set, runs[k].in, &r);
        for (int b = 0; b < BATCHES; b++) {
            double t0 = now_ns();
            for (int i = 0; i < ITERS; i++) {
                rl_policy_evaluate(set, runs[k].in, &r);
                sink += (unsigned)r.action;
            }
            ns[b] = (now_ns() - t0) / ITERS;
        }
        for (int a = 1; a < BATCHES; a++) /* insertion sort: best and median */
            for (int b = a; b > 0 && ns[b] < ns[b - 1]; b--) {
                double t = ns[b];
                ns[b] = ns[b - 1];
                ns[b - 1] = t;
            }
        printf("rl_policy_evaluate, %d policies, %s: %.0f ns best, %.0f ns median\n", NPOL,
               runs[k].what, ns[0], ns[BATCHES / 2]);
        assert_false(r.error);
    }
    (void)sink;
    rl_policy_set_destroy(set);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(empty_set_allows),
        cmocka_unit_test(empty_conditions_match_everything),
        cmocka_unit_test(action_condition),
        cmocka_unit_test(method_condition),
        cmocka_unit_test(path_globs),
        cmocka_unit_test(model_is_case_insensitive),
        cmocka_unit_test(tool_condition),
        cmocka_unit_test(user_condition),
        cmocka_unit_test(header_condition),
        cmocka_unit_test(dlp_condition),
        cmocka_unit_test(tokens_condition),
        cmocka_unit_test(time_window_utc),
        cmocka_unit_test(time_window_across_midnight),
        cmocka_unit_test(time_window_timezones),
        cmocka_unit_test(combinators),
        cmocka_unit_test(priority_and_ties),
        cmocka_unit_test(disabled_policies_are_skipped),
        cmocka_unit_test(scope_by_agent_and_gate),
        cmocka_unit_test(compile_errors_are_precise),
        cmocka_unit_test(compile_limits),
        cmocka_unit_test(validate_one_at_save_time),
        cmocka_unit_test(catastrophic_regex_fails_closed),
        cmocka_unit_test(fails_closed),
        cmocka_unit_test(needs_bits),
        cmocka_unit_test(json_input_gives_the_same_answer),
        cmocka_unit_test(four_threads_share_a_set),
        cmocka_unit_test(timing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
