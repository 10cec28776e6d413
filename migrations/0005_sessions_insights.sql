-- 0005 sessions (written by the session-tracker) and insights (written by
-- the insights service).

-- ---------------------------------------------------------------------------
-- sessions: one agent run, keyed by the session id the client sends
-- (X-RenLayer-Session), created by its first request

CREATE TABLE renlayer.sessions (
    id                     uuid PRIMARY KEY,
    tenant_id              uuid NOT NULL REFERENCES renlayer.tenants (id) ON DELETE CASCADE,
    session_key            text NOT NULL CHECK (char_length(session_key) BETWEEN 1 AND 256),
    agent_id               uuid NOT NULL,                 -- agent of the first request
    agent_ids              uuid[] NOT NULL DEFAULT '{}',  -- every agent seen (a session may span agents)
    gate_ids               uuid[] NOT NULL DEFAULT '{}',  -- every gate seen
    state                  text NOT NULL DEFAULT 'active'
                           CHECK (state IN ('active', 'idle', 'completed', 'runaway', 'budget_exceeded')),
    -- totals, accumulated once per trace (see session_requests)
    requests               bigint NOT NULL DEFAULT 0 CHECK (requests >= 0),
    errors                 bigint NOT NULL DEFAULT 0 CHECK (errors >= 0),   -- upstream or proxy errors
    denied                 bigint NOT NULL DEFAULT 0 CHECK (denied >= 0),   -- DENIED, DLP_BLOCKED
    flagged                bigint NOT NULL DEFAULT 0 CHECK (flagged >= 0),  -- FLAGGED, DLP_WARNED
    input_tokens           bigint NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens          bigint NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    cached_input_tokens    bigint NOT NULL DEFAULT 0 CHECK (cached_input_tokens >= 0),
    reasoning_tokens       bigint NOT NULL DEFAULT 0 CHECK (reasoning_tokens >= 0),
    total_tokens           bigint NOT NULL DEFAULT 0 CHECK (total_tokens >= 0),
    cost_usd               numeric(18, 8) NOT NULL DEFAULT 0 CHECK (cost_usd >= 0),
    latency_ms_sum         bigint NOT NULL DEFAULT 0 CHECK (latency_ms_sum >= 0),
    started_at             timestamptz NOT NULL,
    last_seen_at           timestamptz NOT NULL,
    completed_at           timestamptz,
    state_changed_at       timestamptz NOT NULL,
    -- the agent's (or gate's) session settings when the session started
    soft_limit_usd         numeric(18, 8) CHECK (soft_limit_usd > 0),
    hard_limit_usd         numeric(18, 8) CHECK (hard_limit_usd > 0),
    idle_timeout_s         integer NOT NULL CHECK (idle_timeout_s > 0),
    soft_limit_exceeded_at timestamptz,
    updated_at             timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    CHECK (state NOT IN ('completed', 'runaway') OR completed_at IS NOT NULL)
);

-- The session-tracker's upsert key: one session per client id per tenant,
-- for ever (requests after completion make it 'runaway', not a new session).
CREATE UNIQUE INDEX sessions_tenant_key_key ON renlayer.sessions (tenant_id, session_key);
CREATE INDEX sessions_tenant_last_seen_idx ON renlayer.sessions (tenant_id, last_seen_at DESC);
CREATE INDEX sessions_tenant_state_idx ON renlayer.sessions (tenant_id, state, last_seen_at DESC);
CREATE INDEX sessions_agent_idx ON renlayer.sessions (tenant_id, agent_id, started_at DESC);
-- The idle sweep, across tenants.
CREATE INDEX sessions_active_last_seen_idx ON renlayer.sessions (last_seen_at) WHERE state = 'active';

CREATE TRIGGER sessions_touch BEFORE UPDATE ON renlayer.sessions
    FOR EACH ROW EXECUTE FUNCTION renlayer.touch_updated_at();

-- session_requests: one row per trace applied to a session, the
-- session-tracker's idempotency ledger and the per-request detail insights
-- analyse. Applying a trace is one transaction:
--   WITH r AS (INSERT INTO renlayer.session_requests ... ON CONFLICT DO NOTHING RETURNING *)
--   UPDATE renlayer.sessions s SET requests = s.requests + 1, ... FROM r WHERE s.id = r.session_id;
-- so a redelivered trace adds nothing. Partitioned by day like traces, and
-- dropped with them.
CREATE TABLE renlayer.session_requests (
    trace_id      uuid NOT NULL,
    started_at    timestamptz NOT NULL,
    tenant_id     uuid NOT NULL REFERENCES renlayer.tenants (id) ON DELETE CASCADE,
    session_id    uuid NOT NULL,          -- sessions.id (no foreign key: partitioned history)
    agent_id      uuid NOT NULL,
    gate_id       uuid,
    model         text,
    status        text NOT NULL CHECK (status IN ('ALLOWED', 'FLAGGED', 'DENIED', 'DLP_BLOCKED', 'DLP_WARNED')),
    http_status   smallint CHECK (http_status BETWEEN 100 AND 599),
    error         boolean NOT NULL DEFAULT false,
    truncated     boolean NOT NULL DEFAULT false,
    attempts      smallint NOT NULL DEFAULT 1 CHECK (attempts >= 0),  -- upstream attempts (retries, fallbacks)
    input_tokens  integer NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens integer NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    cost_usd      numeric(18, 8) CHECK (cost_usd >= 0),
    latency_ms    integer CHECK (latency_ms >= 0),
    prompt_sha256 bytea CHECK (octet_length(prompt_sha256) = 32),  -- repeated-prompt detection, if the tracker computes it
    applied_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (trace_id, started_at),
    CONSTRAINT session_requests_trace_id_v7_check CHECK (
        renlayer.uuid_version(trace_id) = 7
        AND renlayer.uuid_v7_time(trace_id) - started_at BETWEEN interval '-1 hour' AND interval '1 hour')
) PARTITION BY RANGE (started_at);

