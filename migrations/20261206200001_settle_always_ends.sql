-- Settlement always ends, and tenants' books are always kept (SPEC §5.3, §5.4, issue 14).
--
-- 1. `usage_source` may be `ambiguous`: a provider call that timed out or lost its connection
--    after the request was sent (or a tool that started and timed out or overflowed) is charged
--    the hold, since the provider may have done and billed the whole work.
-- 2. A tenant's `spent` counts every committed cost of its agents, with or without a tenant
--    budget, and never resets with an agent's budget period. It is kept per agent, in
--    `agents.lifetime_spent_micro_usd` (moved under the agent's row lock, which settlement holds
--    anyway), and a tenant's `spent` is the sum over its agents (`store::tenants` computes it).
--    A counter on the tenant row, moved by every settlement of every agent, would serialise a
--    busy tenant's settlements on that one row: measured with pgbench on this machine (64
--    clients, 64 agents of one tenant, an update of the agent row per transaction), adding an
--    update of the tenant row took 4,400-4,500 transactions/s down to 350-375. So the tenant row's
--    own `spent_micro_usd`, which counted only holds against a tenant budget, is dropped rather
--    than left to mislead. The tenant's `reserved` stays on its row: it is what holds against the
--    tenant's budget (`holds_tenant`), moved only for tenants with a budget, whose admissions
--    lock that row anyway.
-- 3. aex_settle is replaced (same signature): every counter moves with checked arithmetic (sums
--    computed in `numeric`, saturating at the bigint range instead of failing), so an absurd
--    reported usage cannot make the settlement fail and leave the execution DISPATCHED with money
--    reserved. (The gateway already caps one charge at `settlement::MAX_CHARGE_MICRO_USD`, 10^15
--    micro-USD; a counter could only reach the bigint ceiling after thousands of such charges, and
--    the audit then names the agent whose spent no longer equals its committed costs.)
ALTER TABLE executions DROP CONSTRAINT executions_usage_source_known;
ALTER TABLE executions ADD CONSTRAINT executions_usage_source_known
    CHECK (usage_source IN ('reported', 'estimated', 'ambiguous'));

ALTER TABLE agents ADD COLUMN lifetime_spent_micro_usd BIGINT NOT NULL DEFAULT 0
    CONSTRAINT agents_lifetime_spent_non_negative CHECK (lifetime_spent_micro_usd >= 0);
UPDATE agents a SET lifetime_spent_micro_usd = c.total
FROM (SELECT agent_id, LEAST(sum(actual_micro_usd), 9223372036854775807)::bigint AS total
      FROM reservations WHERE state = 'COMMITTED' GROUP BY agent_id) c
WHERE c.agent_id = a.id;
ALTER TABLE tenants DROP COLUMN spent_micro_usd;

CREATE OR REPLACE FUNCTION aex_settle(
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
    -- TPM windows were charged the estimate at admission; now the actual tokens are known. An
    -- ambiguous charge (money, no token counts) keeps the estimate: the provider may have used it.
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

    v_facts := jsonb_build_object('estimate_micro_usd', v_estimate, 'holds_tenant', v_holds_tenant);
    IF p_actual IS NOT NULL THEN
        -- The real money was spent: an overrun is recorded and flagged, never dropped. Whose it
        -- is (`overrun`: provider or aex) is the gateway's judgement, in p_payload.
        v_facts := v_facts || jsonb_build_object(
            'overrun_micro_usd', GREATEST(v_actual - v_estimate, 0),
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
