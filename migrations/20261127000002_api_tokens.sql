-- Issued tokens. Only the JWT id and metadata are stored, never the token itself.
CREATE TABLE api_tokens (
    jti             UUID PRIMARY KEY,
    tenant_id       UUID REFERENCES tenants (id),       -- NULL only for operator tokens
    agent_id        UUID REFERENCES agents (id),        -- NULL for admin and operator tokens
    subject         TEXT NOT NULL,
    scope           TEXT NOT NULL
                    CONSTRAINT api_tokens_scope_known CHECK (scope IN ('execution', 'read-only', 'admin', 'operator')),
    kid             TEXT NOT NULL,
    description     TEXT,
    issued_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at      TIMESTAMPTZ,
    revoked_at      TIMESTAMPTZ,
    revoked_reason  TEXT,
    CONSTRAINT api_tokens_agent_scope CHECK ((agent_id IS NOT NULL) = (scope IN ('execution', 'read-only'))),
    CONSTRAINT api_tokens_tenant_scope CHECK ((tenant_id IS NULL) = (scope = 'operator'))
);

CREATE INDEX api_tokens_agent_idx ON api_tokens (agent_id);
CREATE INDEX api_tokens_revoked_idx ON api_tokens (revoked_at) WHERE revoked_at IS NOT NULL;
