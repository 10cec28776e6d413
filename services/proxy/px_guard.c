/* px_guard: policies and DLP on a request (docs/proxy.md, "Policies and
 * DLP"), and the helpers the response side (px_guard_response.c) shares.
 *
 * The DLP scan runs first (policies may test its detectors), the agent's
 * policy set decides next, and the DLP verdict is applied last:
 *   policy DENY            -> 403 DENIED (whatever DLP found)
 *   DLP BLOCKED            -> 403 DLP_BLOCKED (a policy ALLOW does not lift it)
 *   redact findings        -> the redacted body is forwarded
 *   policy FLAG            -> FLAGGED (outranks DLP_WARNED as the trace status)
 *   DLP WARNED             -> DLP_WARNED
 *   a policy ALLOW match   -> ALLOWED with its id recorded
 * The body is read as the upstream reads it: JSON escapes of plain ASCII
 * decoded, a query string and a form body percent-decoded (rl_query).
 *
 * Traces never carry a detected value: when a request had findings, the
 * trace's copy of it has every finding redacted (warn and block ones
 * included), or is dropped when that is not possible. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "px_guard_internal.h"
#include "rl_json.h"
#include "rl_log.h"
#include "rl_policy.h"
#include "rl_query.h"

/* ---- shared with the response side ------------------------------------------------------- */

rl_dlp_scratch_t *px_guard_scratch(px_worker_t *w)
{
    if (w->dlp_scratch == NULL && rl_dlp_scratch_create(&w->dlp_scratch) != RL_OK) {
        rl_error_clear();
        w->dlp_scratch = NULL; /* scans then make their own */
    }
    return w->dlp_scratch;
}

bool px_guard_engine_active(const rl_dlp_engine_t *e)
{
    return e && rl_dlp_engine_rule_count(e) > 0;
}

void px_guard_add_finding(px_request_t *req, const rl_dlp_finding_t *f, const char *where)
{
    if (req->nfindings >= PX_MAX_FINDINGS)
        return;
    /* one entry per detector and place: the trace says what, not how often */
    for (size_t i = 0; i < req->nfindings; i++) {
        px_finding_t *x = &req->findings[i];
        if (strcmp(x->detector, f->detector) == 0 && strcmp(x->where, where) == 0 &&
            strcmp(x->action, rl_dlp_action_str(f->action)) == 0)
            return;
    }
    px_finding_t *x = &req->findings[req->nfindings++];
    snprintf(x->detector, sizeof x->detector, "%s", f->detector);
    snprintf(x->severity, sizeof x->severity, "%s", rl_dlp_severity_str(f->severity));
    snprintf(x->where, sizeof x->where, "%s", where);
    snprintf(x->action, sizeof x->action, "%s", rl_dlp_action_str(f->action));
}

/* Copies text into out with every finding (any action) redacted. False when
 * that is not possible (findings were dropped, out's bound): out is empty. */
bool px_guard_redact_all(const char *text, size_t len, const rl_dlp_findings_t *f, rl_buf_t *out)
{
    rl_buf_reset(out);
    if (rl_dlp_redact_every(text, len, 0, f, out) != RL_OK) {
        rl_error_clear();
        rl_buf_reset(out);
        return false;
    }
    return true;
}

bool px_guard_any_redact(const rl_dlp_findings_t *f)
{
    for (size_t i = 0; i < f->len; i++)
        if (f->items[i].action == RL_DLP_ACTION_REDACT)
            return true;
    return false;
}

/* "AWS_SECRET_KEY, EMAIL": the detectors of the blocking findings (or all). */
void px_guard_detector_list(const rl_dlp_findings_t *f, bool blocking_only, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < f->len; i++) {
        const rl_dlp_finding_t *x = &f->items[i];
        if (blocking_only && rl_dlp_finding_verdict(x) != RL_DLP_BLOCKED)
            continue;
        if (strstr(out, x->detector))
            continue;
        int w = snprintf(out + n, cap - n, "%s%s", n ? ", " : "", x->detector);
        if (w < 0 || (size_t)w >= cap - n)
            break;
        n += (size_t)w;
    }
}

