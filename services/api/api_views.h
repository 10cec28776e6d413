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

#endif