CREATE INDEX session_requests_session_idx ON renlayer.session_requests (tenant_id, session_id, started_at);

-- ---------------------------------------------------------------------------
-- insights

-- One analysis of one session at one point of its life. The insights service
-- inserts the run, its insights and its aggregate update in one transaction;
-- ON CONFLICT (tenant_id, session_id, session_last_seen_at) DO NOTHING on the
-- run makes a redelivered session event a no-op, while a session that came
-- back to life and went idle again is analysed anew.
CREATE TABLE renlayer.insight_runs (
    id                   uuid PRIMARY KEY,
    tenant_id            uuid NOT NULL REFERENCES renlayer.tenants (id) ON DELETE CASCADE,
    session_id           uuid NOT NULL,
    agent_id             uuid NOT NULL,
    session_state        text NOT NULL CHECK (session_state IN ('active', 'idle', 'completed', 'runaway', 'budget_exceeded')),
    session_last_seen_at timestamptz NOT NULL,
    analyzer_version     text NOT NULL,
    summary              text,             -- the optional LLM-written summary
    created_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, session_id) REFERENCES renlayer.sessions (tenant_id, id) ON DELETE CASCADE
);

CREATE UNIQUE INDEX insight_runs_session_key ON renlayer.insight_runs (tenant_id, session_id, session_last_seen_at);
CREATE INDEX insight_runs_agent_idx ON renlayer.insight_runs (tenant_id, agent_id, created_at DESC);

CREATE TABLE renlayer.insights (
    id                   uuid PRIMARY KEY,
    tenant_id            uuid NOT NULL REFERENCES renlayer.tenants (id) ON DELETE CASCADE,
    run_id               uuid NOT NULL,
    session_id           uuid NOT NULL,
    agent_id             uuid NOT NULL,
    kind                 text NOT NULL CHECK (kind IN ('loop', 'anomaly', 'quality', 'cost_efficiency', 'recommendation')),
    severity             text CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    -- kind-specific: quality 0..100, cost_efficiency 0..100, anomaly z-score, loop repeat count
    score                numeric(12, 4),
    estimated_saving_usd numeric(18, 8) CHECK (estimated_saving_usd >= 0),
    title                text NOT NULL DEFAULT '' CHECK (char_length(title) <= 500),
    -- the explanation: what was measured against what
    details              jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object'),
    created_at           timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, run_id) REFERENCES renlayer.insight_runs (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, session_id) REFERENCES renlayer.sessions (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX insights_session_idx ON renlayer.insights (tenant_id, session_id, created_at DESC);
CREATE INDEX insights_run_idx ON renlayer.insights (tenant_id, run_id);
CREATE INDEX insights_agent_idx ON renlayer.insights (tenant_id, agent_id, created_at DESC);
CREATE INDEX insights_kind_idx ON renlayer.insights (tenant_id, kind, created_at DESC);

-- Per agent and UTC day, sums over the runs of that day; averages and rates
-- are derived, and any period sums days. Updated in the run's transaction.
CREATE TABLE renlayer.agent_insight_aggregates (
    tenant_id            uuid NOT NULL REFERENCES renlayer.tenants (id) ON DELETE CASCADE,
    agent_id             uuid NOT NULL,
    day                  date NOT NULL,
    runs                 integer NOT NULL DEFAULT 0 CHECK (runs >= 0),
    quality_sum          numeric(18, 4) NOT NULL DEFAULT 0,
    cost_efficiency_sum  numeric(18, 4) NOT NULL DEFAULT 0,
    loop_runs            integer NOT NULL DEFAULT 0 CHECK (loop_runs >= 0),     -- runs with a loop insight
    anomaly_runs         integer NOT NULL DEFAULT 0 CHECK (anomaly_runs >= 0),  -- runs with an anomaly insight
    cost_usd             numeric(18, 8) NOT NULL DEFAULT 0,
    estimated_saving_usd numeric(18, 8) NOT NULL DEFAULT 0,
    avg_quality          numeric GENERATED ALWAYS AS (CASE WHEN runs > 0 THEN quality_sum / runs END) STORED,
    avg_cost_efficiency  numeric GENERATED ALWAYS AS (CASE WHEN runs > 0 THEN cost_efficiency_sum / runs END) STORED,
    loop_rate            numeric GENERATED ALWAYS AS (CASE WHEN runs > 0 THEN loop_runs::numeric / runs END) STORED,
    anomaly_rate         numeric GENERATED ALWAYS AS (CASE WHEN runs > 0 THEN anomaly_runs::numeric / runs END) STORED,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, agent_id, day)
);

CREATE TRIGGER agent_insight_aggregates_touch BEFORE UPDATE ON renlayer.agent_insight_aggregates
    FOR EACH ROW EXECUTE FUNCTION renlayer.touch_updated_at();

-- session_requests is daily-partitioned: give it the days the others have.
DO $$
BEGIN
    PERFORM renlayer.ensure_trace_partitions((now() AT TIME ZONE 'UTC')::date - 1, 9);
END
$$;
