-- The writes of an admitted call in one round trip (SPEC §5.2), inside the admission
-- transaction, after the execution row is written: the reservation, the estimate added to the
-- tenant's books (when the hold counts against its budget) and the agent's, and the ledger
-- events `reservation.reserved` and `execution.dispatched` (payloads in the gateway's canonical
-- form, from the caller). Sent one by one these were five round trips, all while the agent's row
-- lock was held: under one busy agent, every round trip inside that lock is paid by every other
-- request of the agent.
CREATE FUNCTION aex_hold(
    p_reservation_id uuid, p_execution_id uuid, p_attempt integer, p_tenant_id uuid,
    p_agent_id uuid, p_estimate bigint, p_holds_tenant boolean, p_rate_tokens bigint,
    p_execution_key text, p_chain_id text, p_lock_key bigint,
    p_reserved_payload text, p_dispatched_payload text
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reservations (id, execution_id, attempt, tenant_id, agent_id, estimate_micro_usd,
                              holds_tenant, rate_tokens, state)
    VALUES (p_reservation_id, p_execution_id, p_attempt, p_tenant_id, p_agent_id, p_estimate,
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
