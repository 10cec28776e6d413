-- 0003 model prices: one global table (not per tenant), USD per million
-- tokens. The proxy prices each call from it (cost_usd in the trace), the
-- insights service looks for cheaper models in it. Written by the API.
--
-- Cost of a call, with the usage normalised as in docs/schema.md
-- (input_tokens counts every prompt token, cached and cache-written included;
-- output_tokens counts reasoning tokens, which are billed as output):
--
--   (input - cached_input - cache_write) * input_per_mtok
-- + cached_input * coalesce(cached_input_per_mtok, input_per_mtok)
-- + cache_write  * coalesce(cache_write_per_mtok,  input_per_mtok)
-- + output       * output_per_mtok                           all / 1e6
--
-- A model name from a request or response matches the row whose model is
-- equal to it, else the longest row whose model followed by '-' is a prefix
-- of it ('gpt-4o-mini-2024-07-18' -> 'gpt-4o-mini', 'claude-sonnet-4-5-20250929'
-- -> 'claude-sonnet-4-5'); see renlayer.model_price_for().

CREATE TABLE renlayer.model_prices (
    model                 text PRIMARY KEY CHECK (model ~ '^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,199}$'),
    provider              text NOT NULL CHECK (provider ~ '^[a-z0-9-]{1,32}$'),
    input_per_mtok        numeric(12, 6) NOT NULL CHECK (input_per_mtok >= 0),
    output_per_mtok       numeric(12, 6) NOT NULL CHECK (output_per_mtok >= 0),
    -- prompt-cache reads; NULL = priced as input
    cached_input_per_mtok numeric(12, 6) CHECK (cached_input_per_mtok >= 0),
    -- prompt-cache writes (Anthropic, 5-minute TTL); NULL = priced as input
    cache_write_per_mtok  numeric(12, 6) CHECK (cache_write_per_mtok >= 0),
    -- reasoning tokens have no price of their own: they are billed as output.
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX model_prices_provider_idx ON renlayer.model_prices (provider, model);

CREATE TRIGGER model_prices_touch BEFORE UPDATE ON renlayer.model_prices
    FOR EACH ROW EXECUTE FUNCTION renlayer.touch_updated_at();

-- The price row for a model name as reported by a request or provider (exact,
-- else longest '<model>-' prefix); no row if none matches.
CREATE FUNCTION renlayer.model_price_for(model_name text) RETURNS SETOF renlayer.model_prices
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog
AS $$
    SELECT p.*
      FROM renlayer.model_prices p
     WHERE p.model = model_name
        OR left(model_name, char_length(p.model) + 1) = p.model || '-'
     ORDER BY p.model = model_name DESC, char_length(p.model) DESC
     LIMIT 1
$$;

-- Seed: public list prices, standard tier (not batch, flex or priority), as
-- of 2025-10-20, from openai.com/api/pricing and anthropic.com/pricing.
-- Not modelled: Anthropic's long-context rate for Sonnet 4 / 4.5 above 200K
-- input tokens (input 6.00, output 22.50), 1-hour cache writes (2x input),
-- batch discounts. Operators correct or extend this table through the API.
INSERT INTO renlayer.model_prices
    (model, provider, input_per_mtok, cached_input_per_mtok, cache_write_per_mtok, output_per_mtok)
VALUES
    -- OpenAI: cached input is automatic prompt caching; no cache-write charge.
    ('gpt-4o',                 'openai',     2.50,  1.25,   NULL,   10.00),
    ('gpt-4o-mini',            'openai',     0.15,  0.075,  NULL,    0.60),
    ('gpt-4.1',                'openai',     2.00,  0.50,   NULL,    8.00),
    ('gpt-4.1-mini',           'openai',     0.40,  0.10,   NULL,    1.60),
    ('gpt-4.1-nano',           'openai',     0.10,  0.025,  NULL,    0.40),
    ('o1',                     'openai',    15.00,  7.50,   NULL,   60.00),
    ('o3',                     'openai',     2.00,  0.50,   NULL,    8.00),
    ('o3-mini',                'openai',     1.10,  0.55,   NULL,    4.40),
    ('o4-mini',                'openai',     1.10,  0.275,  NULL,    4.40),
    ('gpt-5',                  'openai',     1.25,  0.125,  NULL,   10.00),
    ('gpt-5-mini',             'openai',     0.25,  0.025,  NULL,    2.00),
    ('gpt-5-nano',             'openai',     0.05,  0.005,  NULL,    0.40),
    ('text-embedding-3-small', 'openai',     0.02,  NULL,   NULL,    0.00),
    ('text-embedding-3-large', 'openai',     0.13,  NULL,   NULL,    0.00),
    -- Anthropic: cache reads 0.1x input, 5-minute cache writes 1.25x input.
    ('claude-opus-4',          'anthropic', 15.00,  1.50,  18.75,   75.00),
    ('claude-opus-4-1',        'anthropic', 15.00,  1.50,  18.75,   75.00),
    ('claude-sonnet-4',        'anthropic',  3.00,  0.30,   3.75,   15.00),
    ('claude-sonnet-4-5',      'anthropic',  3.00,  0.30,   3.75,   15.00),
    ('claude-3-7-sonnet',      'anthropic',  3.00,  0.30,   3.75,   15.00),
    ('claude-3-5-haiku',       'anthropic',  0.80,  0.08,   1.00,    4.00),
    ('claude-haiku-4-5',       'anthropic',  1.00,  0.10,   1.25,    5.00);
