-- Settlement in one round trip (SPEC §5.3). The statements are the ones the gateway used to send
-- one by one inside a transaction; called as a single statement, the function is its own
-- transaction, so a settlement costs one round trip instead of seven (each a send, a wake-up and
-- a receive on both sides, which on a busy machine cost more than the SQL itself).
--
-- Exactly once: the compare-and-set on the reservation comes first; when it finds no RESERVED row
-- (settled before, by an earlier attempt or the reconciler) the function writes nothing and
-- returns no row. Otherwise it moves the money on the tenant (when the hold counts against it)
-- and the agent, corrects the TPM windows the estimate was charged to, finishes the execution
-- with its cached result, appends the ledger event and projects the fact.
--
-- The caller passes what it knows (`p_payload`); the facts of the hold are added here from the
-- reservation row itself: its estimate, whether it held the tenant and, for a commit, the overrun
-- and whether the agent's budget went below zero. The payload text is written in the gateway's
-- canonical form (src/ledger/encoding.rs `canonical_json`: compact, keys in byte order, JSON
-- string escapes) so every event reads alike; payloads here are flat, so each value's jsonb text
-- is already compact.
CREATE FUNCTION aex_settle(
    p_execution_id uuid, p_attempt integer, p_tenant_id uuid, p_agent_id uuid,
    p_execution_key text, p_chain_id text, p_lock_key bigint,
    -- The execution's terminal state; p_actual NULL releases the hold, else commits that cost.
    p_state text, p_actual bigint, p_prompt_tokens bigint, p_completion_tokens bigint,
    p_usage_source text, p_reason text,
    p_result_status integer, p_result_body bytea, p_result_is_stream boolean,
    p_event_type text, p_payload jsonb, p_model_alias text, p_latency_ms bigint,
    -- The rate-limit subjects (agent, tenant) whose windows the estimate was charged to.
    p_rate_subjects text[]
) RETURNS TABLE (estimate_micro_usd bigint, remaining_micro_usd bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_estimate bigint;
    v_holds_tenant boolean;
    v_rate_tokens bigint;
    v_held_at timestamptz;
    v_remaining bigint;
    v_facts jsonb;
    v_payload text;
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

    IF v_holds_tenant THEN
        UPDATE tenants SET reserved_micro_usd = reserved_micro_usd - v_estimate,
            spent_micro_usd = spent_micro_usd + COALESCE(p_actual, 0), updated_at = now()
        WHERE id = p_tenant_id;
    END IF;
    UPDATE agents SET reserved_micro_usd = reserved_micro_usd - v_estimate,
        spent_micro_usd = spent_micro_usd + COALESCE(p_actual, 0),
        prompt_tokens_total = prompt_tokens_total + COALESCE(p_prompt_tokens, 0),
        completion_tokens_total = completion_tokens_total + COALESCE(p_completion_tokens, 0),
        updated_at = now()
    WHERE id = p_agent_id
    RETURNING budget_micro_usd - spent_micro_usd - reserved_micro_usd INTO v_remaining;
    -- TPM windows were charged the estimate at admission; now the actual tokens are known.
    IF v_rate_tokens <> 0 THEN
        UPDATE rate_windows SET tokens = GREATEST(tokens + COALESCE(p_prompt_tokens, 0)
            + COALESCE(p_completion_tokens, 0) - v_rate_tokens, 0)
        WHERE subject = ANY (p_rate_subjects) AND bucket_start = date_trunc('second', v_held_at);
    END IF;

    UPDATE executions SET state = p_state, actual_micro_usd = p_actual,
        prompt_tokens = p_prompt_tokens, completion_tokens = p_completion_tokens,
        usage_source = p_usage_source, reason = p_reason, completed_at = now(), updated_at = now(),
        response_status = COALESCE(p_result_status, response_status),
        response_body = COALESCE(p_result_body, response_body),
        response_is_stream = COALESCE(p_result_is_stream, response_is_stream)
    WHERE id = p_execution_id;

    v_facts := jsonb_build_object('estimate_micro_usd', v_estimate, 'holds_tenant', v_holds_tenant);
    IF p_actual IS NOT NULL THEN
        -- The real money was spent: an overrun is recorded and flagged, never dropped.
        v_facts := v_facts || jsonb_build_object(
            'overrun_micro_usd', GREATEST(p_actual - v_estimate, 0),
            'budget_overrun', v_remaining < 0);
    END IF;
    SELECT '{' || string_agg(to_json(f.key)::text || ':' || f.value::text, ',' ORDER BY f.key COLLATE "C")
           || '}'
        INTO v_payload FROM jsonb_each(p_payload || v_facts) AS f;
    PERFORM aex_append_event(p_chain_id, p_lock_key, p_event_type, p_tenant_id, p_agent_id,
                             p_execution_key, v_payload);
    INSERT INTO events (tenant_id, agent_id, execution_id, kind, reason, model_alias,
                        cost_micro_usd, prompt_tokens, completion_tokens, latency_ms)
    VALUES (p_tenant_id, p_agent_id, p_execution_key, p_event_type, p_reason, p_model_alias,
            p_actual, p_prompt_tokens, p_completion_tokens, p_latency_ms);

    RETURN QUERY SELECT v_estimate, v_remaining;
END;
$$;
