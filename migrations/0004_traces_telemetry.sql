-- 0004 traces and telemetry, written by the trace-writer from the
-- renlayer.traces.* and renlayer.decisions.* subjects.
--
-- Partitioning. traces, decisions, dlp_findings and tool_calls (and
-- session_requests, 0005) are PARTITION BY RANGE (started_at), one partition
-- per UTC day named <table>_pYYYYMMDD, no default partition. Every row of a
-- request carries the request's started_at, so all of a request's rows live in
-- the same day in every table, retention drops whole days (DROP TABLE, no
-- DELETE, no vacuum debt) and joins on (trace_id, started_at) prune.
-- renlayer.ensure_trace_partitions() creates days ahead, renlayer.
-- drop_trace_partitions_before() drops days past retention; both act on every
-- table of the schema partitioned by range on a column named started_at.
--
-- Idempotency. trace_id is the UUIDv7 the proxy mints when the request
-- arrives, in the same clock reading as started_at. A unique key on a
-- partitioned table must contain the partition key, so the key is
-- (trace_id, started_at): a redelivered or replayed message is the same bytes,
-- hence the same pair, and INSERT ... ON CONFLICT (trace_id, started_at)
-- DO NOTHING makes every redelivery a no-op. A CHECK ties the id to the time
-- (UUIDv7 whose embedded timestamp is within an hour of started_at): a
-- trace_id can only ever land in one or two adjacent day partitions, and a
-- lookup by id alone prunes to them (docs/schema.md).
--
-- No foreign keys to agents, gates, keys or policies: history outlives config
-- and keeps the ids. tenant_id does reference tenants (deleting a tenant
-- deletes its telemetry).

-- ---------------------------------------------------------------------------
-- traces: one row per request that reached the policy stage

CREATE TABLE renlayer.traces (
    trace_id            uuid NOT NULL,
    started_at          timestamptz NOT NULL,
    ended_at            timestamptz,
    tenant_id           uuid NOT NULL REFERENCES renlayer.tenants (id) ON DELETE CASCADE,
    agent_id            uuid NOT NULL,
    gate_id             uuid,
    api_key_id          uuid,
    end_user            text,            -- message field "user" (X-RenLayer-User)
    session_key         text,            -- message field "session_id": the client's session id, = sessions.session_key
    action              text NOT NULL CHECK (action IN ('chat', 'embedding', 'mcp', 'tool_call', 'http')),  -- classification
    method              text NOT NULL,
    path                text NOT NULL,
    model               text,
    upstream            text,            -- upstream base URL actually used (after fallback)
    status              text NOT NULL CHECK (status IN ('ALLOWED', 'FLAGGED', 'DENIED', 'DLP_BLOCKED', 'DLP_WARNED')),
    http_status         smallint CHECK (http_status BETWEEN 100 AND 599),
    policy_ids          uuid[] NOT NULL DEFAULT '{}',
    -- usage, normalised across providers (docs/schema.md): input counts every
    -- prompt token including cached and cache-written ones; output includes
    -- reasoning tokens.
    input_tokens        integer NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens       integer NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    cached_input_tokens integer NOT NULL DEFAULT 0 CHECK (cached_input_tokens >= 0),
    cache_write_tokens  integer NOT NULL DEFAULT 0 CHECK (cache_write_tokens >= 0),
    reasoning_tokens    integer NOT NULL DEFAULT 0 CHECK (reasoning_tokens >= 0),
    total_tokens        integer NOT NULL DEFAULT 0 CHECK (total_tokens >= 0),
    cost_usd            numeric(18, 8) CHECK (cost_usd >= 0),   -- NULL = no price known
    latency_ms          integer CHECK (latency_ms >= 0),        -- arrival to last byte sent
    upstream_ms         integer CHECK (upstream_ms >= 0),       -- time spent waiting on upstream(s)
    overhead_us         integer CHECK (overhead_us >= 0),       -- proxy's own time
    stream              boolean NOT NULL DEFAULT false,
    error               text,
    attempts            jsonb CHECK (jsonb_typeof(attempts) = 'array'),  -- upstream attempts incl. fallbacks
    request_body        text,            -- redacted, truncated at the configured size
    response_body       text,
    truncated           boolean NOT NULL DEFAULT false,
    written_at          timestamptz NOT NULL DEFAULT now(),  -- pipeline lag = written_at - ended_at
    PRIMARY KEY (trace_id, started_at),
    CONSTRAINT traces_trace_id_v7_check CHECK (
        renlayer.uuid_version(trace_id) = 7
        AND renlayer.uuid_v7_time(trace_id) - started_at BETWEEN interval '-1 hour' AND interval '1 hour')
) PARTITION BY RANGE (started_at);

