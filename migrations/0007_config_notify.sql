-- 0007 config change notifications. Every proxy keeps the request-path
-- configuration in memory and LISTENs on channel 'renlayer_config'; these
-- triggers tell it, at commit, which row of which table changed:
--
--   {"table" : "api_keys", "op" : "UPDATE", "tenant_id" : "<uuid>|null", "id" : "<id>|null"}
--
-- op is INSERT, UPDATE, DELETE or TRUNCATE. id is the row's primary key as
-- text (the model name for model_prices); tenant_id is the owning tenant (the
-- row's own id for tenants, null for the global model_prices). TRUNCATE
-- carries null tenant_id and id: reload the whole table. Identical payloads of
-- one transaction arrive once (PostgreSQL folds them). Updates that only touch
-- updated_at or last_used_at send nothing. Notifications are a fast path, not
-- a guarantee (a proxy reconnecting misses those sent meanwhile): the
-- periodic full refresh remains the safety net.

CREATE FUNCTION renlayer.notify_config_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
    -- TG_ARGV[0]: primary key column; TG_ARGV[1]: tenant column ('' = global)
    id_col     text := TG_ARGV[0];
    tenant_col text := coalesce(TG_ARGV[1], '');
    rec        jsonb;
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        PERFORM pg_notify('renlayer_config', json_build_object(
            'table', TG_TABLE_NAME, 'op', TG_OP, 'tenant_id', NULL, 'id', NULL)::text);
        RETURN NULL;
    END IF;

    IF TG_OP = 'DELETE' THEN
        rec := to_jsonb(OLD);
    ELSE
        rec := to_jsonb(NEW);
    END IF;

    IF TG_OP = 'UPDATE'
       AND rec - 'updated_at' - 'last_used_at' = to_jsonb(OLD) - 'updated_at' - 'last_used_at' THEN
        RETURN NULL;
    END IF;

    PERFORM pg_notify('renlayer_config', json_build_object(
        'table', TG_TABLE_NAME,
        'op', TG_OP,
        'tenant_id', CASE WHEN tenant_col <> '' THEN rec ->> tenant_col END,
        'id', rec ->> id_col)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER tenants_notify AFTER INSERT OR UPDATE OR DELETE ON renlayer.tenants
    FOR EACH ROW EXECUTE FUNCTION renlayer.notify_config_change('id', 'id');
CREATE TRIGGER tenants_notify_truncate AFTER TRUNCATE ON renlayer.tenants
    FOR EACH STATEMENT EXECUTE FUNCTION renlayer.notify_config_change('id', 'id');

CREATE TRIGGER agents_notify AFTER INSERT OR UPDATE OR DELETE ON renlayer.agents
    FOR EACH ROW EXECUTE FUNCTION renlayer.notify_config_change('id', 'tenant_id');
CREATE TRIGGER agents_notify_truncate AFTER TRUNCATE ON renlayer.agents
    FOR EACH STATEMENT EXECUTE FUNCTION renlayer.notify_config_change('id', 'tenant_id');

CREATE TRIGGER api_keys_notify AFTER INSERT OR UPDATE OR DELETE ON renlayer.api_keys
    FOR EACH ROW EXECUTE FUNCTION renlayer.notify_config_change('id', 'tenant_id');
CREATE TRIGGER api_keys_notify_truncate AFTER TRUNCATE ON renlayer.api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION renlayer.notify_config_change('id', 'tenant_id');

CREATE TRIGGER gates_notify AFTER INSERT OR UPDATE OR DELETE ON renlayer.gates
    FOR EACH ROW EXECUTE FUNCTION renlayer.notify_config_change('id', 'tenant_id');
CREATE TRIGGER gates_notify_truncate AFTER TRUNCATE ON renlayer.gates
    FOR EACH STATEMENT EXECUTE FUNCTION renlayer.notify_config_change('id', 'tenant_id');

CREATE TRIGGER gate_headers_notify AFTER INSERT OR UPDATE OR DELETE ON renlayer.gate_headers
    FOR EACH ROW EXECUTE FUNCTION renlayer.notify_config_change('id', 'tenant_id');
CREATE TRIGGER gate_headers_notify_truncate AFTER TRUNCATE ON renlayer.gate_headers
    FOR EACH STATEMENT EXECUTE FUNCTION renlayer.notify_config_change('id', 'tenant_id');

CREATE TRIGGER policy_sets_notify AFTER INSERT OR UPDATE OR DELETE ON renlayer.policy_sets
    FOR EACH ROW EXECUTE FUNCTION renlayer.notify_config_change('id', 'tenant_id');
CREATE TRIGGER policy_sets_notify_truncate AFTER TRUNCATE ON renlayer.policy_sets
    FOR EACH STATEMENT EXECUTE FUNCTION renlayer.notify_config_change('id', 'tenant_id');

CREATE TRIGGER policies_notify AFTER INSERT OR UPDATE OR DELETE ON renlayer.policies
    FOR EACH ROW EXECUTE FUNCTION renlayer.notify_config_change('id', 'tenant_id');
CREATE TRIGGER policies_notify_truncate AFTER TRUNCATE ON renlayer.policies
    FOR EACH STATEMENT EXECUTE FUNCTION renlayer.notify_config_change('id', 'tenant_id');

CREATE TRIGGER dlp_rules_notify AFTER INSERT OR UPDATE OR DELETE ON renlayer.dlp_rules
    FOR EACH ROW EXECUTE FUNCTION renlayer.notify_config_change('id', 'tenant_id');
CREATE TRIGGER dlp_rules_notify_truncate AFTER TRUNCATE ON renlayer.dlp_rules
    FOR EACH STATEMENT EXECUTE FUNCTION renlayer.notify_config_change('id', 'tenant_id');

CREATE TRIGGER dlp_builtin_overrides_notify AFTER INSERT OR UPDATE OR DELETE ON renlayer.dlp_builtin_overrides
    FOR EACH ROW EXECUTE FUNCTION renlayer.notify_config_change('id', 'tenant_id');
CREATE TRIGGER dlp_builtin_overrides_notify_truncate AFTER TRUNCATE ON renlayer.dlp_builtin_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION renlayer.notify_config_change('id', 'tenant_id');

CREATE TRIGGER limits_notify AFTER INSERT OR UPDATE OR DELETE ON renlayer.limits
    FOR EACH ROW EXECUTE FUNCTION renlayer.notify_config_change('id', 'tenant_id');
CREATE TRIGGER limits_notify_truncate AFTER TRUNCATE ON renlayer.limits
    FOR EACH STATEMENT EXECUTE FUNCTION renlayer.notify_config_change('id', 'tenant_id');

CREATE TRIGGER model_prices_notify AFTER INSERT OR UPDATE OR DELETE ON renlayer.model_prices
    FOR EACH ROW EXECUTE FUNCTION renlayer.notify_config_change('model', '');
CREATE TRIGGER model_prices_notify_truncate AFTER TRUNCATE ON renlayer.model_prices
    FOR EACH STATEMENT EXECUTE FUNCTION renlayer.notify_config_change('model', '');
