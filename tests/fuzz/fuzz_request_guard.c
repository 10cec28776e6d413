/* Fuzzes the proxy's policies and DLP on a request (px_guard_request) as the
 * request path drives it: a body on an endpoint, read by the protocol step,
 * then scanned, decided and redacted. Answering and publishing are recorded
 * instead of sent (the link wraps px_request_respond_error,
 * px_request_publish_decision and MHD's header lookup).
 *
 * Input: [engine][endpoint][policy set][flags][header value][query][body...];
 * engines: the built-ins as shipped, every built-in blocking, every built-in
 * redacting, and one with a custom rule that backtracks past its match limit.
 * Properties: a request is either passed on (ALLOWED, FLAGGED, DLP_WARNED;
 * nothing answered) or refused with one 403 and one decision (DENIED,
 * DLP_BLOCKED), never both; a scan that failed refuses when the tenant fails
 * closed; what goes upstream holds no value that
 * blocks or redacts, read as the upstream reads it (JSON escapes such as
 * "\/" and "\u0041" decoded); what goes to the trace holds no detected value
 * at all, nor do the reason and the message; a query string's values are
 * held to the same, decoded as a form reader decodes them, and so is a form
 * body on an HTTP call; and a body with '/' written
 * "\/" gets the same verdict as the body itself. */
#include <jansson.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "fuzz_support.h"
#include "px_internal.h"
#include "px_protocol.h"
#include "rl_dlp.h"
#include "rl_policy.h"
#include "rl_query.h"

/* ---- what the guard would have sent --------------------------------------------------- */

static struct {
    int responses, decisions, http_status;
    char code[64], message[1024];
} sent;

static const char *header_value; /* X-Fuzz for header policies; NULL: absent */
static const char *content_type; /* the request's Content-Type; NULL: absent */

void __wrap_px_request_respond_error(px_request_t *req, int http_status, const char *code,
                                     const char *message)
{
    (void)req;
    sent.responses++;
    sent.http_status = http_status;
    snprintf(sent.code, sizeof sent.code, "%s", code);
    snprintf(sent.message, sizeof sent.message, "%s", message);
}

void __wrap_px_request_publish_decision(px_request_t *req)
{
    (void)req;
    sent.decisions++;
}

const char *__wrap_MHD_lookup_connection_value(struct MHD_Connection *c, enum MHD_ValueKind kind,
                                               const char *key)
{
    (void)c, (void)kind;
    if (strcasecmp(key, "Content-Type") == 0)
        return content_type;
    return strcasecmp(key, "X-Fuzz") == 0 ? header_value : NULL;
}

/* ---- the tenants' set-ups ---------------------------------------------------------------- */

#define NENGINES 4
static rl_dlp_engine_t *engines[NENGINES];
static rl_dlp_scratch_t *scratch;

static rl_dlp_engine_t *build(rl_dlp_action_t action, bool slow_rule)
{
    rl_dlp_config_t *cfg;
    FUZZ_CHECK(rl_dlp_config_create(&cfg) == RL_OK, "config");
    for (int d = 0; action && d < RL_DLP_BUILTIN_COUNT; d++)
        FUZZ_CHECK(rl_dlp_config_set_builtin(cfg, (rl_dlp_builtin_t)d, true, 0, action) == RL_OK,
                   "override");
    if (slow_rule) {
        rl_dlp_rule_t r = {.id = "slow-rule",
                           .name = "backtracks",
                           .pattern = "(a+)+\\d",
                           .severity = RL_DLP_SEVERITY_LOW,
                           .action = RL_DLP_ACTION_WARN,
                           .scope = RL_DLP_SCOPE_BOTH,
                           .enabled = true};
        FUZZ_CHECK(rl_dlp_config_add_rule(cfg, &r) == RL_OK, "custom rule");
    }
    rl_dlp_engine_t *e;
    FUZZ_CHECK(rl_dlp_engine_create(cfg, &e) == RL_OK, "engine");
    rl_dlp_config_destroy(cfg);
    return e;
}

