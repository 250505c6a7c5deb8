-- The hot path's ledger events are hashed by the replica, not by Postgres (issue 17, item 2).
--
-- Before: every admitted call appended two events through aex_append_event() and every settlement
-- one, each computing the canonical encoding and SHA-256 in SQL (string building, convert_to,
-- to_char, sha256, encode), and aex_settle() also built the settlement's canonical payload with
-- jsonb_each/string_agg. Now the replica reads the chain's tail (seq, hash) under the chain's
-- advisory lock, computes each event's hash with the Rust encoder that the golden vectors pin
-- (src/ledger/encoding.rs, tests/vectors/ledger_v1.json), and Postgres only inserts the rows. The
-- verifier is unchanged and recomputes every hash, so a wrong hash cannot pass; a wrong tail
-- cannot either: (chain_id, seq) is unique.
--
-- The functions of the earlier migrations stay, unchanged, for the paths that still append one
-- event through aex_append_event (refusals, admin changes) and for replicas of the previous
-- version during a rolling upgrade.

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

-- The first half of aex_settle (migrations/20261206200001, same checks and the same saturating
-- arithmetic), inside the caller's transaction: compare-and-set the reservation, move the money,
-- correct the TPM windows, finish the execution; then take the chain's advisory lock and read its
-- tail. Returns nothing when the reservation was settled before (nothing is written). The caller
-- then builds the event (payload with these facts, hash) and writes it with aex_settle_record.
CREATE FUNCTION aex_settle_open(
    p_execution_id uuid, p_attempt integer, p_tenant_id uuid, p_agent_id uuid,
    p_chain_id text, p_lock_key bigint,
    p_state text, p_actual bigint, p_prompt_tokens bigint, p_completion_tokens bigint,
    p_usage_source text, p_reason text,
    p_result_status integer, p_result_body bytea, p_result_is_stream boolean,
    p_rate_subjects text[]
) RETURNS TABLE (estimate_micro_usd bigint, holds_tenant boolean, remaining_micro_usd bigint,
                 tail_seq bigint, tail_hash text)
LANGUAGE plpgsql AS $$
DECLARE
    c_max CONSTANT numeric := 9223372036854775807;
    c_min CONSTANT numeric := -9223372036854775808;
    v_actual numeric := COALESCE(p_actual, 0);
    v_prompt numeric := COALESCE(p_prompt_tokens, 0);
    v_completion numeric := COALESCE(p_completion_tokens, 0);
    v_estimate bigint;
    v_holds_tenant boolean;
    v_rate_tokens bigint;
    v_held_at timestamptz;
    v_remaining bigint;
    v_seq bigint;
    v_hash text;
BEGIN
    UPDATE reservations AS r SET
        state = CASE WHEN p_actual IS NULL THEN 'RELEASED' ELSE 'COMMITTED' END,
        actual_micro_usd = p_actual, reason = p_reason, settled_at = now()
    WHERE r.execution_id = p_execution_id AND r.attempt = p_attempt AND r.state = 'RESERVED'
    RETURNING r.estimate_micro_usd, r.holds_tenant, r.rate_tokens, r.created_at
        INTO v_estimate, v_holds_tenant, v_rate_tokens, v_held_at;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    -- Lock order is tenant, then agent, then the chain, as in admission.
    IF v_holds_tenant THEN
        UPDATE tenants AS t SET reserved_micro_usd = t.reserved_micro_usd - v_estimate,
            updated_at = now()
        WHERE t.id = p_tenant_id;
    END IF;
    UPDATE agents AS a SET reserved_micro_usd = a.reserved_micro_usd - v_estimate,
        spent_micro_usd = LEAST(a.spent_micro_usd + v_actual, c_max)::bigint,
        lifetime_spent_micro_usd = LEAST(a.lifetime_spent_micro_usd + v_actual, c_max)::bigint,
        prompt_tokens_total = LEAST(a.prompt_tokens_total + v_prompt, c_max)::bigint,
        completion_tokens_total = LEAST(a.completion_tokens_total + v_completion, c_max)::bigint,
        updated_at = now()
    WHERE a.id = p_agent_id
    RETURNING GREATEST(a.budget_micro_usd::numeric - a.spent_micro_usd - a.reserved_micro_usd,
                       c_min)::bigint
        INTO v_remaining;
    IF v_rate_tokens <> 0 AND (p_actual IS NULL OR p_prompt_tokens IS NOT NULL
                               OR p_completion_tokens IS NOT NULL) THEN
        UPDATE rate_windows AS w SET tokens = LEAST(GREATEST(
                w.tokens::numeric + v_prompt + v_completion - v_rate_tokens, 0), c_max)::bigint
        WHERE w.subject = ANY (p_rate_subjects) AND w.bucket_start = date_trunc('second', v_held_at);
    END IF;

    UPDATE executions AS x SET state = p_state, actual_micro_usd = p_actual,
        prompt_tokens = p_prompt_tokens, completion_tokens = p_completion_tokens,
        usage_source = p_usage_source, reason = p_reason, completed_at = now(), updated_at = now(),
        response_status = COALESCE(p_result_status, x.response_status),
        response_body = COALESCE(p_result_body, x.response_body),
        response_is_stream = COALESCE(p_result_is_stream, x.response_is_stream)
    WHERE x.id = p_execution_id;

    PERFORM pg_advisory_xact_lock(p_lock_key);
    SELECT e.seq, e.event_hash INTO v_seq, v_hash
        FROM event_log AS e WHERE e.chain_id = p_chain_id ORDER BY e.seq DESC LIMIT 1;
    RETURN QUERY SELECT v_estimate, v_holds_tenant, v_remaining, COALESCE(v_seq, 0),
                        COALESCE(v_hash, repeat('0', 64));
END;
$$;

-- The second half: the settlement's ledger event, hashed by the caller after the tail
-- aex_settle_open read, and its projected fact.
CREATE FUNCTION aex_settle_record(
    p_chain_id text, p_seq bigint, p_prev_hash text, p_event_hash text, p_ts timestamptz,
    p_event_type text, p_tenant_id uuid, p_agent_id uuid, p_execution_key text, p_payload text,
    p_reason text, p_model_alias text, p_actual bigint, p_prompt_tokens bigint,
    p_completion_tokens bigint, p_latency_ms bigint
) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO event_log (chain_id, seq, prev_hash, event_hash, event_type, tenant_id, agent_id,
                           execution_id, ts, payload, encoding)
    VALUES (p_chain_id, p_seq, p_prev_hash, p_event_hash, p_event_type, p_tenant_id, p_agent_id,
            p_execution_key, p_ts, p_payload, 1);
    INSERT INTO events (tenant_id, agent_id, execution_id, kind, reason, model_alias,
                        cost_micro_usd, prompt_tokens, completion_tokens, latency_ms)
    VALUES (p_tenant_id, p_agent_id, p_execution_key, p_event_type, p_reason, p_model_alias,
            p_actual, p_prompt_tokens, p_completion_tokens, p_latency_ms);
$$;
