-- A lone settlement in ONE round trip instead of two (issue 17: latency at one client and at
-- half of peak, where most settlements are alone and each round trip costs two wake-ups).
--
-- aex_settle_books (20261207900001) returns the agent chain's tail so that the replica can link
-- the settlement's event after it (the replica hashes, Postgres does not), and the event is
-- inserted in a second round trip. But the replica can usually predict that tail: it is the
-- attempt's own `execution.dispatched` event, which the replica hashed at admission, unless
-- another event was appended to the agent's chain since (another call of the same agent). So
-- the replica links the event after the predicted tail beforehand (src/store/settlements.rs),
-- and aex_settle_linked does what aex_settle_books does, then checks the prediction against
-- what was read under the chain's lock — the tail, the hold (its estimate and whether it held
-- the tenant) and whether the agent's budget is now overrun (the payload says so) — and inserts
-- the event. BEGIN, the call and COMMIT go in one round trip: a wrong prediction raises SQLSTATE
-- AX001, the transaction is rolled back, and the replica settles the two-round-trip way. The verifier
-- is unchanged and recomputes every hash; (chain_id, seq) stays unique.
CREATE FUNCTION aex_settle_linked(
    p_execution_id uuid, p_attempt integer, p_tenant_id uuid, p_agent_id uuid,
    p_execution_key text, p_chain_id text, p_lock_key bigint,
    p_state text, p_actual bigint, p_prompt_tokens bigint, p_completion_tokens bigint,
    p_usage_source text, p_reason text,
    p_result_status integer, p_result_body bytea, p_result_is_stream boolean,
    p_event_type text, p_model_alias text, p_latency_ms bigint,
    p_rate_subjects text[],
    -- The prediction: the hold, and the event linked after the tail it expects.
    p_estimate bigint, p_holds_tenant boolean, p_budget_overrun boolean,
    p_seq bigint, p_prev_hash text, p_event_hash text, p_ts timestamptz, p_payload text
) RETURNS TABLE (estimate_micro_usd bigint, holds_tenant boolean, remaining_micro_usd bigint)
LANGUAGE plpgsql AS $$
DECLARE
    b record;
BEGIN
    SELECT * INTO b FROM aex_settle_books(p_execution_id, p_attempt, p_tenant_id, p_agent_id,
        p_execution_key, p_chain_id, p_lock_key, p_state, p_actual, p_prompt_tokens,
        p_completion_tokens, p_usage_source, p_reason, p_result_status, p_result_body,
        p_result_is_stream, p_event_type, p_model_alias, p_latency_ms, p_rate_subjects);
    IF NOT FOUND THEN
        -- Settled before: nothing was written.
        RETURN;
    END IF;
    IF b.tail_seq <> p_seq - 1 OR b.tail_hash <> p_prev_hash
       OR b.estimate_micro_usd <> p_estimate OR b.holds_tenant <> p_holds_tenant
       OR (p_budget_overrun IS NOT NULL AND (b.remaining_micro_usd < 0) <> p_budget_overrun) THEN
        RAISE EXCEPTION 'the settlement was linked to a stale prediction of its chain'
            USING ERRCODE = 'AX001';
    END IF;
    INSERT INTO event_log (chain_id, seq, prev_hash, event_hash, event_type, tenant_id, agent_id,
                           execution_id, ts, payload, encoding)
    VALUES (p_chain_id, p_seq, p_prev_hash, p_event_hash, p_event_type, p_tenant_id, p_agent_id,
            p_execution_key, p_ts, p_payload, 1);
    RETURN QUERY SELECT b.estimate_micro_usd, b.holds_tenant, b.remaining_micro_usd;
END;
$$;