#define NSETS 4
static rl_policy_set_t *sets[NSETS]; /* [0] stays NULL: no policies */
static const char *const set_json[NSETS] = {
    NULL,
    /* deny on a DLP finding of a kind, flag a model, allow the rest by header */
    "[{\"id\":\"p-deny-email\",\"priority\":1,\"conditions\":{\"dlp\":[\"EMAIL\",\"PHONE\"]},"
    "\"action\":\"DENY\",\"message\":\"No contact data, please.\"},"
    " {\"id\":\"p-flag-mini\",\"priority\":2,\"conditions\":{\"model\":\"*mini*\"},"
    "\"action\":\"FLAG\",\"message\":\"small model\"},"
    " {\"id\":\"p-allow-hdr\",\"priority\":3,\"conditions\":{\"headers\":{\"X-Fuzz\":\"ok*\"}},"
    "\"action\":\"ALLOW\"}]",
    /* tools, actions, tokens, any_of / not */
    "[{\"id\":\"p-tools\",\"priority\":1,\"conditions\":{\"tool\":[{\"regex\":\"^(rm|exec)_\"},"
    "\"shell\"]},"
    "\"action\":\"DENY\"},"
    " {\"id\":\"p-big\",\"priority\":2,\"conditions\":{\"input_tokens_above\":40},"
    "\"action\":\"FLAG\",\"message\":\"large prompt\"},"
    " {\"id\":\"p-any\",\"priority\":3,\"conditions\":{\"any_of\":[{\"action\":\"mcp\"},"
    "{\"not\":{\"dlp\":\"*\"},\"headers\":{\"X-Fuzz\":true}}]},\"action\":\"DENY\"}]",
    /* a policy that fails at evaluation: a regex past its match limit denies */
    "[{\"id\":\"p-slow\",\"priority\":1,\"conditions\":{\"headers\":{\"X-Fuzz\":{\"regex\":\"^(a+)+"
    "\\\\d\"}}},"
    "\"action\":\"ALLOW\"}]",
};

typedef struct {
    px_kind_t kind;
    const char *method, *path;
} endpoint_t;

static const endpoint_t endpoints[] = {
    {PX_KIND_OPENAI, "POST", "/v1/chat/completions"},
    {PX_KIND_OPENAI, "POST", "/v1/responses"},
    {PX_KIND_OPENAI, "POST", "/v1/embeddings"},
    {PX_KIND_ANTHROPIC, "POST", "/v1/messages"},
    {PX_KIND_MCP, "POST", "/mcp"},
    {PX_KIND_HTTP, "POST", "/anything"},
};

static void init(void)
{
    engines[0] = build(0, false);
    engines[1] = build(RL_DLP_ACTION_BLOCK, false);
    engines[2] = build(RL_DLP_ACTION_REDACT, false);
    engines[3] = build(0, true);
    FUZZ_CHECK(rl_dlp_scratch_create(&scratch) == RL_OK, "scratch");
    for (int i = 1; i < NSETS; i++) {
        json_error_t jerr;
        json_t *j = json_loads(set_json[i], 0, &jerr);
        FUZZ_CHECK(j != NULL, "set %d: %s", i, jerr.text);
        rl_policy_error_t err;
        FUZZ_CHECK(rl_policy_compile(j, &sets[i], &err) == RL_OK, "set %d: %s", i, err.message);
        json_decref(j);
    }
}

/* ---- reading a body as the upstream does -------------------------------------------------- */

/* text as the upstream reads it: a form decoded as a form reader decodes
 * it, JSON with its escapes of plain ASCII decoded, anything else as is. */