/* Copies text into req->reason, cut at a UTF-8 character boundary. */
void px_guard_set_reason(px_request_t *req, const char *text)
{
    size_t n = strlen(text);
    if (n >= sizeof req->reason) {
        n = sizeof req->reason - 1;
        while (n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(req->reason, text, n);
    req->reason[n] = '\0';
}

void px_guard_count(px_request_t *req, const char *status)
{
    px_metrics_t *m = &req->worker->engine->m;
    if (strcmp(status, PX_STATUS_DENIED) == 0)
        rl_counter_add(m->denied, 1);
    else if (strcmp(status, PX_STATUS_FLAGGED) == 0)
        rl_counter_add(m->flagged, 1);
    else if (strcmp(status, PX_STATUS_DLP_BLOCKED) == 0)
        rl_counter_add(m->dlp_blocked, 1);
    else if (strcmp(status, PX_STATUS_DLP_WARNED) == 0)
        rl_counter_add(m->dlp_warned, 1);
}

/* ---- the request ------------------------------------------------------------------------ */

static const char *policy_header(void *ctx, const char *name)
{
    px_request_t *req = ctx;
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

static void evaluate_policies(px_request_t *req, const rl_dlp_findings_t *f,
                              rl_policy_result_t *out)
{
    const rl_policy_set_t *set = req->agent->policy_set;
    memset(out, 0, sizeof *out);
    out->action = RL_POLICY_ALLOW;
    out->policy_id = "";
    out->policy_name = "";
    out->message = "";
    if (set == NULL)
        return; /* no policy set: every request is allowed */
    static const char *const actions[] = {"chat", "embedding", "mcp", "tool_call", "http"};
    const char *tools[PX_MAX_TOOL_CALLS + 1];
    size_t ntools = 0;
    if (req->info.tool_name[0])
        tools[ntools++] = req->info.tool_name;
    for (size_t i = 0; i < req->info.ntool_calls && ntools < PX_MAX_TOOL_CALLS + 1; i++)
        if (req->info.tool_calls[i].name[0])
            tools[ntools++] = req->info.tool_calls[i].name;
    const char *dets[PX_GUARD_FINDINGS_MAX];
    size_t ndets = 0;
    for (size_t i = 0; i < f->len && ndets < PX_GUARD_FINDINGS_MAX; i++) {
        bool seen = false;
        for (size_t j = 0; j < ndets && !seen; j++)
            seen = strcmp(dets[j], f->items[i].detector) == 0;
        if (!seen)
            dets[ndets++] = f->items[i].detector;
    }
    rl_policy_input_t in = {
        .agent_id = req->agent->id,
        .gate_id = req->gate ? req->gate->id : NULL,
        .action = (size_t)req->info.action < sizeof actions / sizeof actions[0]
                      ? actions[req->info.action]
                      : NULL,
        .method = req->method,
        .path = req->path,
        .model = req->info.model[0] ? req->info.model : NULL,
        .user = req->user,
        .tool_names = tools,
        .ntools = ntools,
        .dlp_detectors = dets,
        .ndlp = ndets,
        .estimated_input_tokens = req->info.estimated_input_tokens,
        .now_unix = req->t_arrive_wall_us / 1000000,
        .header = policy_header,
        .header_ctx = req,
    };
    rl_policy_evaluate(set, &in, out);
    if (out->error)
        rl_counter_add(req->worker->engine->m.policy_errors, 1);
}

/* Makes body the request's body (moved: body is left empty) and runs the
 * protocol step again on it (pin, defaults), so fallbacks use it too. False
 * when it no longer reads (the old body is gone either way). */
static bool replace_body(px_request_t *req, rl_buf_t *body)
{
    rl_buf_move(&req->body, body);
    rl_buf_reset(&req->rewritten);
    if (px_protocol_prepare(req->method, req->path, req->body.data, req->body.len, req->gate,
                            req->gate->kind, &req->info, &req->rewritten) != RL_OK) {
        rl_error_clear();
        return false;
    }
    req->prepared_for = req->gate;
    return true;
}

/* Forwards the body with the redact findings replaced. False when the
 * redacted body cannot be forwarded. */
static bool forward_redacted(px_request_t *req, const rl_dlp_findings_t *f)
{
    rl_buf_t red;
    rl_buf_init(&red, req->body.max + 64 * 1024);
    if (rl_dlp_redact(req->body.data, req->body.len, 0, f, &red) != RL_OK) {
        rl_error_clear();
        rl_buf_free(&red);
        return false;
    }
    return replace_body(req, &red);
}

static void deny(px_request_t *req, const char *status, const char *code, const char *message)
{
    req->status = status;
    px_guard_set_reason(req, message);
    px_guard_count(req, status);
    px_request_publish_decision(req);
    px_request_respond_error(req, 403, code, message);
}

/* Form-encoded text (a URL query string, an x-www-form-urlencoded body)
 * scanned decoded: every form encoder writes '@' as %40 and '/' as %2F, so
 * its raw bytes hide e-mails and keys. Zeroed: nothing scanned, nothing found. */
typedef struct {
    rl_buf_t text; /* decoded (rl_query_decode) */
    rl_query_pair_t *pairs;
    size_t npairs;
    rl_dlp_findings_t found; /* offsets into text */
    bool failed;             /* the scan failed */
} form_scan_t;

static void scan_form(px_request_t *req, const char *s, size_t n, form_scan_t *q)
{
    rl_buf_init(&q->text, n + 1); /* decoding never grows it */
    rl_dlp_findings_init(&q->found, PX_GUARD_FINDINGS_MAX);
    rl_status_t st = rl_query_decode(s, n, &q->text, &q->pairs, &q->npairs);
    if (st == RL_OK)
        st = rl_dlp_scan(req->agent->tenant->dlp, RL_DLP_SCOPE_REQUEST, q->text.data, q->text.len,
                         px_guard_scratch(req->worker), &q->found);
    if (st != RL_OK) {
        q->failed = true;
        rl_counter_add(req->worker->engine->m.dlp_errors, 1);
        rl_error_clear();
    }
    for (size_t i = 0; i < q->found.len; i++)
        px_guard_add_finding(req, &q->found.items[i], "request");
}

static void form_scan_free(form_scan_t *q)
{
    rl_buf_free(&q->text);
    free(q->pairs);
    rl_dlp_findings_free(&q->found);
}

/* s[0..n) (what q scanned) with the pairs its redact findings touch
 * rewritten, or those of every finding when every (the trace's copy). */
static bool redact_form(const char *s, size_t n, const form_scan_t *q, bool every, rl_buf_t *out)
{
    if (rl_query_redact(s, n, q->pairs, q->npairs, &q->found, every, out) != RL_OK) {
        rl_error_clear();
        return false;
    }
    return true;
}

/* Forwards the query with the pairs its redact findings touch rewritten. */
static bool forward_redacted_query(px_request_t *req, const form_scan_t *q)
{
    size_t n = strlen(req->query);
    rl_buf_t out;
    rl_buf_init(&out, n + 64 * (q->npairs + 1));
    if (!redact_form(req->query, n, q, false, &out)) {
        rl_buf_free(&out);
        return false;
    }
    free(req->query_owned);
    req->query_owned = rl_buf_take(&out, NULL);
    req->query = req->query_owned ? req->query_owned : "";
    return true;
}

/* Forwards a form body with the pairs its redact findings touch rewritten. */
static bool forward_redacted_form(px_request_t *req, const form_scan_t *q)
{
    rl_buf_t out;
    rl_buf_init(&out, req->body.max + 64 * 1024);
    if (!redact_form(req->body.data, req->body.len, q, false, &out)) {
        rl_buf_free(&out);
        return false;
    }
    return replace_body(req, &out);
}

/* A body the upstream reads as a form: an HTTP call (not a model or MCP
 * API, whose bodies are JSON whatever the header says: curl -d sends JSON
 * as a form) with an x-www-form-urlencoded Content-Type. */
static bool form_body(const px_request_t *req)
{
    return req->info.action == PX_ACTION_HTTP && req->body.len > 0 &&
           rl_query_is_form_type(
               MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Content-Type"));
}

/* body's and query's findings in one list, for the verdict, the messages
 * and the policies' dlp condition (offsets are not used there). Owned by
 * out unless it is body itself. */
static const rl_dlp_findings_t *
both_findings(const rl_dlp_findings_t *body, const rl_dlp_findings_t *query, rl_dlp_findings_t *out)
{
    if (query->len == 0 && query->dropped == 0)
        return body;
    rl_dlp_findings_init(out, body->max + query->max);
    if (rl_dlp_findings_merge(out, body) != RL_OK || rl_dlp_findings_merge(out, query) != RL_OK) {
        rl_error_clear(); /* out of memory: what is missing counts as dropped, which blocks */
        out->dropped++;
        out->dropped_verdict = RL_DLP_BLOCKED;
    }
    return out;
}

/* Scans a JSON or plain body as sent (JSON that escapes plain ASCII in its
 * plain form, which is then forwarded) into f. False when the body could not
 * be prepared again (the request is then answered). */
static bool scan_body(px_request_t *req, rl_dlp_findings_t *f, bool *failed)
{
    rl_dlp_engine_t *e = req->agent->tenant->dlp;
    rl_buf_t plain;
    rl_buf_init(&plain, req->body.max + 64 * 1024);
    if (rl_json_plain_ascii(req->body.data, req->body.len, &plain) && !replace_body(req, &plain)) {
        deny(req, PX_STATUS_DLP_BLOCKED, "dlp_blocked",
             "Request blocked by RenLayer DLP: the request could not be scanned.");
        return false;
    }
    rl_buf_free(&plain); /* empty once taken */
    if (rl_dlp_scan(e, RL_DLP_SCOPE_REQUEST, req->body.data, req->body.len,
                    px_guard_scratch(req->worker), f) != RL_OK) {
        /* a custom pattern past its match limit: not scanned; the tenant's
         * fail-open/closed setting decides */
        *failed = true;
        rl_counter_add(req->worker->engine->m.dlp_errors, 1);
        rl_error_clear();
    }
    for (size_t i = 0; i < f->len; i++)
        px_guard_add_finding(req, &f->items[i], "request");
    if (f->len > 0 || f->dropped > 0) {
        req->trace_req_redacted = true;
        px_guard_redact_all(req->body.data, req->body.len, f, &req->trace_req);
    }
    return true;
}

bool px_guard_request(px_request_t *req)
{
    const px_tenant_t *tenant = req->agent->tenant;
    bool active = px_guard_engine_active(tenant->dlp);
    rl_dlp_findings_t f; /* a JSON or plain body's */
    rl_dlp_findings_init(&f, PX_GUARD_FINDINGS_MAX);
    form_scan_t form = {0}, q = {0}; /* a form body's, the query's */
    bool is_form = active && form_body(req), failed = false;
    if (is_form) {
        scan_form(req, req->body.data, req->body.len, &form);
        failed = form.failed;
        if (form.found.len > 0 || form.found.dropped > 0) {
            req->trace_req_redacted = true;
            redact_form(req->body.data, req->body.len, &form, true, &req->trace_req);
        }
    } else if (active && req->body.len > 0 && !scan_body(req, &f, &failed)) {
        rl_dlp_findings_free(&f);
        return false;
    }
    if (active && req->query && req->query[0]) {
        scan_form(req, req->query, strlen(req->query), &q);
        failed = failed || q.failed;
    }
    bool scanned = !failed;
    const rl_dlp_findings_t *body_found = is_form ? &form.found : &f;
    rl_dlp_findings_t merged;
    const rl_dlp_findings_t *all = both_findings(body_found, &q.found, &merged);
    rl_dlp_verdict_t verdict = rl_dlp_verdict(all);

    rl_policy_result_t pr;
    evaluate_policies(req, all, &pr);
    if (pr.matched || pr.error)
        req->policy_id = pr.policy_id && pr.policy_id[0] ? pr.policy_id : NULL;

    char msg[600];
    bool ok = true;
    if (pr.action == RL_POLICY_DENY) {
        if (pr.error)
            snprintf(msg, sizeof msg,
                     "Request denied by RenLayer: policy %s could not be "
                     "evaluated (%s).",
                     pr.policy_id[0] ? pr.policy_id : "(unknown)",
                     pr.reason[0] ? pr.reason : "error");
        else if (pr.message[0])
            snprintf(msg, sizeof msg, "%s", pr.message);
        else
            snprintf(msg, sizeof msg, "Request denied by RenLayer policy '%s'.",
                     pr.policy_name[0] ? pr.policy_name : pr.policy_id);
        deny(req, PX_STATUS_DENIED, "policy_denied", msg);
        ok = false;
    } else if (verdict == RL_DLP_BLOCKED || (!scanned && tenant->fail_closed)) {
        char dets[300];
        px_guard_detector_list(all, true, dets, sizeof dets);
        if (dets[0])
            snprintf(msg, sizeof msg,
                     "Request blocked by RenLayer DLP: sensitive data detected "
                     "(%s).",
                     dets);
        else
            snprintf(msg, sizeof msg,
                     "Request blocked by RenLayer DLP: the request could not "
                     "be scanned.");
        deny(req, PX_STATUS_DLP_BLOCKED, "dlp_blocked", msg);
        ok = false;
    } else if ((px_guard_any_redact(body_found) &&
                !(is_form ? forward_redacted_form(req, &form) : forward_redacted(req, &f))) ||
               (px_guard_any_redact(&q.found) && !forward_redacted_query(req, &q))) {
        deny(req, PX_STATUS_DLP_BLOCKED, "dlp_blocked",
             "Request blocked by RenLayer DLP: sensitive data could not be redacted.");
        ok = false;
    } else if (pr.matched && pr.action == RL_POLICY_FLAG) {
        req->status = PX_STATUS_FLAGGED;
        snprintf(req->reason, sizeof req->reason, "%s",
                 pr.message[0] ? pr.message : pr.policy_name);
    } else if (verdict == RL_DLP_WARNED) {
        req->status = PX_STATUS_DLP_WARNED;
        char dets[200];
        px_guard_detector_list(all, false, dets, sizeof dets);
        snprintf(req->reason, sizeof req->reason, "sensitive data detected (%s)", dets);
    } else {
        req->status = PX_STATUS_ALLOWED;
    }
    if (ok)
        px_guard_count(req, req->status);
    if (all == &merged)
        rl_dlp_findings_free(&merged);
    form_scan_free(&form);
    form_scan_free(&q);
    rl_dlp_findings_free(&f);
    return ok;
}
