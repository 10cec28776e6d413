/* api_views: how each resource looks in the API, as SQL expressions that
 * build its JSON object from a row aliased as in the comment. One definition
 * per resource, shared by creates, reads, lists, updates and audit diffs.
 * None of them ever includes a secret or a sealed value. */
#ifndef API_VIEWS_H
#define API_VIEWS_H

/* renlayer.tenants t */
#define API_TENANT_JSON                                                                       \
    "json_build_object('id', t.id, 'name', t.name, 'fail_closed', t.fail_closed, "           \
    "'created_at', t.created_at)"

/* renlayer.operators o */
#define API_OPERATOR_JSON                                                                     \
    "json_build_object('id', o.id, 'email', o.email, 'name', o.name, 'role', o.role, "       \
    "'created_at', o.created_at, 'last_login_at', o.last_login_at, "                         \
    "'disabled_at', o.disabled_at)"

/* renlayer.operator_tokens k */
#define API_TOKEN_JSON                                                                        \
    "json_build_object('id', k.id, 'operator_id', k.operator_id, 'name', k.name, "           \
    "'prefix', k.prefix, 'created_at', k.created_at, 'last_used_at', k.last_used_at, "       \
    "'expires_at', k.expires_at, 'revoked_at', k.revoked_at)"

/* renlayer.agents a */
#define API_AGENT_JSON                                                                        \
    "json_build_object('id', a.id, 'name', a.name, 'description', a.description, "           \
    "'default_policy_set_id', a.default_policy_set_id, 'session', json_build_object("        \
    "'soft_limit_usd', a.soft_limit_usd, 'hard_limit_usd', a.hard_limit_usd, "               \
    "'idle_timeout_s', a.idle_timeout_s), 'created_at', a.created_at, "                      \
    "'updated_at', a.updated_at)"

/* renlayer.api_keys k */
#define API_KEY_JSON                                                                          \
    "json_build_object('id', k.id, 'agent_id', k.agent_id, 'name', k.name, "                 \
    "'prefix', k.prefix, 'created_at', k.created_at, 'last_used_at', k.last_used_at, "       \
    "'expires_at', k.expires_at, 'revoked_at', k.revoked_at)"

/* renlayer.gates g: header values never, only name and last 4 characters */
#define API_GATE_JSON                                                                         \
    "json_build_object('id', g.id, 'agent_id', g.agent_id, 'name', g.name, 'kind', g.kind, " \
    "'upstream_url', g.upstream_url, 'is_default', g.is_default, "                           \
    "'pinned_model', g.pinned_model, 'strategy', g.strategy, "                               \
    "'fallback_gate_ids', to_json(g.fallback_gate_ids), "                                    \
    "'request_defaults', g.request_defaults, 'session_settings', g.session_settings, "       \
    "'headers', COALESCE((SELECT json_agg(json_build_object('name', h.name, 'set', true, "   \
    "'last4', h.value_last4) ORDER BY lower(h.name)) FROM renlayer.gate_headers h "          \
    "WHERE h.tenant_id = g.tenant_id AND h.gate_id = g.id), '[]'::json), "                   \
    "'created_at', g.created_at, 'updated_at', g.updated_at)"

/* a price row p (model_prices or tenant_model_prices) with a "source" column:
 * "list" for the shared list price, "tenant" for the tenant's own */
#define API_PRICE_JSON                                                                        \
    "json_build_object('model', p.model, 'provider', p.provider, "                           \
    "'input_per_mtok', p.input_per_mtok, 'output_per_mtok', p.output_per_mtok, "             \
    "'cached_input_per_mtok', p.cached_input_per_mtok, "                                   \
    "'cache_write_per_mtok', p.cache_write_per_mtok, 'source', p.source, "                   \
    "'updated_at', p.updated_at)"

/* renlayer.audit_log l */
#define API_AUDIT_JSON                                                                        \
    "json_build_object('id', l.id, 'at', l.at, 'operator_id', l.operator_id, "               \
    "'operator_email', l.operator_email, 'operator_token_id', l.operator_token_id, "         \
    "'action', l.action, 'target_type', l.target_type, 'target_id', l.target_id, "           \
    "'diff', l.diff, 'client_addr', host(l.client_addr), 'request_id', l.request_id)"

/* renlayer.policy_sets ps, with how many policies it holds */
#define API_POLICY_SET_JSON                                                                   \
    "json_build_object('id', ps.id, 'name', ps.name, 'description', ps.description, "        \
    "'is_tenant_default', ps.is_tenant_default, 'policy_count', (SELECT count(*) FROM "      \
    "renlayer.policies c WHERE c.tenant_id = ps.tenant_id AND c.policy_set_id = ps.id), "    \
    "'created_at', ps.created_at, 'updated_at', ps.updated_at)"

/* renlayer.policies p: also what rl_policy_compile reads (other keys ignored) */
#define API_POLICY_JSON                                                                       \
    "json_build_object('id', p.id, 'policy_set_id', p.policy_set_id, 'name', p.name, "       \
    "'description', p.description, 'priority', p.priority, 'scope', p.scope, "               \
    "'conditions', p.conditions, 'action', p.action, 'message', p.message, "                 \
    "'enabled', p.enabled, 'created_at', p.created_at, 'updated_at', p.updated_at)"

/* renlayer.dlp_rules r */
#define API_DLP_RULE_JSON                                                                     \
    "json_build_object('id', r.id, 'name', r.name, 'description', r.description, "           \
    "'pattern', r.pattern, 'severity', r.severity, 'action', r.action, 'scope', r.scope, "   \
    "'enabled', r.enabled, 'created_at', r.created_at, 'updated_at', r.updated_at)"

