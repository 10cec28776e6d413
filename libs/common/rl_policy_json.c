/* The JSON face of the engine for the API: inputs and results of
 * POST /v1/policies/evaluate, and the names of actions and statuses. */
#include "rl_policy_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

const char *rl_policy_action_str(rl_policy_action_t a)
{
    switch (a) {
    case RL_POLICY_ALLOW:
        return "ALLOW";
    case RL_POLICY_FLAG:
        return "FLAG";
    case RL_POLICY_DENY:
        return "DENY";
    }
    return "DENY";
}

const char *rl_policy_status_str(rl_policy_action_t a)
{
    switch (a) {
    case RL_POLICY_ALLOW:
        return "ALLOWED";
    case RL_POLICY_FLAG:
        return "FLAGGED";
    case RL_POLICY_DENY:
        return "DENIED";
    }
    return "DENIED";
}

/* ---- the JSON form of inputs and results (POST /v1/policies/evaluate) ---- */

static const char *json_header(void *ctx, const char *lname)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)ctx, key, v)
    {
        size_t i = 0;
        for (; key[i] && lname[i]; i++) {
            char c = key[i];
            if (c >= 'A' && c <= 'Z')
                c = (char)(c + 32);
            if (c != lname[i])
                break;
        }
        if (key[i] == '\0' && lname[i] == '\0')
            return json_string_value(v);
    }
    return NULL;
}

static rl_status_t in_fail(rl_policy_error_t *err, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static rl_status_t in_fail(rl_policy_error_t *err, const char *field, const char *fmt, ...)
{
    rl_policy_error_t scratch;
    if (err == NULL)
        err = &scratch;
    memset(err, 0, sizeof *err);
    snprintf(err->field, sizeof err->field, "%s", field);
    char detail[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    snprintf(err->message, sizeof err->message, "%s: %s", field, detail);
    return rl_error(RL_ERR_INVALID, "%s", err->message);
}

rl_status_t rl_policy_input_from_json(const json_t *obj, rl_policy_input_t *in,
                                      const char **scratch, size_t nscratch, rl_policy_error_t *err)
{
    static const char *const strs[] = {"agent_id", "gate_id", "action", "method",
                                       "path",     "model",   "user"};
    if (!json_is_object(obj))
        return in_fail(err, "input", "must be an object");
    rl_policy_input_t r;
    memset(&r, 0, sizeof r);
    r.estimated_input_tokens = -1;
    r.now_unix = (int64_t)time(NULL);
    const char **dst[] = {&r.agent_id, &r.gate_id, &r.action, &r.method,
                          &r.path,     &r.model,   &r.user};
    size_t used = 0;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        bool done = false;
        for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
            if (strcmp(key, strs[i]) == 0) {
                if (!json_is_string(v) && !json_is_null(v))
                    return in_fail(err, key, "must be a string or null");
                *dst[i] = json_string_value(v);
                if (i == 2 && *dst[i] != NULL) {
                    if (rl_policy_action_bit(*dst[i]) == 0)
                        return in_fail(err, key, "must be chat, embedding, mcp, tool_call or http");
                }
                done = true;
            }
        }
        if (done)
            continue;
        if (strcmp(key, "tool_names") == 0 || strcmp(key, "dlp_detectors") == 0) {
            if (json_is_null(v))
                continue;
            if (!json_is_array(v))
                return in_fail(err, key, "must be an array of strings");
            size_t n = json_array_size(v);
            if (n == 0)
                continue;
            if (scratch == NULL || n > nscratch - used)
                return in_fail(err, key, "has more than %zu entries", nscratch - used);
            for (size_t i = 0; i < n; i++) {
                json_t *e = json_array_get(v, i);
                if (!json_is_string(e))
                    return in_fail(err, key, "must be an array of strings");
                scratch[used + i] = json_string_value(e);
            }
            if (key[0] == 't') {
                r.tool_names = scratch + used;
                r.ntools = n;
            } else {
                r.dlp_detectors = scratch + used;
                r.ndlp = n;
            }
            used += n;
        } else if (strcmp(key, "estimated_input_tokens") == 0 || strcmp(key, "now") == 0) {
            if (json_is_null(v))
                continue;
            if (!json_is_integer(v))
                return in_fail(err, key, "must be an integer");
            if (key[0] == 'n')
                r.now_unix = (int64_t)json_integer_value(v);
            else
                r.estimated_input_tokens = (int64_t)json_integer_value(v);
        } else if (strcmp(key, "headers") == 0) {
            if (json_is_null(v))
                continue;
            if (!json_is_object(v))
                return in_fail(err, key, "must be an object {name: value}");
            const char *hk;
            json_t *hv;
            json_object_foreach(v, hk, hv)
            {
                if (!json_is_string(hv))
                    return in_fail(err, key, "value of \"%.60s\" must be a string", hk);
            }
            r.header = json_header;
            r.header_ctx = v;
        } else {
            return in_fail(
                err, key,
                "unknown field (expected agent_id, gate_id, action, method, path, model, "
                "user, tool_names, dlp_detectors, estimated_input_tokens, now or headers)");
        }
    }
    *in = r;
    return RL_OK;
}

json_t *rl_policy_result_to_json(const rl_policy_result_t *r)
{
#define OR_NULL(s) ((s) && (s)[0] ? json_string(s) : json_null())
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    if (json_object_set_new(o, "decision", json_string(rl_policy_action_str(r->action))) ||
        json_object_set_new(o, "status", json_string(rl_policy_status_str(r->action))) ||
        json_object_set_new(o, "matched", json_boolean(r->matched)) ||
        json_object_set_new(o, "error", json_boolean(r->error)) ||
        json_object_set_new(o, "policy_id", OR_NULL(r->policy_id)) ||
        json_object_set_new(o, "policy_name", OR_NULL(r->policy_name)) ||
        json_object_set_new(o, "message", OR_NULL(r->message)) ||
        json_object_set_new(o, "reason", OR_NULL(r->reason))) {
        json_decref(o);
        return NULL;
    }
    return o;
#undef OR_NULL
}
