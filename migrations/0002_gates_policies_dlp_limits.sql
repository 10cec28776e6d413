-- 0002 request-path configuration: gates and their injected headers, policy
-- sets and policies, DLP rules, rate and spend limits. Written by the API,
-- cached by the proxy (change notifications: 0007).

-- ---------------------------------------------------------------------------
-- gates: where an agent's calls go

CREATE TABLE renlayer.gates (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES renlayer.tenants (id) ON DELETE CASCADE,
    agent_id          uuid NOT NULL,
    -- addressed by X-RenLayer-Gate (name or id)
    name              text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    kind              text NOT NULL CHECK (kind IN ('openai', 'anthropic', 'mcp', 'http')),
    -- base URL override; NULL = the kind's default upstream
    upstream_url      text CHECK (upstream_url ~ '^https?://[^[:space:]]+$' AND char_length(upstream_url) <= 2048),
    is_default        boolean NOT NULL DEFAULT false,
    pinned_model      text CHECK (char_length(pinned_model) BETWEEN 1 AND 200),
    strategy          text NOT NULL DEFAULT 'single' CHECK (strategy IN ('single', 'fallback', 'round-robin')),
    -- other gates of the same agent, in order; the app checks they exist
    fallback_gate_ids uuid[] NOT NULL DEFAULT '{}' CHECK (cardinality(fallback_gate_ids) <= 16 AND array_position(fallback_gate_ids, NULL) IS NULL),
    -- merged into request bodies where the agent did not set them
    request_defaults  jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(request_defaults) = 'object'),
    -- per-gate overrides of the agent's session settings
    -- ({"soft_limit_usd","hard_limit_usd","idle_timeout_s"}); {} = the agent's
    session_settings  jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(session_settings) = 'object'),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES renlayer.agents (tenant_id, id) ON DELETE CASCADE,
    CHECK (NOT (id = ANY (fallback_gate_ids)))
);

CREATE UNIQUE INDEX gates_agent_name_key ON renlayer.gates (tenant_id, agent_id, name);
-- At most one default gate per agent. Moving the default takes two
-- statements (clear the old, then set the new) in one transaction.
CREATE UNIQUE INDEX gates_agent_default_key ON renlayer.gates (tenant_id, agent_id) WHERE is_default;

CREATE TRIGGER gates_touch BEFORE UPDATE ON renlayer.gates
    FOR EACH ROW EXECUTE FUNCTION renlayer.touch_updated_at();

-- Headers the proxy injects upstream (provider keys and other secrets).
-- value_ciphertext = 12-byte nonce || AES-256-GCM ciphertext || 16-byte tag,
-- under RENLAYER_SECRET_KEY, with (tenant_id, gate_id, lower(name)) as
-- associated data so a ciphertext cannot be moved to another row. The API
-- never returns the value, only value_last4.
CREATE TABLE renlayer.gate_headers (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES renlayer.tenants (id) ON DELETE CASCADE,
    gate_id          uuid NOT NULL,
    name             text NOT NULL CHECK (name ~ '^[!#$%&''*+.^_`|~0-9A-Za-z-]{1,128}$'),
    value_ciphertext bytea NOT NULL CHECK (octet_length(value_ciphertext) >= 28),
    value_last4      text NOT NULL DEFAULT '' CHECK (char_length(value_last4) <= 4),
    key_version      smallint NOT NULL DEFAULT 1 CHECK (key_version > 0),  -- which secret key sealed it (rotation)
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, gate_id) REFERENCES renlayer.gates (tenant_id, id) ON DELETE CASCADE
);

-- HTTP header names are case-insensitive.
CREATE UNIQUE INDEX gate_headers_gate_name_key ON renlayer.gate_headers (tenant_id, gate_id, lower(name));

CREATE TRIGGER gate_headers_touch BEFORE UPDATE ON renlayer.gate_headers
    FOR EACH ROW EXECUTE FUNCTION renlayer.touch_updated_at();

-- ---------------------------------------------------------------------------
-- policy sets and policies

CREATE TABLE renlayer.policy_sets (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES renlayer.tenants (id) ON DELETE CASCADE,
    name              text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description       text NOT NULL DEFAULT '' CHECK (char_length(description) <= 4000),
    -- the set used by agents whose default_policy_set_id is NULL
    is_tenant_default boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id)
);

CREATE UNIQUE INDEX policy_sets_tenant_name_key ON renlayer.policy_sets (tenant_id, name);
CREATE UNIQUE INDEX policy_sets_tenant_default_key ON renlayer.policy_sets (tenant_id) WHERE is_tenant_default;

CREATE TRIGGER policy_sets_touch BEFORE UPDATE ON renlayer.policy_sets
    FOR EACH ROW EXECUTE FUNCTION renlayer.touch_updated_at();

-- Deleting a set falls the agents using it back to the tenant default
-- (PG15: SET NULL of one column of a composite key).
ALTER TABLE renlayer.agents
    ADD CONSTRAINT agents_default_policy_set_fkey
    FOREIGN KEY (tenant_id, default_policy_set_id)
    REFERENCES renlayer.policy_sets (tenant_id, id) ON DELETE SET NULL (default_policy_set_id);

