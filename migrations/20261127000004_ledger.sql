-- The tamper-evident ledger (SPEC §10). Each chain is a hash-linked sequence; the payload is
-- stored as the exact canonical text that was hashed (TEXT, not JSONB, which reorders keys).
CREATE TABLE event_log (
    id              BIGSERIAL PRIMARY KEY,
    chain_id        TEXT NOT NULL,
    seq             BIGINT NOT NULL CONSTRAINT event_log_seq_positive CHECK (seq >= 1),
    prev_hash       TEXT NOT NULL,
    event_hash      TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    tenant_id       UUID,
    agent_id        UUID,
    execution_id    TEXT,
    ts              TIMESTAMPTZ NOT NULL,
    payload         TEXT NOT NULL,
    encoding        SMALLINT NOT NULL DEFAULT 1,
    CONSTRAINT event_log_chain_seq_key UNIQUE (chain_id, seq)
);

CREATE INDEX event_log_execution_idx ON event_log (tenant_id, execution_id) WHERE execution_id IS NOT NULL;
CREATE INDEX event_log_agent_idx ON event_log (agent_id, id);
CREATE INDEX event_log_ts_idx ON event_log (ts);

CREATE FUNCTION event_log_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'event_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER event_log_append_only
    BEFORE UPDATE OR DELETE ON event_log
    FOR EACH ROW EXECUTE FUNCTION event_log_reject_change();

CREATE TRIGGER event_log_no_truncate
    BEFORE TRUNCATE ON event_log
    FOR EACH STATEMENT EXECUTE FUNCTION event_log_reject_change();

-- Signed checkpoints: the head of every chain at one moment, HMAC'd with the server key, so that
-- a truncated chain tail is detectable.
CREATE TABLE ledger_checkpoints (
    id              BIGSERIAL PRIMARY KEY,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    replica_id      UUID,
    kid             TEXT NOT NULL,
    -- JSON object {chain_id: {"seq": n, "hash": "..."}} in canonical form, exactly as signed.
    heads           TEXT NOT NULL,
    chain_count     INTEGER NOT NULL,
    event_count     BIGINT NOT NULL,
    signature       TEXT NOT NULL
);

-- The projection of facts for metrics and the dashboard: cheap to query, not tamper-evident.
CREATE TABLE events (
    id                  BIGSERIAL PRIMARY KEY,
    ts                  TIMESTAMPTZ NOT NULL DEFAULT now(),
    tenant_id           UUID,
    agent_id            UUID,
    execution_id        TEXT,
    kind                TEXT NOT NULL,
    reason              TEXT,
    model_alias         TEXT,
    cost_micro_usd      BIGINT,
    prompt_tokens       BIGINT,
    completion_tokens   BIGINT,
    latency_ms          BIGINT
);

CREATE INDEX events_ts_idx ON events (ts);
CREATE INDEX events_tenant_ts_idx ON events (tenant_id, ts);
CREATE INDEX events_agent_ts_idx ON events (agent_id, ts);
