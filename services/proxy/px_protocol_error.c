/* px_protocol, errors: bodies in the shape of each protocol, so the official
 * SDKs raise their usual exception (the class follows the HTTP status; the
 * type and message are what their handlers read). See docs/protocols.md. */
#include <stdio.h>
#include <string.h>

#include "px_protocol.h"
#include "rl_json.h"

static const char *error_type(px_proto_t proto, int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 402:
        /* Anthropic's own type for 402; OpenAI names running out of money so. */
        return proto == PX_PROTO_ANTHROPIC ? "billing_error" : "insufficient_quota";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 409:
        return "conflict_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 504:
        return proto == PX_PROTO_ANTHROPIC ? "timeout_error" : "api_error";
    case 529:
        return proto == PX_PROTO_ANTHROPIC ? "overloaded_error" : "api_error";
    default:
        return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

static const char *default_message(int status)
{
    switch (status) {
    case 400:
        return "The request is invalid.";
    case 401:
        return "Invalid or missing API key.";
    case 402:
        return "The session budget is exhausted.";
    case 403:
        return "The request was denied.";
    case 404:
        return "Not found.";
    case 413:
        return "The request body is too large.";
    case 429:
        return "Rate limit exceeded.";
    default:
        return status >= 500 ? "The proxy could not complete the request." : "Request failed.";
    }
}

/* JSON-RPC codes: the reserved ones where they fit, else the server range. */
static int jsonrpc_code(int status)
{
    if (status == 400 || status == 413 || status == 422)
        return -32600; /* Invalid Request */
    if (status >= 500)
        return -32603; /* Internal error */
    return -32000;
}

/* The id of the call as JSON: a number or a string the client sent, else null. */
static json_t *mcp_id_value(const char *text)
{
    if (text == NULL || text[0] == '\0')
        return json_null();
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    if (json_is_integer(v) || json_is_string(v))
        return v;
    json_decref(v);
    return json_null();
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

void px_protocol_error(px_proto_t proto, int http_status, const char *code, const char *message,
                       const char *renlayer_status, const char *trace_id, const char *mcp_id,
                       rl_buf_t *out, const char **content_type)
{
    const char *type = error_type(proto, http_status);
    if (message == NULL || message[0] == '\0')
        message = default_message(http_status);
    json_t *rl = json_pack("{s:o,s:o}", "status", str_or_null(renlayer_status), "trace_id",
                           str_or_null(trace_id));
    json_t *body;
    switch (proto) {
    case PX_PROTO_ANTHROPIC:
        body = json_pack("{s:s,s:{s:s,s:s},s:o}", "type", "error", "error", "type", type, "message",
                         message, "renlayer", rl);
        break;
    case PX_PROTO_MCP: {
        json_t *data = json_pack("{s:i,s:s,s:o,s:o}", "http_status", http_status, "type", type,
                                 "code", str_or_null(code), "renlayer", rl);
        body =
            json_pack("{s:s,s:o,s:{s:i,s:s,s:o}}", "jsonrpc", "2.0", "id", mcp_id_value(mcp_id),
                      "error", "code", jsonrpc_code(http_status), "message", message, "data", data);
        break;
    }
    default:
        body = json_pack("{s:{s:s,s:s,s:o,s:n},s:o}", "error", "message", message, "type", type,
                         "code", str_or_null(code), "param", "renlayer", rl);
        break;
    }
    *content_type = "application/json";
    rl_buf_reset(out);
    /* Invalid UTF-8 in a message makes json_pack fail: keep a valid body. */
    if (body == NULL || rl_json_dump(body, out) != RL_OK) {
        rl_status_t st;
        rl_buf_reset(out);
        if (proto == PX_PROTO_MCP)
            st = rl_buf_appendf(
                out, "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":%d,\"message\":\"%s\"}}",
                jsonrpc_code(http_status), default_message(http_status));
        else if (proto == PX_PROTO_ANTHROPIC)
            st = rl_buf_appendf(
                out, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"%s\"}}", type,
                default_message(http_status));
        else
            st = rl_buf_appendf(
                out,
                "{\"error\":{\"message\":\"%s\",\"type\":\"%s\",\"code\":null,\"param\":null}}",
                default_message(http_status), type);
        if (st != RL_OK)
            rl_error_clear();
    }
    json_decref(body);
}
