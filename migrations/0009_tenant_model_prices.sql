-- 0009 tenant price overrides. renlayer.model_prices holds the public list
-- prices every tenant shares; a tenant's operators must not change what
-- another tenant pays, so `PUT /v1/prices/{model}` writes an override here,
-- and cost uses the tenant's override first, then the list price.

CREATE TABLE renlayer.tenant_model_prices (
    tenant_id             uuid NOT NULL REFERENCES renlayer.tenants (id) ON DELETE CASCADE,
    model                 text NOT NULL CHECK (model ~ '^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,199}$'),
    provider              text NOT NULL CHECK (provider ~ '^[a-z0-9-]{1,32}$'),
    input_per_mtok        numeric(12, 6) NOT NULL CHECK (input_per_mtok >= 0),
    output_per_mtok       numeric(12, 6) NOT NULL CHECK (output_per_mtok >= 0),
    cached_input_per_mtok numeric(12, 6) CHECK (cached_input_per_mtok >= 0),
    cache_write_per_mtok  numeric(12, 6) CHECK (cache_write_per_mtok >= 0),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, model)
);

CREATE TRIGGER tenant_model_prices_touch BEFORE UPDATE ON renlayer.tenant_model_prices
    FOR EACH ROW EXECUTE FUNCTION renlayer.touch_updated_at();

CREATE TRIGGER tenant_model_prices_notify AFTER INSERT OR UPDATE OR DELETE ON renlayer.tenant_model_prices
    FOR EACH ROW EXECUTE FUNCTION renlayer.notify_config_change('model', 'tenant_id');
CREATE TRIGGER tenant_model_prices_notify_truncate AFTER TRUNCATE ON renlayer.tenant_model_prices
    FOR EACH STATEMENT EXECUTE FUNCTION renlayer.notify_config_change('model', 'tenant_id');

COMMENT ON TABLE renlayer.tenant_model_prices IS 'A tenant''s own prices, over the shared list prices of model_prices';