/* A timestamptz expression as RFC 3339 UTC with microseconds, the bus's format
 * ("2024-10-20T11:54:56.123456Z"), whatever the session's TimeZone; NULL stays
 * NULL. For a timestamp without time zone that already holds UTC, use
 * API_UTC_TEXT. */
#define API_UTC(x) API_UTC_TEXT("(" x ") AT TIME ZONE 'UTC'")
#define API_UTC_TEXT(x) "to_char(" x ", 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/* renlayer.traces t, in lists: the summary, without bodies or children */
#define API_TRACE_SUMMARY_JSON                                                                \
    "json_build_object('id', t.trace_id, 'started_at', " API_UTC("t.started_at") ", "         \
    "'agent_id', t.agent_id, 'gate_id', t.gate_id, 'user', t.end_user, "                     \
    "'session_id', t.session_key, 'action', t.action, 'method', t.method, 'path', t.path, "   \
    "'model', t.model, 'status', t.status, 'http_status', t.http_status, "                   \
    "'usage', json_build_object('input_tokens', t.input_tokens, "                            \
    "'output_tokens', t.output_tokens, 'total_tokens', t.total_tokens), "                    \
    "'cost_usd', t.cost_usd, 'latency_ms', t.latency_ms, 'stream', t.stream, "               \
    "'error', t.error)"

/* renlayer.traces t, one trace: everything, with its DLP findings and tool
 * calls in message order and its decision (null when none was recorded). The
 * children are looked up by (tenant_id, trace_id, started_at), the partition
 * key included. Bodies are stored redacted. */
#define API_TRACE_JSON                                                                        \
    "json_build_object('id', t.trace_id, 'started_at', " API_UTC("t.started_at") ", "         \
    "'ended_at', " API_UTC("t.ended_at") ", 'agent_id', t.agent_id, 'gate_id', t.gate_id, "   \
    "'api_key_id', t.api_key_id, 'user', t.end_user, 'session_id', t.session_key, "          \
    "'action', t.action, 'method', t.method, 'path', t.path, 'model', t.model, "             \
    "'upstream', t.upstream, 'status', t.status, 'http_status', t.http_status, "             \
    "'policy_ids', to_json(t.policy_ids), "                                                  \
    "'usage', json_build_object('input_tokens', t.input_tokens, "                            \
    "'output_tokens', t.output_tokens, 'total_tokens', t.total_tokens, "                     \
    "'cached_input_tokens', t.cached_input_tokens, "                                         \
    "'cache_write_tokens', t.cache_write_tokens, 'reasoning_tokens', t.reasoning_tokens), "  \
    "'cost_usd', t.cost_usd, 'latency_ms', t.latency_ms, 'upstream_ms', t.upstream_ms, "     \
    "'overhead_us', t.overhead_us, 'stream', t.stream, 'error', t.error, "                   \
    "'attempts', COALESCE(t.attempts, '[]'::jsonb), "                                        \
    "'request_body', t.request_body, 'response_body', t.response_body, "                     \
    "'truncated', t.truncated, "                                                             \
    "'dlp_findings', COALESCE((SELECT json_agg(json_build_object('detector', f.detector, "   \
    "'severity', f.severity, 'where', f.location, 'action', f.action) ORDER BY f.ordinal) "  \
    "FROM renlayer.dlp_findings f WHERE f.tenant_id = t.tenant_id "                          \
    "AND f.trace_id = t.trace_id AND f.started_at = t.started_at), '[]'::json), "            \
    "'tool_calls', COALESCE((SELECT json_agg(json_build_object('name', c.name, "             \
    "'id', c.call_id, 'phase', c.phase, 'args_sha256', encode(c.args_sha256, 'hex')) "       \
    "ORDER BY c.ordinal) FROM renlayer.tool_calls c WHERE c.tenant_id = t.tenant_id "        \
    "AND c.trace_id = t.trace_id AND c.started_at = t.started_at), '[]'::json), "            \
    "'decision', (SELECT json_build_object('decided_at', " API_UTC("d.decided_at") ", "       \
    "'status', d.status, 'http_status', d.http_status, 'policy_id', d.policy_id, "           \
    "'policy_ids', to_json(d.policy_ids), 'reason', d.reason) "                              \
    "FROM renlayer.decisions d WHERE d.tenant_id = t.tenant_id "                             \
    "AND d.trace_id = t.trace_id AND d.started_at = t.started_at))"

/* The statistics of a group of traces, as the key/value arguments of a
 * json_build_object, from a row g of the aggregates in api_stats.c
 * (n_requests, n_<status>, n_errors, sum_input, sum_output, sum_total,
 * sum_cost, p50, p95). */
#define API_TRACE_STATS_FIELDS                                                                \
    "'requests', g.n_requests, 'by_status', json_build_object('ALLOWED', g.n_allowed, "      \
    "'FLAGGED', g.n_flagged, 'DENIED', g.n_denied, 'DLP_BLOCKED', g.n_dlp_blocked, "          \
    "'DLP_WARNED', g.n_dlp_warned), 'errors', g.n_errors, "                                  \
    "'tokens', json_build_object('input', g.sum_input, 'output', g.sum_output, "             \
    "'total', g.sum_total), 'cost_usd', g.sum_cost, "                                        \
    "'latency_ms', json_build_object('p50', g.p50, 'p95', g.p95)"

#endif
