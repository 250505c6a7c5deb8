-- The settlement's ledger event is hashed by the replica, not by Postgres (issue 17, items 2 and 3).
--
-- aex_settle (migrations/20261206200001) did everything in one autocommitted statement, including
-- the canonical encoding of the payload and SHA-256 in plpgsql. Now the settlement is a
-- transaction of two pipelined round trips on the money transactions' own connection pool
-- (src/store/hot.rs, src/store/settlements.rs):
--
--   1. BEGIN + aex_settle_books(...): the compare-and-set of the reservation, the money on the
--      tenant and agent rows, the TPM correction, the execution's end and cached answer, the
--      projected fact — exactly as aex_settle wrote them, in the same order (so the same row
--      locks, in the same order, and the same alert triggers fire) — then the chain's advisory
--      lock and the chain's tail, read by a statement of its own after the lock is held (see
--      aex_lock_agent_chain, migrations/20261207520001). It returns what the event's payload needs
--      from the books (the hold, whether it held the tenant, the agent's remaining budget) and
--      the tail. No row: the reservation was settled before, and nothing was written.
--   2. INSERT of the event, hashed by the replica with the Rust encoder the golden vectors pin
--      (src/ledger/encoding.rs, src/ledger/link.rs), + COMMIT.
--
-- The payload the replica writes is the one aex_settle wrote: the caller's fields merged with the
-- facts of the hold (estimate_micro_usd, holds_tenant and, for a charge, overrun_micro_usd and
-- budget_overrun), keys in byte order, compact. The verifier is unchanged and recomputes every
-- hash; (chain_id, seq) is unique, so a stale tail cannot be written either.
--
-- aex_settle stays, unchanged, for replicas of the previous version during a rolling upgrade.

CREATE FUNCTION aex_settle_books(
    p_execution_id uuid, p_attempt integer, p_tenant_id uuid, p_agent_id uuid,
    p_execution_key text, p_chain_id text, p_lock_key bigint,
    p_state text, p_actual bigint, p_prompt_tokens bigint, p_completion_tokens bigint,
    p_usage_source text, p_reason text,
    p_result_status integer, p_result_body bytea, p_result_is_stream boolean,
    p_event_type text, p_model_alias text, p_latency_ms bigint,
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

    -- Lock order is tenant, then agent, as in admission.
    IF v_holds_tenant THEN
        UPDATE tenants SET reserved_micro_usd = reserved_micro_usd - v_estimate, updated_at = now()
        WHERE id = p_tenant_id;
    END IF;
    UPDATE agents SET reserved_micro_usd = reserved_micro_usd - v_estimate,
        spent_micro_usd = LEAST(spent_micro_usd + v_actual, c_max)::bigint,
        lifetime_spent_micro_usd = LEAST(lifetime_spent_micro_usd + v_actual, c_max)::bigint,
        prompt_tokens_total = LEAST(prompt_tokens_total + v_prompt, c_max)::bigint,
        completion_tokens_total = LEAST(completion_tokens_total + v_completion, c_max)::bigint,
        updated_at = now()
    WHERE id = p_agent_id
    RETURNING GREATEST(budget_micro_usd::numeric - spent_micro_usd - reserved_micro_usd, c_min)::bigint
        INTO v_remaining;
    IF v_rate_tokens <> 0 AND (p_actual IS NULL OR p_prompt_tokens IS NOT NULL
                               OR p_completion_tokens IS NOT NULL) THEN
        UPDATE rate_windows SET tokens = LEAST(GREATEST(
                tokens::numeric + v_prompt + v_completion - v_rate_tokens, 0), c_max)::bigint
        WHERE subject = ANY (p_rate_subjects) AND bucket_start = date_trunc('second', v_held_at);
    END IF;

    UPDATE executions SET state = p_state, actual_micro_usd = p_actual,
        prompt_tokens = p_prompt_tokens, completion_tokens = p_completion_tokens,
        usage_source = p_usage_source, reason = p_reason, completed_at = now(), updated_at = now(),
        response_status = COALESCE(p_result_status, response_status),
        response_body = COALESCE(p_result_body, response_body),
        response_is_stream = COALESCE(p_result_is_stream, response_is_stream)
    WHERE id = p_execution_id;

    INSERT INTO events (tenant_id, agent_id, execution_id, kind, reason, model_alias,
                        cost_micro_usd, prompt_tokens, completion_tokens, latency_ms)
    VALUES (p_tenant_id, p_agent_id, p_execution_key, p_event_type, p_reason, p_model_alias,
            p_actual, p_prompt_tokens, p_completion_tokens, p_latency_ms);

    PERFORM pg_advisory_xact_lock(p_lock_key);
    SELECT e.seq, e.event_hash INTO v_seq, v_hash
        FROM event_log AS e WHERE e.chain_id = p_chain_id ORDER BY e.seq DESC LIMIT 1;

    RETURN QUERY SELECT v_estimate, v_holds_tenant, v_remaining, COALESCE(v_seq, 0),
        COALESCE(v_hash, repeat('0', 64));
END;
$$;