COMMENT ON TABLE renlayer.traces IS 'Daily partitions (<table>_pYYYYMMDD); idempotent insert: ON CONFLICT (trace_id, started_at) DO NOTHING';

CREATE INDEX traces_tenant_time_idx ON renlayer.traces (tenant_id, started_at DESC);
CREATE INDEX traces_agent_time_idx ON renlayer.traces (tenant_id, agent_id, started_at DESC);
CREATE INDEX traces_session_idx ON renlayer.traces (tenant_id, session_key, started_at) WHERE session_key IS NOT NULL;
-- Most rows are ALLOWED: index the others (filtering on ALLOWED uses the time index).
CREATE INDEX traces_status_idx ON renlayer.traces (tenant_id, status, started_at DESC) WHERE status <> 'ALLOWED';

-- ---------------------------------------------------------------------------
-- decisions: the proxy's verdict, published before forwarding

CREATE TABLE renlayer.decisions (
    trace_id    uuid NOT NULL,
    started_at  timestamptz NOT NULL,   -- the request's, as in traces
    decided_at  timestamptz NOT NULL,
    tenant_id   uuid NOT NULL REFERENCES renlayer.tenants (id) ON DELETE CASCADE,
    agent_id    uuid NOT NULL,
    gate_id     uuid,
    api_key_id  uuid,
    end_user    text,
    session_key text,
    action      text NOT NULL CHECK (action IN ('chat', 'embedding', 'mcp', 'tool_call', 'http')),
    status      text NOT NULL CHECK (status IN ('ALLOWED', 'FLAGGED', 'DENIED', 'DLP_BLOCKED', 'DLP_WARNED')),
    http_status smallint CHECK (http_status BETWEEN 100 AND 599),  -- set when the proxy answered itself (401..429)
    policy_id   uuid,                   -- the policy whose match decided, if any
    policy_ids  uuid[] NOT NULL DEFAULT '{}',
    reason      text,                   -- e.g. the policy message, 'rate_limited', 'budget_exceeded'
    written_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (trace_id, started_at),
    CONSTRAINT decisions_trace_id_v7_check CHECK (
        renlayer.uuid_version(trace_id) = 7
        AND renlayer.uuid_v7_time(trace_id) - started_at BETWEEN interval '-1 hour' AND interval '1 hour')
) PARTITION BY RANGE (started_at);

CREATE INDEX decisions_tenant_time_idx ON renlayer.decisions (tenant_id, started_at DESC);
CREATE INDEX decisions_status_idx ON renlayer.decisions (tenant_id, status, started_at DESC) WHERE status <> 'ALLOWED';

-- ---------------------------------------------------------------------------
-- dlp_findings: what a detector found and where; never the value

CREATE TABLE renlayer.dlp_findings (
    trace_id   uuid NOT NULL,
    started_at timestamptz NOT NULL,
    ordinal    smallint NOT NULL CHECK (ordinal >= 0),  -- position in the trace's dlp_findings array
    tenant_id  uuid NOT NULL REFERENCES renlayer.tenants (id) ON DELETE CASCADE,
    agent_id   uuid NOT NULL,
    detector   text NOT NULL,            -- built-in detector id, or the custom rule's id
    severity   text NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    location   text NOT NULL CHECK (location IN ('request', 'response')),  -- message field "where"
    action     text NOT NULL CHECK (action IN ('block', 'warn', 'redact')),
    PRIMARY KEY (trace_id, started_at, ordinal),
    CONSTRAINT dlp_findings_trace_id_v7_check CHECK (
        renlayer.uuid_version(trace_id) = 7
        AND renlayer.uuid_v7_time(trace_id) - started_at BETWEEN interval '-1 hour' AND interval '1 hour')
) PARTITION BY RANGE (started_at);

