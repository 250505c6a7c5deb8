-- Agents with rate limits of their own in the admission batch (issue 17): their calls used to
-- take the general way, one transaction each behind the agent's gate, and `aex agent create`
-- gives every agent an RPM. The batch now reads each agent's windows after its lock
-- (src/store/hold_batch.rs), decides the limits in Rust with the general way's rule
-- (`rate_limit::decide`), and counts the admissions in their windows in the hold's round trip;
-- each hold's reservation keeps the tokens it charged (`rate_tokens`), which settlement corrects
-- to the tokens used, as for a call admitted the general way.
--
-- aex_hold_batch takes the reservations' rate_tokens (one more array); the 20-argument version
-- of 20261208000002 stays for replicas of the previous version during a rolling upgrade, and
-- now writes through this one with no tokens charged.

CREATE FUNCTION aex_hold_batch(
    p_ids uuid[], p_tenant_ids uuid[], p_agent_ids uuid[], p_execution_keys text[],
    p_routes text[], p_fingerprints text[], p_model_aliases text[], p_streams boolean[],
    p_replica_id uuid, p_estimates bigint[], p_providers text[], p_reservation_ids uuid[],
    p_chain_ids text[], p_ts timestamptz[], p_seqs bigint[], p_prev_hashes text[],
    p_reserved_hashes text[], p_reserved_payloads text[], p_dispatched_hashes text[],
    p_dispatched_payloads text[], p_rate_tokens bigint[]
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO executions (id, tenant_id, agent_id, execution_key, keyed, route, fingerprint,
                            model_alias, state, attempt, stream, replica_id, estimate_micro_usd,
                            provider, dispatched_at)
    SELECT h.id, h.tenant_id, h.agent_id, h.execution_key, false, h.route, h.fingerprint,
           h.model_alias, 'DISPATCHED', 1, h.stream, p_replica_id, h.estimate, h.provider, now()
    FROM unnest(p_ids, p_tenant_ids, p_agent_ids, p_execution_keys, p_routes, p_fingerprints,
                p_model_aliases, p_streams, p_estimates, p_providers)
         AS h(id, tenant_id, agent_id, execution_key, route, fingerprint, model_alias, stream,
              estimate, provider);
    INSERT INTO reservations (id, execution_id, attempt, tenant_id, agent_id, estimate_micro_usd,
                              holds_tenant, rate_tokens, state)
    SELECT r.id, r.execution_id, 1, r.tenant_id, r.agent_id, r.estimate, false, r.rate_tokens,
           'RESERVED'
    FROM unnest(p_reservation_ids, p_ids, p_tenant_ids, p_agent_ids, p_estimates, p_rate_tokens)
         AS r(id, execution_id, tenant_id, agent_id, estimate, rate_tokens);
    UPDATE agents AS g SET reserved_micro_usd = g.reserved_micro_usd + d.estimate,
        requests_total = g.requests_total + d.holds, updated_at = now()
    FROM (SELECT u.agent_id, sum(u.estimate)::bigint AS estimate, count(*) AS holds
          FROM unnest(p_agent_ids, p_estimates) AS u(agent_id, estimate)
          GROUP BY u.agent_id) AS d
    WHERE g.id = d.agent_id;
    INSERT INTO event_log (chain_id, seq, prev_hash, event_hash, event_type, tenant_id, agent_id,
                           execution_id, ts, payload, encoding)
    SELECT v.chain_id, v.seq, v.prev_hash, v.event_hash, v.event_type, v.tenant_id, v.agent_id,
           v.execution_key, v.ts, v.payload, 1
    FROM unnest(p_chain_ids, p_seqs, p_prev_hashes, p_reserved_hashes, p_reserved_payloads,
                p_dispatched_hashes, p_dispatched_payloads, p_tenant_ids, p_agent_ids,
                p_execution_keys, p_ts)
         AS h(chain_id, seq, prev_hash, reserved_hash, reserved_payload, dispatched_hash,
              dispatched_payload, tenant_id, agent_id, execution_key, ts)
    CROSS JOIN LATERAL (VALUES
        (h.chain_id, h.seq, h.prev_hash, h.reserved_hash, 'reservation.reserved', h.tenant_id,
         h.agent_id, h.execution_key, h.ts, h.reserved_payload),
        (h.chain_id, h.seq + 1, h.reserved_hash, h.dispatched_hash, 'execution.dispatched',
         h.tenant_id, h.agent_id, h.execution_key, h.ts, h.dispatched_payload))
        AS v(chain_id, seq, prev_hash, event_hash, event_type, tenant_id, agent_id, execution_key,
             ts, payload)
    ORDER BY v.chain_id, v.seq;
END;
$$;

CREATE OR REPLACE FUNCTION aex_hold_batch(
    p_ids uuid[], p_tenant_ids uuid[], p_agent_ids uuid[], p_execution_keys text[],
    p_routes text[], p_fingerprints text[], p_model_aliases text[], p_streams boolean[],
    p_replica_id uuid, p_estimates bigint[], p_providers text[], p_reservation_ids uuid[],
    p_chain_ids text[], p_ts timestamptz[], p_seqs bigint[], p_prev_hashes text[],
    p_reserved_hashes text[], p_reserved_payloads text[], p_dispatched_hashes text[],
    p_dispatched_payloads text[]
) RETURNS void
LANGUAGE sql AS $$
    SELECT aex_hold_batch(p_ids, p_tenant_ids, p_agent_ids, p_execution_keys, p_routes,
        p_fingerprints, p_model_aliases, p_streams, p_replica_id, p_estimates, p_providers,
        p_reservation_ids, p_chain_ids, p_ts, p_seqs, p_prev_hashes, p_reserved_hashes,
        p_reserved_payloads, p_dispatched_hashes, p_dispatched_payloads,
        array_fill(0::bigint, ARRAY[cardinality(p_ids)]));
$$;
