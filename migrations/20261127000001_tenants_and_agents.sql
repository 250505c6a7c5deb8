-- Tenants and the agents that spend money. Money is BIGINT micro-USD everywhere.
CREATE TABLE tenants (
    id                  UUID PRIMARY KEY,
    name                TEXT NOT NULL CONSTRAINT tenants_name_key UNIQUE,
    -- Optional budget every agent of the tenant also draws from (NULL: unlimited).
    budget_micro_usd    BIGINT CONSTRAINT tenants_budget_non_negative CHECK (budget_micro_usd >= 0),
    spent_micro_usd     BIGINT NOT NULL DEFAULT 0
                        CONSTRAINT tenants_spent_non_negative CHECK (spent_micro_usd >= 0),
    reserved_micro_usd  BIGINT NOT NULL DEFAULT 0
                        CONSTRAINT tenants_reserved_non_negative CHECK (reserved_micro_usd >= 0),
    rpm_limit           INTEGER CONSTRAINT tenants_rpm_positive CHECK (rpm_limit > 0),
    tpm_limit           BIGINT CONSTRAINT tenants_tpm_positive CHECK (tpm_limit > 0),
    -- Policy values agents inherit unless they set their own (JSON object of policy fields).
    default_policy      JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT tenants_name_not_blank CHECK (length(btrim(name)) > 0)
);

-- The tenant that always exists. Its id is fixed so that every installation agrees on it.
INSERT INTO tenants (id, name) VALUES ('00000000-0000-0000-0000-000000000001', 'default');

CREATE TABLE agents (
    id                  UUID PRIMARY KEY,
    tenant_id           UUID NOT NULL REFERENCES tenants (id),
    name                TEXT NOT NULL,
    budget_micro_usd    BIGINT NOT NULL CONSTRAINT agents_budget_non_negative CHECK (budget_micro_usd >= 0),
    -- spent may exceed budget after a recorded overrun; it is never negative.
    spent_micro_usd     BIGINT NOT NULL DEFAULT 0
                        CONSTRAINT agents_spent_non_negative CHECK (spent_micro_usd >= 0),
    reserved_micro_usd  BIGINT NOT NULL DEFAULT 0
                        CONSTRAINT agents_reserved_non_negative CHECK (reserved_micro_usd >= 0),
    budget_period       TEXT NOT NULL DEFAULT 'lifetime'
                        CONSTRAINT agents_budget_period_known CHECK (budget_period IN ('lifetime', 'daily', 'monthly')),
    period_started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    rpm_limit           INTEGER CONSTRAINT agents_rpm_positive CHECK (rpm_limit > 0),
    tpm_limit           BIGINT CONSTRAINT agents_tpm_positive CHECK (tpm_limit > 0),
    -- Policy fields (SPEC §6) as a JSON object; absent fields inherit the tenant default.
    policy              JSONB NOT NULL DEFAULT '{}'::jsonb,
    state               TEXT NOT NULL DEFAULT 'READY'
                        CONSTRAINT agents_state_known CHECK (state IN (
                            'REGISTERED', 'READY', 'RUNNING', 'PAUSED', 'STOPPING', 'STOPPED',
                            'QUARANTINED', 'ERROR_RECOVERY', 'DECOMMISSIONED')),
    prompt_tokens_total      BIGINT NOT NULL DEFAULT 0,
    completion_tokens_total  BIGINT NOT NULL DEFAULT 0,
    requests_total           BIGINT NOT NULL DEFAULT 0,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT agents_tenant_name_key UNIQUE (tenant_id, name),
    CONSTRAINT agents_name_not_blank CHECK (length(btrim(name)) > 0)
);

CREATE INDEX agents_tenant_idx ON agents (tenant_id, created_at);