CREATE INDEX dlp_findings_tenant_time_idx ON renlayer.dlp_findings (tenant_id, started_at DESC);
CREATE INDEX dlp_findings_detector_idx ON renlayer.dlp_findings (tenant_id, detector, started_at DESC);

-- ---------------------------------------------------------------------------
-- tool_calls: tool_use / tool_result / tool_calls / MCP tools/call seen in a request

CREATE TABLE renlayer.tool_calls (
    trace_id    uuid NOT NULL,
    started_at  timestamptz NOT NULL,
    ordinal     smallint NOT NULL CHECK (ordinal >= 0),  -- position in the trace's tool_calls array
    tenant_id   uuid NOT NULL REFERENCES renlayer.tenants (id) ON DELETE CASCADE,
    agent_id    uuid NOT NULL,
    session_key text,                   -- copied from the trace: loop detection per session
    name        text NOT NULL,
    call_id     text,                   -- message field "id": the provider's tool call id
    phase       text NOT NULL CHECK (phase IN ('requested', 'result')),
    args_sha256 bytea CHECK (octet_length(args_sha256) = 32),  -- decode(hex, 'hex') of the message's args_sha256
    PRIMARY KEY (trace_id, started_at, ordinal),
    CONSTRAINT tool_calls_trace_id_v7_check CHECK (
        renlayer.uuid_version(trace_id) = 7
        AND renlayer.uuid_v7_time(trace_id) - started_at BETWEEN interval '-1 hour' AND interval '1 hour')
) PARTITION BY RANGE (started_at);

CREATE INDEX tool_calls_session_idx ON renlayer.tool_calls (tenant_id, session_key, started_at) WHERE session_key IS NOT NULL;
CREATE INDEX tool_calls_name_idx ON renlayer.tool_calls (tenant_id, name, started_at DESC);

-- ---------------------------------------------------------------------------
-- dead_letters: bus messages a consumer could not apply (bad JSON, unknown
-- version, constraint violation, tenant gone). Not tenant-owned: the message
-- may name no tenant, or one that does not exist; kept for inspection and
-- replay, pruned by the owning service.

CREATE TABLE renlayer.dead_letters (
    id          uuid PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    consumer    text NOT NULL,           -- e.g. 'trace-writer'
    subject     text NOT NULL,
    stream      text,
    stream_seq  bigint,
    msg_id      text,                    -- Nats-Msg-Id
    tenant_id   uuid,                    -- if the message named one; no foreign key
    payload     bytea NOT NULL,          -- verbatim: it may not be valid UTF-8 or JSON
    reason      text NOT NULL
);

CREATE INDEX dead_letters_received_idx ON renlayer.dead_letters (received_at);
CREATE INDEX dead_letters_tenant_idx ON renlayer.dead_letters (tenant_id, received_at DESC) WHERE tenant_id IS NOT NULL;

-- ---------------------------------------------------------------------------
-- partition upkeep

-- The tables that get daily partitions: every table of schema renlayer
-- partitioned by RANGE on the single column started_at.
CREATE FUNCTION renlayer.daily_partitioned_tables() RETURNS SETOF text
LANGUAGE sql STABLE
SET search_path = pg_catalog
AS $$
    SELECT c.relname::text
      FROM pg_partitioned_table pt
      JOIN pg_class c ON c.oid = pt.partrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = pt.partattrs[0]
     WHERE n.nspname = 'renlayer'
       AND pt.partstrat = 'r'
       AND pt.partnatts = 1
       AND a.attname = 'started_at'
     ORDER BY c.relname
$$;