static void read_as_upstream(const char *text, size_t n, bool form, rl_buf_t *out)
{
    rl_buf_reset(out);
    if (form) {
        FUZZ_CHECK(rl_query_decode(text, n, out, NULL, NULL) == RL_OK, "form decode");
        return;
    }
    json_t *v = json_loadb(text ? text : "", n, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (v)
        fuzz_unescape_ascii(text, n, out);
    else
        rl_buf_append(out, text, n);
    json_decref(v);
}

/* Whether every place text holds v[0..n) is a finding of that value: then
 * the value itself was detected, not just one of its places. */
static bool only_where_found(const rl_buf_t *text, const rl_dlp_findings_t *f, const char *v,
                             size_t n)
{
    const char *end = text->data + text->len;
    for (const char *p = text->data; (p = memmem(p, (size_t)(end - p), v, n)) != NULL; p++) {
        size_t at = (size_t)(p - text->data);
        bool found = false;
        for (size_t i = 0; i < f->len && !found; i++)
            found = f->items[i].start == at && f->items[i].end == at + n;
        if (!found)
            return false;
    }
    return true;
}

/* ---- the properties of one request --------------------------------------------------------- */

/* What one input sets up around its body. */
typedef struct {
    int engine, set;
    const endpoint_t *ep;
    bool fail_closed, pin;
    bool form;         /* Content-Type: application/x-www-form-urlencoded */
    const char *query; /* the URL's query string, "" when none */
} case_t;

typedef struct {
    bool prepared, ok;
    const char *status;
} outcome_t;

static bool is(const char *a, const char *b)
{
    return a && strcmp(a, b) == 0;
}

/* Fixed texts (a policy's message, detector names) must not read as a finding. */
static void no_finding(rl_dlp_engine_t *e, const char *what, const char *text)
{
    rl_dlp_findings_t f;
    rl_dlp_findings_init(&f, 64);
    if (rl_dlp_scan(e, RL_DLP_SCOPE_REQUEST, text, strlen(text), scratch, &f) == RL_OK)
        FUZZ_CHECK(f.len == 0, "%s holds %s: %s", what, f.len ? f.items[0].detector : "", text);
    rl_error_clear();
    rl_dlp_findings_free(&f);
}

/* The query's findings, decoded as the guard decodes it: no value that blocks
 * or redacts may reach the upstream's decoding of the forwarded query. */
static void check_query(rl_dlp_engine_t *e, const case_t *c, const px_request_t *req,
                        const outcome_t *o)
{
    static rl_buf_t text = {.max = 1u << 20}, fwd = {.max = 1u << 20};
    FUZZ_CHECK(rl_query_decode(c->query, strlen(c->query), &text, NULL, NULL) == RL_OK, "decode");
    rl_dlp_findings_t f;
    rl_dlp_findings_init(&f, 256);
    rl_status_t st =
        rl_dlp_scan(e, RL_DLP_SCOPE_REQUEST, text.data ? text.data : "", text.len, scratch, &f);
    rl_error_clear();
    if (st != RL_OK && c->fail_closed)
        FUZZ_CHECK(!o->ok, "the query's scan failed, yet a fail-closed tenant passed it on");
    if (st == RL_OK && o->ok) {
        FUZZ_CHECK(rl_query_decode(req->query, strlen(req->query), &fwd, NULL, NULL) == RL_OK,
                   "decode the forwarded query");
        for (size_t i = 0; i < f.len; i++) {
            const rl_dlp_finding_t *x = &f.items[i];
            FUZZ_CHECK(x->action != RL_DLP_ACTION_BLOCK, "%s in the query passed on", x->detector);
            const char *v = text.data + x->start;
            size_t n = x->end - x->start;
            if (x->action == RL_DLP_ACTION_REDACT && only_where_found(&text, &f, v, n))
                FUZZ_CHECK(fwd.len == 0 || !memmem(fwd.data, fwd.len, v, n),
                           "%s at [%zu, %zu) of the query goes upstream", x->detector, x->start,
                           x->end);
        }
    }
    rl_dlp_findings_free(&f);
}

static void check_request(rl_dlp_engine_t *e, const case_t *c, const char *client_body,
                          size_t client_len, const px_request_t *req, const outcome_t *o)
{
    bool fail_closed = c->fail_closed;
    if (c->query[0])
        check_query(e, c, req, o);
    if (o->ok) {
        FUZZ_CHECK(sent.responses == 0 && sent.decisions == 0, "passed on, yet answered");
        FUZZ_CHECK(is(o->status, PX_STATUS_ALLOWED) || is(o->status, PX_STATUS_FLAGGED) ||
                       is(o->status, PX_STATUS_DLP_WARNED),
                   "passed on as %s", o->status);
    } else {
        FUZZ_CHECK(sent.responses == 1 && sent.decisions == 1 && sent.http_status == 403,
                   "refused with %d answers (%d), %d decisions", sent.responses, sent.http_status,
                   sent.decisions);
        FUZZ_CHECK((is(o->status, PX_STATUS_DENIED) && is(sent.code, "policy_denied")) ||
                       (is(o->status, PX_STATUS_DLP_BLOCKED) && is(sent.code, "dlp_blocked")),
                   "refused as %s with %s", o->status, sent.code);
        no_finding(e, "the message", sent.message);
    }
    no_finding(e, "the reason", req->reason);

    /* the body as the upstream reads it, and what a scan of that finds */
    static rl_buf_t body = {.max = 64u << 20}, fwd = {.max = 64u << 20}, trace = {.max = 64u << 20};
    /* a form body is read as a form on HTTP calls only (model APIs read JSON) */
    bool form = c->form && req->info.action == PX_ACTION_HTTP && client_len > 0;
    read_as_upstream(client_body, client_len, form, &body); /* req->body may be redacted now */
    rl_dlp_findings_t f;
    rl_dlp_findings_init(&f, 256);
    rl_status_t st =
        rl_dlp_scan(e, RL_DLP_SCOPE_REQUEST, body.data ? body.data : "", body.len, scratch, &f);
    rl_error_clear();
    if (st != RL_OK && fail_closed)
        FUZZ_CHECK(!o->ok, "a scan failed, yet a fail-closed tenant passed the request on");
    if (st != RL_OK) { /* fail open: what was not scanned passes as it is */
        rl_dlp_findings_free(&f);
        return;
    }
    const rl_buf_t *up = req->rewritten.len ? &req->rewritten : &req->body;
    read_as_upstream(up->data, up->len, form, &fwd);
    const rl_buf_t *tr = req->trace_req_redacted ? &req->trace_req : up;
    read_as_upstream(tr->data, tr->len, form, &trace);
    for (size_t i = 0; i < f.len; i++) {
        const rl_dlp_finding_t *x = &f.items[i];
        const char *v = body.data + x->start;
        size_t n = x->end - x->start;
        if (!only_where_found(&body, &f, v, n))
            continue; /* also written where no scan finds it (another context) */
        FUZZ_CHECK(trace.len == 0 || !memmem(trace.data, trace.len, v, n),
                   "%s at [%zu, %zu) in the trace", x->detector, x->start, x->end);
        if (o->ok && x->action != RL_DLP_ACTION_WARN)
            FUZZ_CHECK(fwd.len == 0 || !memmem(fwd.data, fwd.len, v, n),
                       "%s (%s) at [%zu, %zu) goes upstream", x->detector,
                       rl_dlp_action_str(x->action), x->start, x->end);
    }
    rl_dlp_findings_free(&f);
}

/* ---- one request ---------------------------------------------------------------------------- */

static outcome_t run(const case_t *c, const char *body, size_t len)
{
    static px_engine_t engine;
    static px_worker_t worker = {.engine = &engine};
    rl_dlp_engine_t *e = engines[c->engine];
    px_tenant_t tenant = {.fail_closed = c->fail_closed, .dlp = e};
    px_agent_t agent = {.id = "01a20bc0-0000-7000-8000-00000000a9e1",
                        .tenant = &tenant,
                        .policy_set = sets[c->set]};
    px_gate_t gate = {.id = "01a20bc0-0000-7000-8000-00000000ga7e",
                      .kind = c->ep->kind,
                      .pinned_model = c->pin ? "gpt-4o-mini" : NULL};
    px_request_t *req = calloc(1, sizeof *req);
    req->worker = &worker;
    req->agent = &agent;
    req->gate = &gate;
    snprintf(req->method, sizeof req->method, "%s", c->ep->method);
    req->path = c->ep->path;
    req->query = c->query;
    req->t_arrive_wall_us = 1790000000000000;
    rl_buf_init(&req->body, 1u << 20);
    rl_buf_init(&req->rewritten, (1u << 20) + 64 * 1024);
    rl_buf_init(&req->trace_req, (1u << 20) + 64 * 1024);
    rl_buf_append(&req->body, body, len);
    memset(&sent, 0, sizeof sent);

    outcome_t o = {0};
    /* classify: a body the protocol step refuses is answered 400 before the guard */
    o.prepared = px_protocol_prepare(req->method, req->path, req->body.data, req->body.len, &gate,
                                     gate.kind, &req->info, &req->rewritten) == RL_OK;
    rl_error_clear();
    if (o.prepared) {
        req->prepared_for = &gate;
        req->status = PX_STATUS_ALLOWED;
        o.ok = px_guard_request(req);
        o.status = req->status;
        check_request(e, c, body, len, req, &o);
    }
    rl_buf_free(&req->body);
    rl_buf_free(&req->rewritten);
    rl_buf_free(&req->trace_req);
    free(req->query_owned);
    free(req);
    return o;
}

/* body with every '/' written "\/" (only strings hold '/' in JSON). */
static void escape_slashes(const char *s, size_t n, rl_buf_t *out)
{
    rl_buf_reset(out);
    for (size_t i = 0; i < n; i++)
        rl_buf_append(out, s[i] == '/' ? "\\/" : s + i, s[i] == '/' ? 2 : 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (scratch == NULL)
        init();
    fuzz_input_t in = {data, size};
    case_t c = {.engine = fuzz_byte(&in) % NENGINES};
    c.ep = &endpoints[fuzz_byte(&in) % (sizeof endpoints / sizeof endpoints[0])];
    c.set = fuzz_byte(&in) % NSETS;
    uint8_t flags = fuzz_byte(&in);
    c.fail_closed = flags & 1;
    c.pin = flags & 2;
    char *hv = fuzz_take_str(&in, 64);
    header_value = flags & 4 ? hv : NULL;
    c.form = flags & 16;
    content_type = c.form ? "application/x-www-form-urlencoded; charset=utf-8" : "application/json";
    char *query = fuzz_take_str(&in, 128);
    c.query = flags & 8 ? query : "";
    const char *body = (const char *)in.p;
    size_t len = in.n;

    outcome_t a = run(&c, body, len);

    /* "\/" for '/' in a body that needs no re-encoding otherwise: the same verdict */
    static rl_buf_t escaped = {.max = 2u << 20};
    json_t *v = json_loadb(body, len, 0, NULL);
    char *compact = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    if (!c.form && a.prepared && compact && fuzz_same_bytes(compact, strlen(compact), body, len) &&
        memchr(body, '/', len)) {
        escape_slashes(body, len, &escaped);
        outcome_t b = run(&c, escaped.data, escaped.len);
        FUZZ_CHECK(b.prepared && a.ok == b.ok && is(a.status, b.status),
                   "%s plain, %s with \\/ escapes", a.status, b.status ? b.status : "(none)");
    }
    free(compact);
    free(hv);
    free(query);
    return 0;
}
