-- Rate-limit windows (SPEC §7): per subject ('agent:<id>' or 'tenant:<id>'), one row per
-- one-second bucket; the sum over the last 60 buckets is the sliding minute.
CREATE TABLE rate_windows (
    subject         TEXT NOT NULL,
    bucket_start    TIMESTAMPTZ NOT NULL,
    requests        INTEGER NOT NULL DEFAULT 0,
    tokens          BIGINT NOT NULL DEFAULT 0,
    CONSTRAINT rate_windows_pkey PRIMARY KEY (subject, bucket_start)
);

-- Registered tool plugins (SPEC §8).
CREATE TABLE tool_plugins (
    id                  UUID PRIMARY KEY,
    tenant_id           UUID NOT NULL REFERENCES tenants (id),
    name                TEXT NOT NULL,
    version             TEXT NOT NULL,
    kind                TEXT NOT NULL CONSTRAINT tool_plugins_kind_known CHECK (kind IN ('http', 'process')),
    cost_micro_usd      BIGINT NOT NULL CONSTRAINT tool_plugins_cost_non_negative CHECK (cost_micro_usd >= 0),
    timeout_ms          INTEGER NOT NULL CONSTRAINT tool_plugins_timeout_positive CHECK (timeout_ms > 0),
    max_output_bytes    INTEGER NOT NULL CONSTRAINT tool_plugins_output_positive CHECK (max_output_bytes > 0),
    enabled             BOOLEAN NOT NULL DEFAULT true,
    -- kind-specific: {"url": ...} for http, {"path": ..., "sha256": ..., "args": [...]} for process
    manifest            JSONB NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT tool_plugins_tenant_name_key UNIQUE (tenant_id, name)
);

-- Versions of the routing table; the one with the highest version is active.
CREATE TABLE config_versions (
    version         BIGSERIAL PRIMARY KEY,
    content         TEXT NOT NULL,
    content_hash    TEXT NOT NULL,
    source          TEXT NOT NULL,
    created_by      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
