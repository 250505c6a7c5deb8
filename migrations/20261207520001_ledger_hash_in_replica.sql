-- The admission's ledger events are hashed by the replica, not by Postgres (issue 17, item 2).
--
-- Before: every admitted call appended two events through aex_append_event(), each computing the
-- canonical encoding and SHA-256 in SQL (string building, convert_to, to_char, sha256, encode).
-- Now admission reads the chain's tail (seq, hash) under the chain's advisory lock in the round
-- trip that already locks the agent's row, computes both hashes with the Rust encoder that the
-- golden vectors pin (src/ledger/encoding.rs, tests/vectors/ledger_v1.json), and Postgres only
-- inserts the rows. The verifier is unchanged and recomputes every hash, so a wrong hash cannot
-- pass; a wrong tail cannot either: (chain_id, seq) is unique.
--
-- The settlement still hashes its one event in aex_settle(): hashing it in the replica needs the
-- tail, which only exists under the lock the settlement takes, so its one autocommitted statement
-- becomes BEGIN, settle-and-read-tail, append, COMMIT — four round trips. Measured with
-- bench/driver.rs on this 2-core machine that cost Postgres more CPU than the SQL hashing it
-- saved (and lowered throughput at c=64); it pays once settlements are batched or pipelined
-- (issue 17, items 1 and 3), where the extra round trip is shared.
--
-- The functions of the earlier migrations stay, unchanged, for the paths that still append
-- through aex_append_event (refusals, admin changes, settlements) and for replicas of the
-- previous version during a rolling upgrade.

-- The admission's agent lock, then the chain's advisory lock, then the chain's tail: in one round
-- trip, in this order (a row lock before the chain lock, as everywhere), and the tail read by a
-- statement of its own that starts after both locks are held, so that it sees every event
-- committed before them (a single SELECT would read the tail with the snapshot it took before
-- waiting for the locks).
CREATE FUNCTION aex_lock_agent_chain(p_tenant_id uuid, p_agent_id uuid, p_chain_id text,
                                     p_lock_key bigint)
RETURNS TABLE (
    id uuid, tenant_id uuid, name text, budget_micro_usd bigint, spent_micro_usd bigint,
    reserved_micro_usd bigint, budget_period text, period_started_at timestamptz,
    rpm_limit integer, tpm_limit bigint, policy jsonb, state text, prompt_tokens_total bigint,
    completion_tokens_total bigint, requests_total bigint, created_at timestamptz,
    updated_at timestamptz, tail_seq bigint, tail_hash text
)
LANGUAGE plpgsql AS $$
DECLARE
    a agents%ROWTYPE;
    v_seq bigint;
    v_hash text;
BEGIN
    SELECT * INTO a FROM agents AS g WHERE g.tenant_id = p_tenant_id AND g.id = p_agent_id
        FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(p_lock_key);
    SELECT e.seq, e.event_hash INTO v_seq, v_hash
        FROM event_log AS e WHERE e.chain_id = p_chain_id ORDER BY e.seq DESC LIMIT 1;
    RETURN QUERY SELECT a.id, a.tenant_id, a.name, a.budget_micro_usd, a.spent_micro_usd,
        a.reserved_micro_usd, a.budget_period, a.period_started_at, a.rpm_limit, a.tpm_limit,
        a.policy, a.state, a.prompt_tokens_total, a.completion_tokens_total, a.requests_total,
        a.created_at, a.updated_at, COALESCE(v_seq, 0), COALESCE(v_hash, repeat('0', 64));
END;
$$;

-- aex_hold (migrations/20261204000003) with its two events hashed by the caller: the first at
-- p_seq after p_prev_hash, the second right after it. The caller holds the chain's advisory lock
-- (aex_lock_agent_chain) and read p_seq - 1 as the tail under it.
CREATE FUNCTION aex_hold_hashed(
    p_id uuid, p_tenant_id uuid, p_agent_id uuid, p_execution_key text, p_keyed boolean,
    p_route text, p_fingerprint text, p_model_alias text, p_state text, p_attempt integer,
    p_stream boolean, p_replica_id uuid, p_estimate bigint, p_provider text,
    p_reservation_id uuid, p_holds_tenant boolean, p_rate_tokens bigint,
    p_chain_id text, p_ts timestamptz, p_seq bigint, p_prev_hash text,
    p_reserved_hash text, p_reserved_payload text, p_dispatched_hash text,
    p_dispatched_payload text
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM aex_upsert_execution(p_id, p_tenant_id, p_agent_id, p_execution_key, p_keyed, p_route,
                                 p_fingerprint, p_model_alias, p_state, p_attempt, p_stream,
                                 p_replica_id, p_estimate, NULL, p_provider);
    INSERT INTO reservations (id, execution_id, attempt, tenant_id, agent_id, estimate_micro_usd,
                              holds_tenant, rate_tokens, state)
    VALUES (p_reservation_id, p_id, p_attempt, p_tenant_id, p_agent_id, p_estimate,
            p_holds_tenant, p_rate_tokens, 'RESERVED');
    IF p_holds_tenant THEN
        UPDATE tenants SET reserved_micro_usd = reserved_micro_usd + p_estimate, updated_at = now()
        WHERE id = p_tenant_id;
    END IF;
    UPDATE agents SET reserved_micro_usd = reserved_micro_usd + p_estimate,
        requests_total = requests_total + 1, updated_at = now()
    WHERE id = p_agent_id;
    INSERT INTO event_log (chain_id, seq, prev_hash, event_hash, event_type, tenant_id, agent_id,
                           execution_id, ts, payload, encoding)
    VALUES (p_chain_id, p_seq, p_prev_hash, p_reserved_hash, 'reservation.reserved', p_tenant_id,
            p_agent_id, p_execution_key, p_ts, p_reserved_payload, 1),
           (p_chain_id, p_seq + 1, p_reserved_hash, p_dispatched_hash, 'execution.dispatched',
            p_tenant_id, p_agent_id, p_execution_key, p_ts, p_dispatched_payload, 1);
END;
$$;
