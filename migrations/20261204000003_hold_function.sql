-- The writes of an admitted call in one round trip (SPEC §5.2), inside the admission
-- transaction, while it holds the agent's row lock: the execution (new, or the next attempt of a
-- released one) written DISPATCHED, its reservation, the estimate added to the tenant's books
-- (when the hold counts against its budget) and the agent's, and the ledger events
-- `reservation.reserved` and `execution.dispatched` (payloads in the gateway's canonical form,
-- from the caller). Sent one by one these were six round trips under that lock: under one busy
-- agent, every round trip inside it is paid by every other request of the agent.

-- The execution row, shared with the refusal path (which writes it DENIED): a new execution, or
-- a released/failed one turned into its next attempt (same row, so a key keeps one identity).
CREATE FUNCTION aex_upsert_execution(
    p_id uuid, p_tenant_id uuid, p_agent_id uuid, p_execution_key text, p_keyed boolean,
    p_route text, p_fingerprint text, p_model_alias text, p_state text, p_attempt integer,
    p_stream boolean, p_replica_id uuid, p_estimate bigint, p_reason text, p_provider text
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO executions AS e (id, tenant_id, agent_id, execution_key, keyed, route, fingerprint,
                                 model_alias, state, attempt, stream, replica_id,
                                 estimate_micro_usd, reason, provider, dispatched_at, completed_at)
    VALUES (p_id, p_tenant_id, p_agent_id, p_execution_key, p_keyed, p_route, p_fingerprint,
            p_model_alias, p_state, p_attempt, p_stream, p_replica_id, p_estimate, p_reason,
            p_provider,
            CASE WHEN p_state = 'DISPATCHED' THEN now() END,
            CASE WHEN p_state IN ('DENIED', 'FAILED') THEN now() END)
    ON CONFLICT ON CONSTRAINT executions_key_per_agent DO UPDATE SET
        state = EXCLUDED.state, attempt = EXCLUDED.attempt, stream = EXCLUDED.stream,
        replica_id = EXCLUDED.replica_id, estimate_micro_usd = EXCLUDED.estimate_micro_usd,
        model_alias = EXCLUDED.model_alias, reason = EXCLUDED.reason,
        provider = EXCLUDED.provider, actual_micro_usd = NULL, prompt_tokens = NULL,
        completion_tokens = NULL, usage_source = NULL, response_status = NULL,
        response_body = NULL, dispatched_at = EXCLUDED.dispatched_at,
        completed_at = EXCLUDED.completed_at, updated_at = now();
END;
$$;

CREATE FUNCTION aex_hold(
    -- The execution, as aex_upsert_execution takes it.
    p_id uuid, p_tenant_id uuid, p_agent_id uuid, p_execution_key text, p_keyed boolean,
    p_route text, p_fingerprint text, p_model_alias text, p_state text, p_attempt integer,
    p_stream boolean, p_replica_id uuid, p_estimate bigint, p_provider text,
    -- The reservation of this attempt.
    p_reservation_id uuid, p_holds_tenant boolean, p_rate_tokens bigint,
    -- The agent's chain and the two events' payloads.
    p_chain_id text, p_lock_key bigint, p_reserved_payload text, p_dispatched_payload text
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
    PERFORM aex_append_event(p_chain_id, p_lock_key, 'reservation.reserved', p_tenant_id,
                             p_agent_id, p_execution_key, p_reserved_payload);
    PERFORM aex_append_event(p_chain_id, p_lock_key, 'execution.dispatched', p_tenant_id,
                             p_agent_id, p_execution_key, p_dispatched_payload);
END;
$$;
