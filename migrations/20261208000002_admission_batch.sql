-- The common admissions of one replica, batched (issue 17, item 1): the calls that arrive while
-- the replica's admission writers are busy are locked, decided and held together, in one
-- transaction whose statements are SET-BASED — one statement per table for the whole batch —
-- where each call used to run its own (Postgres's profile was dominated by per-statement executor
-- start-up, not by rows).
--
-- The batch only carries unkeyed first attempts of agents without rate limits whose tenant has no
-- limits of its own (src/gateway/admission/batch.rs): their holds never count against the tenant
-- (whose row would have to be locked before the agents'), charge no TPM window, and their
-- execution keys are fresh, so a plain INSERT replaces aex_upsert_execution's upsert (which
-- exists for the next attempt of a keyed call reusing its row); a conflict can only be a bug,
-- and it fails the batch, whose members are then admitted one by one the way they were before.
--
-- aex_lock_agent_chain and aex_hold_hashed stay for the single path and for replicas of the
-- previous version during a rolling upgrade.

-- Locks the DISTINCT agents of a batch (FOR UPDATE, in ascending id order: every transaction that
-- locks several agents locks them in that order, so two batches cannot deadlock), then their
-- chains' advisory locks in the same order (a chain's lock only after its agent's row lock, as
-- everywhere), then reads every agent's row, chain tail and tenant admission view in a statement
-- of its own that starts after all the locks are held (so it sees everything committed before
-- them). An agent that does not exist (or not under that tenant) is simply not returned.
CREATE FUNCTION aex_lock_agent_chains(p_tenant_ids uuid[], p_agent_ids uuid[],
                                      p_chain_ids text[], p_lock_keys bigint[])
RETURNS TABLE (
    id uuid, tenant_id uuid, name text, budget_micro_usd bigint, spent_micro_usd bigint,
    reserved_micro_usd bigint, budget_period text, period_started_at timestamptz,
    rpm_limit integer, tpm_limit bigint, policy jsonb, state text, prompt_tokens_total bigint,
    completion_tokens_total bigint, requests_total bigint, created_at timestamptz,
    updated_at timestamptz, tail_seq bigint, tail_hash text, tenant_limited boolean,
    tenant_policy jsonb
)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM agents AS g
        JOIN unnest(p_tenant_ids, p_agent_ids) AS w(tenant_id, agent_id)
          ON g.id = w.agent_id AND g.tenant_id = w.tenant_id
        ORDER BY g.id FOR UPDATE OF g;
    PERFORM pg_advisory_xact_lock(w.lock_key)
        FROM (SELECT DISTINCT k.agent_id, k.lock_key
                FROM unnest(p_agent_ids, p_lock_keys) AS k(agent_id, lock_key)
                JOIN agents AS g ON g.id = k.agent_id) AS w
        ORDER BY w.agent_id;
    RETURN QUERY SELECT g.id, g.tenant_id, g.name, g.budget_micro_usd, g.spent_micro_usd,
        g.reserved_micro_usd, g.budget_period, g.period_started_at, g.rpm_limit, g.tpm_limit,
        g.policy, g.state, g.prompt_tokens_total, g.completion_tokens_total, g.requests_total,
        g.created_at, g.updated_at, COALESCE(tail.seq, 0), COALESCE(tail.event_hash, repeat('0', 64)),
        (t.budget_micro_usd IS NOT NULL OR t.rpm_limit IS NOT NULL OR t.tpm_limit IS NOT NULL),
        t.default_policy
    FROM unnest(p_tenant_ids, p_agent_ids, p_chain_ids) AS w(tenant_id, agent_id, chain_id)
    JOIN agents AS g ON g.id = w.agent_id AND g.tenant_id = w.tenant_id
    JOIN tenants AS t ON t.id = g.tenant_id
    LEFT JOIN LATERAL (SELECT e.seq, e.event_hash FROM event_log AS e
                       WHERE e.chain_id = w.chain_id ORDER BY e.seq DESC LIMIT 1) AS tail ON true;
END;
$$;

-- N holds, set-based: the executions (DISPATCHED, attempt 1, unkeyed), their reservations, each
-- agent's books moved by the SUM of its members' estimates and their COUNT (an UPDATE … FROM
-- with several rows joining one agent would apply only one of them), and the 2N ledger events as
-- hashed by the caller: member i's `reservation.reserved` at p_seqs[i] after p_prev_hashes[i],
-- its `execution.dispatched` at p_seqs[i] + 1 after it. Members of one agent are chained by the
-- caller (the second one's p_prev_hashes is the first one's dispatched hash); (chain_id, seq)
-- is unique, so a wrong link fails the whole batch rather than forking a chain. The caller holds
-- the locks of aex_lock_agent_chains.
CREATE FUNCTION aex_hold_batch(
    p_ids uuid[], p_tenant_ids uuid[], p_agent_ids uuid[], p_execution_keys text[],
    p_routes text[], p_fingerprints text[], p_model_aliases text[], p_streams boolean[],
    p_replica_id uuid, p_estimates bigint[], p_providers text[], p_reservation_ids uuid[],
    p_chain_ids text[], p_ts timestamptz[], p_seqs bigint[], p_prev_hashes text[],
    p_reserved_hashes text[], p_reserved_payloads text[], p_dispatched_hashes text[],
    p_dispatched_payloads text[]
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
    SELECT r.id, r.execution_id, 1, r.tenant_id, r.agent_id, r.estimate, false, 0, 'RESERVED'
    FROM unnest(p_reservation_ids, p_ids, p_tenant_ids, p_agent_ids, p_estimates)
         AS r(id, execution_id, tenant_id, agent_id, estimate);
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
