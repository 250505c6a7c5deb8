-- Server instances, so that recovery can tell a live replica's work from a lost one's.
CREATE TABLE replicas (
    id              UUID PRIMARY KEY,
    hostname        TEXT NOT NULL,
    version         TEXT NOT NULL,
    started_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    stopped_at      TIMESTAMPTZ
);

-- One governed call. `execution_key` is the caller's Idempotency-Key / X-AEX-Execution-Id, or a
-- minted UUIDv7; it is unique per agent, which is the idempotency identity of SPEC §5.1.
CREATE TABLE executions (
    id                  UUID PRIMARY KEY,
    tenant_id           UUID NOT NULL REFERENCES tenants (id),
    agent_id            UUID NOT NULL REFERENCES agents (id),
    execution_key       TEXT NOT NULL,
    keyed               BOOLEAN NOT NULL,
    route               TEXT NOT NULL,
    fingerprint         TEXT NOT NULL,
    model_alias         TEXT,
    state               TEXT NOT NULL
                        CONSTRAINT executions_state_known CHECK (state IN (
                            'RESERVING', 'RESERVED', 'DISPATCHED', 'COMMITTED', 'RELEASED', 'DENIED', 'FAILED')),
    attempt             INTEGER NOT NULL DEFAULT 1,
    stream              BOOLEAN NOT NULL DEFAULT false,
    replica_id          UUID REFERENCES replicas (id),
    provider            TEXT,
    estimate_micro_usd  BIGINT NOT NULL DEFAULT 0,
    actual_micro_usd    BIGINT,
    prompt_tokens       BIGINT,
    completion_tokens   BIGINT,
    usage_source        TEXT CONSTRAINT executions_usage_source_known CHECK (usage_source IN ('reported', 'estimated')),
    reason              TEXT,
    -- The cached terminal result for replay; pruned after the retention period.
    response_status     INTEGER,
    response_body       BYTEA,
    response_is_stream  BOOLEAN NOT NULL DEFAULT false,
    result_pruned_at    TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    dispatched_at       TIMESTAMPTZ,
    completed_at        TIMESTAMPTZ,
    CONSTRAINT executions_key_per_agent UNIQUE (tenant_id, agent_id, execution_key),
    CONSTRAINT executions_key_length CHECK (length(execution_key) BETWEEN 1 AND 255)
);

CREATE INDEX executions_tenant_created_idx ON executions (tenant_id, created_at DESC);
CREATE INDEX executions_agent_created_idx ON executions (agent_id, created_at DESC);
CREATE INDEX executions_open_idx ON executions (replica_id, state)
    WHERE state IN ('RESERVING', 'RESERVED', 'DISPATCHED');
CREATE INDEX executions_prunable_idx ON executions (completed_at)
    WHERE response_body IS NOT NULL;

-- Money held for one attempt of an execution, settled exactly once.
CREATE TABLE reservations (
    id                  UUID PRIMARY KEY,
    execution_id        UUID NOT NULL REFERENCES executions (id),
    attempt             INTEGER NOT NULL,
    tenant_id           UUID NOT NULL REFERENCES tenants (id),
    agent_id            UUID NOT NULL REFERENCES agents (id),
    estimate_micro_usd  BIGINT NOT NULL CONSTRAINT reservations_estimate_non_negative CHECK (estimate_micro_usd >= 0),
    actual_micro_usd    BIGINT CONSTRAINT reservations_actual_non_negative CHECK (actual_micro_usd >= 0),
    -- Whether this hold also counts against the tenant's budget.
    holds_tenant        BOOLEAN NOT NULL DEFAULT false,
    state               TEXT NOT NULL
                        CONSTRAINT reservations_state_known CHECK (state IN ('RESERVED', 'COMMITTED', 'RELEASED')),
    reason              TEXT,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    settled_at          TIMESTAMPTZ,
    CONSTRAINT reservations_one_per_attempt UNIQUE (execution_id, attempt),
    CONSTRAINT reservations_settled_consistently CHECK (
        (state = 'RESERVED' AND settled_at IS NULL AND actual_micro_usd IS NULL)
        OR (state = 'COMMITTED' AND settled_at IS NOT NULL AND actual_micro_usd IS NOT NULL)
        OR (state = 'RELEASED' AND settled_at IS NOT NULL AND actual_micro_usd IS NULL))
);

CREATE INDEX reservations_open_idx ON reservations (agent_id) WHERE state = 'RESERVED';
CREATE INDEX reservations_committed_idx ON reservations (agent_id, settled_at) WHERE state = 'COMMITTED';
