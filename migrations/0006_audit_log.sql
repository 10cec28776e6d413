-- 0006 audit log: every change an operator makes through the API, written by
-- the API in the same transaction as the change. Append-only, enforced here:
-- UPDATE, DELETE and TRUNCATE raise, whoever runs them.
--
-- Deliberately no foreign keys: the log outlives what it describes. Deleting
-- a tenant or an operator must not (and, being append-only, could not) delete
-- the record of it, so tenant_id and operator_id are plain ids and the
-- operator's email is kept beside them.

CREATE TABLE renlayer.audit_log (
    id                uuid PRIMARY KEY,
    tenant_id         uuid,                -- NULL = not tenant-scoped (e.g. a model price)
    at                timestamptz NOT NULL DEFAULT now(),
    operator_id       uuid,                -- NULL = the system (migrations, retention)
    operator_email    text,                -- as it was at the time
    operator_token_id uuid,                -- set when an operator token, not a login, was used
    action            text NOT NULL CHECK (action ~ '^[a-z0-9_]+(\.[a-z0-9_]+)*$'),  -- e.g. 'api_key.revoke'
    target_type       text NOT NULL CHECK (target_type ~ '^[a-z0-9_]+$'),           -- e.g. 'api_key'
    target_id         text,                -- a uuid, or a model name for model_prices
    -- {"before": {...} | null, "after": {...} | null}; secrets never appear
    -- (gate header values are recorded as their last4)
    diff              jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(diff) = 'object'),
    client_addr       inet,
    request_id        text
);

CREATE INDEX audit_log_tenant_at_idx ON renlayer.audit_log (tenant_id, at DESC);
CREATE INDEX audit_log_target_idx ON renlayer.audit_log (tenant_id, target_type, target_id, at DESC);
CREATE INDEX audit_log_operator_idx ON renlayer.audit_log (tenant_id, operator_id, at DESC);

CREATE FUNCTION renlayer.audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
BEGIN
    RAISE EXCEPTION 'renlayer.audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'audit rows are never changed or removed';
END
$$;

-- Statement level: the statement fails before it touches a row, even one
-- that would match no row.
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON renlayer.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION renlayer.audit_log_append_only();

-- Belt and braces for roles other than the owner (the trigger binds everyone,
-- the owner included, unless the owner disables it, which is itself DDL).
REVOKE UPDATE, DELETE, TRUNCATE ON renlayer.audit_log FROM PUBLIC;

COMMENT ON TABLE renlayer.audit_log IS 'Append-only (triggers refuse UPDATE, DELETE, TRUNCATE)';