-- Creates the missing daily partitions [from_day, from_day + days) of every
-- daily-partitioned table; returns how many it created. Idempotent, and safe
-- when several writers call it at once: callers serialise on a transaction
-- advisory lock, and a day that exists is skipped. Each partition is created
-- as a plain table and then attached, which takes SHARE UPDATE EXCLUSIVE on
-- the parent (inserts and queries continue) instead of the ACCESS EXCLUSIVE
-- of CREATE TABLE ... PARTITION OF. Waits at most lock_timeout (5 s) for a
-- lock, then fails: the caller retries later (it creates days ahead).
-- Days are UTC days. days: 1..400.
CREATE FUNCTION renlayer.ensure_trace_partitions(from_day date, days integer) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog
SET lock_timeout = '5s'
AS $$
DECLARE
    parent  text;
    d       date;
    part    text;
    created integer := 0;
BEGIN
    IF from_day IS NULL OR days IS NULL OR days < 1 OR days > 400 THEN
        RAISE EXCEPTION 'ensure_trace_partitions: from_day must be set and days in 1..400 (got %, %)', from_day, days
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- 'RenL' / 2: shared with drop_trace_partitions_before()
    PERFORM pg_advisory_xact_lock(1382379084, 2);

    FOR parent IN SELECT renlayer.daily_partitioned_tables() LOOP
        FOR i IN 0 .. days - 1 LOOP
            d := from_day + i;
            part := parent || '_p' || to_char(d, 'YYYYMMDD');
            CONTINUE WHEN to_regclass(format('renlayer.%I', part)) IS NOT NULL;
            EXECUTE format(
                'CREATE TABLE renlayer.%I (LIKE renlayer.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS'
                ' INCLUDING STORAGE INCLUDING COMPRESSION)', part, parent);
            EXECUTE format(
                'ALTER TABLE renlayer.%I ATTACH PARTITION renlayer.%I FOR VALUES FROM (%L) TO (%L)',
                parent, part,
                to_char(d, 'YYYY-MM-DD') || ' 00:00:00+00',
                to_char(d + 1, 'YYYY-MM-DD') || ' 00:00:00+00');
            created := created + 1;
        END LOOP;
    END LOOP;
    RETURN created;
END
$$;

-- Drops every daily partition whose whole range lies before day 00:00 UTC,
-- in every daily-partitioned table; returns how many it dropped. Refuses a day
-- after today (UTC): the current day's partition is never dropped. DROP takes
-- ACCESS EXCLUSIVE on the parent for an instant; waits at most lock_timeout
-- (5 s) for it, then fails and the caller retries.
CREATE FUNCTION renlayer.drop_trace_partitions_before(day date) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog
SET lock_timeout = '5s'
AS $$
DECLARE
    cutoff  timestamptz;
    r       record;
    hi      timestamptz;
    dropped integer := 0;
BEGIN
    IF $1 IS NULL THEN
        RAISE EXCEPTION 'drop_trace_partitions_before: day must be set' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF $1 > (now() AT TIME ZONE 'UTC')::date THEN
        RAISE EXCEPTION 'drop_trace_partitions_before: refusing to drop the current day or later (%)', $1
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    cutoff := $1::timestamp AT TIME ZONE 'UTC';

    PERFORM pg_advisory_xact_lock(1382379084, 2);

    FOR r IN
        SELECT c.relname::text AS part, pg_get_expr(c.relpartbound, c.oid) AS bound
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
          JOIN pg_class p ON p.oid = i.inhparent
          JOIN pg_namespace n ON n.oid = p.relnamespace
         WHERE n.nspname = 'renlayer'
           AND p.relname IN (SELECT renlayer.daily_partitioned_tables())
         ORDER BY 1
    LOOP
        -- bound: FOR VALUES FROM ('<ts>') TO ('<ts>'), rendered in this
        -- session's DateStyle and TimeZone, which the cast reads back alike.
        hi := substring(r.bound FROM 'TO \(''([^'']+)''\)')::timestamptz;
        CONTINUE WHEN hi IS NULL OR hi > cutoff;
        EXECUTE format('DROP TABLE renlayer.%I', r.part);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;

-- A fresh install can take traffic before the trace-writer's first upkeep.
DO $$
BEGIN
    PERFORM renlayer.ensure_trace_partitions((now() AT TIME ZONE 'UTC')::date - 1, 9);
END
$$;
