-- 0008 operator login sessions, and the log of login-code requests that
-- their rate limits count.

-- One row per console login. The session token (an HS256 JWT) carries the
-- row's id as its jti; a token is honoured only while its row is neither
-- revoked nor expired (and its operator not disabled), so logout and
-- disabling an operator take effect at once.
CREATE TABLE renlayer.operator_sessions (
    id          uuid PRIMARY KEY,          -- the JWT's jti (UUIDv7)
    tenant_id   uuid NOT NULL REFERENCES renlayer.tenants (id) ON DELETE CASCADE,
    operator_id uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,      -- equals the JWT's exp
    revoked_at  timestamptz,               -- logout (or an administrator)
    client_addr inet,                      -- where the login came from
    FOREIGN KEY (tenant_id, operator_id) REFERENCES renlayer.operators (tenant_id, id) ON DELETE CASCADE,
    CHECK (expires_at > created_at)
);

COMMENT ON TABLE renlayer.operator_sessions IS 'Console login sessions: the jti of each session JWT';

-- An operator's sessions (listing, revoking all of them).
CREATE INDEX operator_sessions_operator_idx ON renlayer.operator_sessions (tenant_id, operator_id, created_at DESC);
-- Cleanup of long-expired sessions.
CREATE INDEX operator_sessions_expires_idx ON renlayer.operator_sessions (expires_at);

-- Every POST /v1/auth/otp/request, whether or not the address belongs to an
-- operator: the per-address and per-client rate limits count these rows, so
-- a 429 answers the same for an unknown address as for a known one (no
-- account enumeration through the limits). Not tenant-owned, like otp_codes.
-- The address is kept only as a keyed hash: unknown addresses are not
-- collected.
CREATE TABLE renlayer.otp_requests (
    id          uuid PRIMARY KEY,
    email_hash  bytea NOT NULL CHECK (octet_length(email_hash) BETWEEN 16 AND 64),  -- keyed hash of lower(email)
    client_addr inet,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX otp_requests_email_idx ON renlayer.otp_requests (email_hash, created_at DESC);
CREATE INDEX otp_requests_client_idx ON renlayer.otp_requests (client_addr, created_at DESC) WHERE client_addr IS NOT NULL;
-- Cleanup of rows past the longest rate-limit window.
CREATE INDEX otp_requests_created_idx ON renlayer.otp_requests (created_at);