CREATE INDEX agents_policy_set_idx ON renlayer.agents (tenant_id, default_policy_set_id)
    WHERE default_policy_set_id IS NOT NULL;

CREATE TABLE renlayer.policies (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES renlayer.tenants (id) ON DELETE CASCADE,
    policy_set_id uuid NOT NULL,
    name          text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description   text NOT NULL DEFAULT '' CHECK (char_length(description) <= 4000),
    -- evaluation order within the set: ORDER BY priority, id; first match decides
    priority      integer NOT NULL DEFAULT 0,
    -- {"agents":[uuid...],"gates":[uuid...]}; an empty list matches all
    scope         jsonb NOT NULL DEFAULT '{"agents":[],"gates":[]}' CHECK (jsonb_typeof(scope) = 'object'),
    -- the match expression; its grammar is docs/policies.md
    conditions    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(conditions) IN ('object', 'array')),
    action        text NOT NULL CHECK (action IN ('ALLOW', 'FLAG', 'DENY')),
    message       text NOT NULL DEFAULT '' CHECK (char_length(message) <= 2000),  -- shown to the agent on DENY
    enabled       boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, policy_set_id) REFERENCES renlayer.policy_sets (tenant_id, id) ON DELETE CASCADE
);

CREATE UNIQUE INDEX policies_set_name_key ON renlayer.policies (tenant_id, policy_set_id, name);
CREATE INDEX policies_set_order_idx ON renlayer.policies (tenant_id, policy_set_id, priority, id);

CREATE TRIGGER policies_touch BEFORE UPDATE ON renlayer.policies
    FOR EACH ROW EXECUTE FUNCTION renlayer.touch_updated_at();

-- ---------------------------------------------------------------------------
-- DLP

-- Tenant custom detectors: PCRE2 patterns (compiled with JIT by the proxy;
-- the API compiles them on write and refuses invalid ones).
CREATE TABLE renlayer.dlp_rules (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES renlayer.tenants (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '' CHECK (char_length(description) <= 4000),
    pattern     text NOT NULL CHECK (char_length(pattern) BETWEEN 1 AND 4096),
    severity    text NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    action      text NOT NULL CHECK (action IN ('block', 'warn', 'redact')),
    scope       text NOT NULL DEFAULT 'both' CHECK (scope IN ('request', 'response', 'both')),
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX dlp_rules_tenant_name_key ON renlayer.dlp_rules (tenant_id, name);

CREATE TRIGGER dlp_rules_touch BEFORE UPDATE ON renlayer.dlp_rules
    FOR EACH ROW EXECUTE FUNCTION renlayer.touch_updated_at();

-- A tenant's changes to a built-in detector (the detector id is the proxy's,
-- e.g. 'credit_card', 'iban'). NULL severity/action = the built-in's own.
CREATE TABLE renlayer.dlp_builtin_overrides (
    id         uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES renlayer.tenants (id) ON DELETE CASCADE,
    detector   text NOT NULL CHECK (detector ~ '^[a-z0-9_.-]{1,64}$'),
    disabled   boolean NOT NULL DEFAULT false,
    severity   text CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    action     text CHECK (action IN ('block', 'warn', 'redact')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX dlp_builtin_overrides_detector_key ON renlayer.dlp_builtin_overrides (tenant_id, detector);

CREATE TRIGGER dlp_builtin_overrides_touch BEFORE UPDATE ON renlayer.dlp_builtin_overrides
    FOR EACH ROW EXECUTE FUNCTION renlayer.touch_updated_at();

-- ---------------------------------------------------------------------------
-- limits

-- Rate and spend limits. agent_id NULL = a tenant-wide default applied to
-- each agent that has no row of the same kind and per_user of its own.
-- per_user = counted per X-RenLayer-User value instead of per agent.
CREATE TABLE renlayer.limits (
    id         uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES renlayer.tenants (id) ON DELETE CASCADE,
    agent_id   uuid,
    kind       text NOT NULL CHECK (kind IN (
                   'requests_per_minute', 'requests_per_hour', 'requests_per_day',
                   'tokens_per_minute', 'tokens_per_hour', 'tokens_per_day',
                   'cost_per_hour', 'cost_per_day', 'cost_per_month')),
    per_user   boolean NOT NULL DEFAULT false,
    value      numeric(20, 8) NOT NULL CHECK (value > 0),  -- requests, tokens or USD
    enabled    boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES renlayer.agents (tenant_id, id) ON DELETE CASCADE
);

-- One row per (agent or tenant default, kind, per_user).
CREATE UNIQUE INDEX limits_scope_key ON renlayer.limits (tenant_id, agent_id, kind, per_user) NULLS NOT DISTINCT;

CREATE TRIGGER limits_touch BEFORE UPDATE ON renlayer.limits
    FOR EACH ROW EXECUTE FUNCTION renlayer.touch_updated_at();
