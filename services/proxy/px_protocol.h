/* px_protocol: what the proxy understands of the wire formats it forwards —
 * OpenAI (chat completions, responses, completions, embeddings, models),
 * Anthropic messages, MCP Streamable HTTP (JSON-RPC) — as pure functions
 * without I/O, unit-tested on their own.
 *
 * Request side: classify the call, read model / stream / tools, apply the
 * gate's model pin and request defaults, and ask OpenAI streams for usage
 * (stream_options.include_usage) when the client did not.
 * Response side: a parser fed the decoded response bytes as they arrive; it
 * passes them on (SSE events intact, the usage-only chunk the proxy asked
 * for removed), and collects usage and tool calls. Error bodies in the shape
 * of each protocol, so the official SDKs raise their normal exceptions. */
#ifndef PX_PROTOCOL_H
#define PX_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>

#include "px_types.h"
#include "rl_buf.h"
#include "rl_status.h"

typedef struct {
    px_proto_t proto;
    px_action_t action;          /* chat, embedding, mcp, tool_call, http */
    char model[PX_MODEL_MAX];    /* as forwarded (after the pin), "" if none */
    bool stream;                 /* the client asked for a stream ("stream": true) */
    bool usage_injected;         /* the proxy added stream_options.include_usage */
    char mcp_method[64];         /* JSON-RPC method of an MCP call, "" otherwise */
    char mcp_id[64];             /* JSON text of a single MCP request's id (7 or "a"), for
                                  * px_protocol_error; "" for notifications and batches */
    char tool_name[PX_NAME_MAX]; /* MCP tools/call name, "" otherwise */
    px_tool_call_t tool_calls[PX_MAX_TOOL_CALLS]; /* tool results the agent sends (phase
                                  * result, only those after the last assistant turn); for
                                  * MCP each tools/call (phase requested, args hashed) */
    size_t ntool_calls;
    int64_t estimated_input_tokens; /* a cheap estimate (bytes of text / 4) for limits */
} px_request_info_t;

/* Empties info without touching its tool_calls array (ntool_calls governs
 * it; each entry is cleared when added): 12 KB not written per request. */
void px_request_info_reset(px_request_info_t *info);

/* Classifies method + path (query string excluded) for a gate of kind. */
px_proto_t px_protocol_of(px_kind_t kind, const char *path);

/* Reads the request and prepares the body to forward. body may be NULL/0.
 * When the forwarded body must differ (model pin, request defaults the
 * client did not set, include_usage), the new body is written to rewritten;
 * otherwise rewritten stays empty and the original is forwarded as is.
 * gate may be NULL (no pin or defaults). RL_ERR_INVALID for a JSON body that
 * does not parse on a path that needs JSON (chat, embeddings, messages, MCP):
 * the caller answers 400 in the protocol's shape. */
rl_status_t px_protocol_prepare(const char *method, const char *path, const char *body,
                                size_t len, const px_gate_t *gate, px_kind_t kind,
                                px_request_info_t *info, rl_buf_t *rewritten);

typedef struct px_response px_response_t;

/* A parser for one response. sse: the upstream answered text/event-stream.
 * status: the upstream HTTP status (errors are passed through, usage not read).
 * *out owned (px_response_destroy). */
rl_status_t px_response_create(const px_request_info_t *info, int status, bool sse,
                               px_response_t **out);
void px_response_destroy(px_response_t *r);

/* Feeds n decoded bytes; appends what the client must receive now to
 * forward (complete SSE events; JSON bodies as they come). Bounded: a single
 * SSE event larger than 1 MiB is forwarded unparsed. */
rl_status_t px_response_feed(px_response_t *r, const char *data, size_t n, rl_buf_t *forward);

/* The upstream ended: appends whatever is still held to forward. */
rl_status_t px_response_finish(px_response_t *r, rl_buf_t *forward);

/* Usage and tool calls seen so far (complete after finish). */
void px_response_usage(const px_response_t *r, px_usage_t *out);
size_t px_response_tool_calls(const px_response_t *r, const px_tool_call_t **calls);

/* The model the provider reported ("" if none): for pricing when the
 * request did not name one. */
const char *px_response_model(const px_response_t *r);

/* Writes an error body for proto into out and its content type into
 * *content_type (static string):
 *   OpenAI:    {"error":{"message","type","code","param":null},"renlayer":{"status","trace_id"}}
 *   Anthropic: {"type":"error","error":{"type","message"},"renlayer":{...}}
 *   MCP:       a JSON-RPC error {"jsonrpc":"2.0","id":<id or null>,"error":{"code","message","data"}}
 *   HTTP:      the OpenAI shape.
 * status is the RenLayer status (ALLOWED... DENIED, DLP_BLOCKED, "ERROR"),
 * http_status picks the type (401 authentication_error, 402, 403
 * permission_error, 404 not_found_error, 413 request_too_large, 429
 * rate_limit_error, 5xx api_error). mcp_id is the JSON-RPC id text or NULL. */
void px_protocol_error(px_proto_t proto, int http_status, const char *code, const char *message,
                       const char *renlayer_status, const char *trace_id, const char *mcp_id,
                       rl_buf_t *out, const char **content_type);

#endif
