/* api_resources: creation of the identity resources — tenants with their
 * owner, operator tokens, agents with their first key, agent keys, gates —
 * shared by the HTTP routes and the command line (create-tenant, seed-demo).
 *
 * Each function validates its input (field problems go into field_errors, an
 * object the caller owns, and RL_ERR_INVALID is returned), writes in one
 * transaction on pg with an audit row per mutation, and returns the created
 * resource as owned JSON. Secrets (keys, tokens) appear only in that result,
 * once; the database keeps keyed hashes and sealed values. */
#ifndef API_RESOURCES_H
#define API_RESOURCES_H

#include "api.h"

/* {"tenant": {...}, "owner": {...}}. Acts as the system. */
rl_status_t api_tenant_create(api_t *api, rl_pg_t *pg, const char *name, const char *owner_email,
                              json_t *field_errors, json_t **out);

/* {"token": {id, name, prefix, created_at, ...}, "secret": "rlop_..."} for
 * operator_id (of the actor's tenant); expires_at NULL or an ISO 8601 time. */
rl_status_t api_operator_token_create(api_t *api, rl_pg_t *pg, const api_actor_t *actor,
                                      const char *operator_id, const char *name,
                                      const char *expires_at, json_t *field_errors, json_t **out);

/* input: {name, description?, default_policy_set_id?, session?: {soft_limit_usd,
 * hard_limit_usd, idle_timeout_s}}. Result {"agent": {...}, "key": {..., "secret"}}. */
rl_status_t api_agent_create(api_t *api, rl_pg_t *pg, const api_actor_t *actor,
                             const json_t *input, json_t *field_errors, json_t **out);

/* A new key of agent_id; input: {name?, expires_at?}. Result: the key with
 * its "secret". Runs inside the caller's transaction when in_tx. */
rl_status_t api_key_create(api_t *api, rl_pg_t *pg, const api_actor_t *actor,
                           const char *agent_id, const json_t *input, bool in_tx,
                           json_t *field_errors, json_t **out);

/* input: {name, kind, upstream_url?, is_default?, pinned_model?, strategy?,
 * fallback_gate_ids?, request_defaults?, session_settings?, headers?: {name:
 * value}}. Header values are sealed with AES-256-GCM; the result shows only
 * each header's name and last 4 characters. */
rl_status_t api_gate_create(api_t *api, rl_pg_t *pg, const api_actor_t *actor,
                            const char *agent_id, const json_t *input, json_t *field_errors,
                            json_t **out);

#endif
