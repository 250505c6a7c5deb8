-- The settlements of one replica, batched (issue 17, item 1): aex_settle_batch writes what
-- aex_settle_books (migrations/20261207900001) writes, for N settlements at once, with one
-- set-based statement per table instead of N. Postgres's profile of the governed SQL was
-- dominated by per-statement executor start-up (plpgsql SPI statements, CHECK and trigger WHEN
-- expressions set up again per statement), not by the rows.
--
-- The members come as parallel arrays, one element per member, in the batch's order (the order
-- they are taken to happen in, one after the other). Per member, exactly as aex_settle_books:
--   * the reservation's compare-and-set RESERVED -> COMMITTED/RELEASED; a member whose
--     reservation is not RESERVED (settled before) writes nothing and returns no row;
--   * the tenant's `reserved` (when the hold counted against the tenant), the agent's counters
--     (saturating at the bigint maximum), the TPM windows' correction, the execution's end and
--     cached answer, the projected fact;
--   * the agent chain's advisory lock and tail, read by a statement of its own once every lock
--     is held.
-- It returns, per settled member, its index in the arrays (1-based), the hold, whether it held
-- the tenant, the agent's remaining budget right after THAT member (as if the members were
-- settled one by one in array order) and its chain's tail as the table has it. The replica
-- links the events (several members of one chain link to each other, not to the table's tail)
-- and inserts them in the same transaction, as for one settlement.
--
-- Lock order, the same as every money transaction's: reservations (by the compare-and-set),
-- then the tenant rows that are written, then the agent rows, each in ascending id
-- (`ORDER BY id FOR UPDATE` locks in sorted order), before any of them is updated; then the TPM
-- windows in key order; then the chains' advisory locks, in ascending agent id. Anything else
-- (a deadlock after all, a constraint) fails the whole batch: the replica rolls it back and
-- settles each member alone with aex_settle_books.
--
-- The alert triggers are row triggers, and fire for the aggregated updates as they did one by
-- one, with one difference and one care:
--   * an agent's budget-threshold alert (agents_budget_alerts) sees the agent's spent before and
--     after the whole batch: every threshold crossed in between still fires (aex_crossed takes a
--     range), but its payload's `spent_micro_usd` is the value after the batch;
--   * the tenant-threshold trigger (agents_tenant_budget_alerts) sums the tenant's agents after
--     the statement and subtracts only its own row's increase: were two agents of one tenant
--     updated by one statement, a threshold crossed by the first's increase would be seen by
--     neither. So for tenants with a budget the agents are updated in rounds, one agent of each
--     such tenant per UPDATE (agents of tenants without a budget all go in the first round).
--
-- aex_settle_books and aex_settle stay, unchanged: the single path (the batch's fallback) and
-- replicas of previous versions during a rolling upgrade.

CREATE FUNCTION aex_settle_batch(
    p_execution_ids uuid[], p_attempts integer[], p_tenant_ids uuid[], p_agent_ids uuid[],
    p_execution_keys text[], p_chain_ids text[], p_lock_keys bigint[],
    p_states text[], p_actuals bigint[], p_prompt_tokens bigint[], p_completion_tokens bigint[],
    p_usage_sources text[], p_reasons text[],
    p_result_statuses integer[], p_result_bodies bytea[], p_result_is_streams boolean[],
    p_event_types text[], p_model_aliases text[], p_latency_ms bigint[],
    p_agent_subjects text[], p_tenant_subjects text[]
) RETURNS TABLE (member integer, estimate_micro_usd bigint, holds_tenant boolean,
                 remaining_micro_usd bigint, tail_seq bigint, tail_hash text)
LANGUAGE plpgsql AS $$
DECLARE
    c_max CONSTANT numeric := 9223372036854775807;
    c_min CONSTANT numeric := -9223372036854775808;
    -- The settled members (their index in the arrays) and what their reservations held.
    s_ord integer[];
    s_estimate bigint[];
    s_holds_tenant boolean[];
    s_rate_tokens bigint[];
    s_held_at timestamptz[];
    -- The agents written and their counters before the batch (read under their row locks).
    a_id uuid[];
    a_budget bigint[];
    a_spent bigint[];
    a_reserved bigint[];
    -- Each agent's totals over the batch, and its update round.
    g_id uuid[];
    g_round integer[];
    g_estimate numeric[];
    g_actual numeric[];
    g_prompt numeric[];
    g_completion numeric[];
    v_round integer;
    -- Each TPM window's corrections over the batch.
    w_subject text[];
    w_bucket timestamptz[];
    w_total numeric[];
    w_min_prefix numeric[];
BEGIN
    -- 1. The compare-and-set. A member listed twice (never expected) is settled once, by its
    --    first occurrence.
    WITH m AS (
        SELECT DISTINCT ON (u.execution_id, u.attempt) u.*
        FROM unnest(p_execution_ids, p_attempts, p_actuals, p_reasons)
            WITH ORDINALITY AS u(execution_id, attempt, actual, reason, ord)
        ORDER BY u.execution_id, u.attempt, u.ord
    ), done AS (
        UPDATE reservations AS r SET
            state = CASE WHEN m.actual IS NULL THEN 'RELEASED' ELSE 'COMMITTED' END,
            actual_micro_usd = m.actual, reason = m.reason, settled_at = now()
        FROM m
        WHERE r.execution_id = m.execution_id AND r.attempt = m.attempt AND r.state = 'RESERVED'
        RETURNING m.ord::integer AS ord, r.estimate_micro_usd, r.holds_tenant, r.rate_tokens,
                  r.created_at
    )
    SELECT array_agg(d.ord ORDER BY d.ord), array_agg(d.estimate_micro_usd ORDER BY d.ord),
           array_agg(d.holds_tenant ORDER BY d.ord), array_agg(d.rate_tokens ORDER BY d.ord),
           array_agg(d.created_at ORDER BY d.ord)
        INTO s_ord, s_estimate, s_holds_tenant, s_rate_tokens, s_held_at
    FROM done AS d;
    IF s_ord IS NULL THEN
        RETURN;
    END IF;

    -- 2. Row locks, before any counter is written: the tenants whose `reserved` moves, then the
    --    agents, each in ascending id.
    PERFORM 1 FROM tenants AS t
    WHERE t.id IN (SELECT p_tenant_ids[s.ord] FROM unnest(s_ord, s_holds_tenant) AS s(ord, h)
                   WHERE s.h)
    ORDER BY t.id FOR UPDATE;
    SELECT array_agg(a.id ORDER BY a.id), array_agg(a.budget_micro_usd ORDER BY a.id),
           array_agg(a.spent_micro_usd ORDER BY a.id),
           array_agg(a.reserved_micro_usd ORDER BY a.id)
        INTO a_id, a_budget, a_spent, a_reserved
    FROM (SELECT g.id, g.budget_micro_usd, g.spent_micro_usd, g.reserved_micro_usd
          FROM agents AS g
          WHERE g.id IN (SELECT p_agent_ids[s.ord] FROM unnest(s_ord) AS s(ord))
          ORDER BY g.id FOR UPDATE) AS a;

    -- 3. The tenants: one UPDATE with each tenant's total (an UPDATE ... FROM with several
    --    joined rows per target row would apply only one of them).
    UPDATE tenants AS t
    SET reserved_micro_usd = t.reserved_micro_usd - d.estimate, updated_at = now()
    FROM (SELECT p_tenant_ids[s.ord] AS tenant_id, sum(s.estimate)::bigint AS estimate
          FROM unnest(s_ord, s_estimate, s_holds_tenant) AS s(ord, estimate, h)
          WHERE s.h GROUP BY 1) AS d
    WHERE t.id = d.tenant_id;

    -- 4. The agents, each with its total, in rounds (see the header: tenant-threshold alerts).
    SELECT array_agg(d.agent_id),
           array_agg(CASE WHEN COALESCE(tn.budget_micro_usd, 0) > 0
                          THEN d.rank ELSE 1 END),
           array_agg(d.estimate), array_agg(d.actual), array_agg(d.prompt),
           array_agg(d.completion)
        INTO g_id, g_round, g_estimate, g_actual, g_prompt, g_completion
    FROM (SELECT p_agent_ids[s.ord] AS agent_id, p_tenant_ids[s.ord] AS tenant_id,
                 dense_rank() OVER (PARTITION BY p_tenant_ids[s.ord]
                                    ORDER BY p_agent_ids[s.ord])::integer AS rank,
                 sum(s.estimate) AS estimate, sum(COALESCE(p_actuals[s.ord], 0)) AS actual,
                 sum(COALESCE(p_prompt_tokens[s.ord], 0)) AS prompt,
                 sum(COALESCE(p_completion_tokens[s.ord], 0)) AS completion
          FROM unnest(s_ord, s_estimate) AS s(ord, estimate) GROUP BY 1, 2) AS d
    LEFT JOIN tenants AS tn ON tn.id = d.tenant_id;
    FOR v_round IN 1 .. (SELECT max(x) FROM unnest(g_round) AS x) LOOP
        UPDATE agents AS a SET reserved_micro_usd = a.reserved_micro_usd - d.estimate,
            spent_micro_usd = LEAST(a.spent_micro_usd + d.actual, c_max)::bigint,
            lifetime_spent_micro_usd = LEAST(a.lifetime_spent_micro_usd + d.actual, c_max)::bigint,
            prompt_tokens_total = LEAST(a.prompt_tokens_total + d.prompt, c_max)::bigint,
            completion_tokens_total = LEAST(a.completion_tokens_total + d.completion, c_max)::bigint,
            updated_at = now()
        FROM unnest(g_id, g_round, g_estimate, g_actual, g_prompt, g_completion)
            AS d(agent_id, round, estimate, actual, prompt, completion)
        WHERE a.id = d.agent_id AND d.round = v_round;
    END LOOP;

    -- 5. The TPM windows: each member corrects its two windows by (its tokens - the estimate it
    --    charged), clamped at 0 after each correction. Summing a window's corrections and
    --    clamping once would differ (5, then -10, then +8 gives 8 one by one but 3 summed), so
    --    the clamped running value is computed exactly (Lindley's recursion): with S_k the sum of
    --    the window's first k corrections, x_n = max(x_0 + S_n, S_n - min_k S_k). The windows are
    --    locked in key order first: another replica's batch corrects the same tenant windows.
    --    (The upper clamp at the bigint maximum is applied once, at the end; token counts never
    --    come near it.)
    SELECT array_agg(c.subject), array_agg(c.bucket_start), array_agg(c.total),
           array_agg(c.min_prefix)
        INTO w_subject, w_bucket, w_total, w_min_prefix
    FROM (SELECT p.subject, p.bucket_start, sum(p.delta) AS total, min(p.prefix) AS min_prefix
          FROM (SELECT w.subject, w.bucket_start, w.delta,
                       sum(w.delta) OVER (PARTITION BY w.subject, w.bucket_start ORDER BY w.ord)
                           AS prefix
                FROM (SELECT s.ord, date_trunc('second', s.held_at) AS bucket_start,
                             COALESCE(p_prompt_tokens[s.ord], 0)::numeric
                                 + COALESCE(p_completion_tokens[s.ord], 0) - s.rate_tokens
                                 AS delta,
                             subj.subject
                      FROM unnest(s_ord, s_rate_tokens, s_held_at) AS s(ord, rate_tokens, held_at)
                      CROSS JOIN LATERAL (VALUES (p_agent_subjects[s.ord]),
                                                 (p_tenant_subjects[s.ord])) AS subj(subject)
                      WHERE s.rate_tokens <> 0
                        AND (p_actuals[s.ord] IS NULL OR p_prompt_tokens[s.ord] IS NOT NULL
                             OR p_completion_tokens[s.ord] IS NOT NULL)) AS w) AS p
          GROUP BY p.subject, p.bucket_start) AS c;
    IF w_subject IS NOT NULL THEN
        PERFORM 1 FROM rate_windows AS w
        WHERE (w.subject, w.bucket_start) IN
              (SELECT * FROM unnest(w_subject, w_bucket))
        ORDER BY w.subject, w.bucket_start FOR UPDATE;
        UPDATE rate_windows AS w
        SET tokens = LEAST(GREATEST(w.tokens::numeric + d.total, d.total - d.min_prefix),
                           c_max)::bigint
        FROM unnest(w_subject, w_bucket, w_total, w_min_prefix)
            AS d(subject, bucket_start, total, min_prefix)
        WHERE w.subject = d.subject AND w.bucket_start = d.bucket_start;
    END IF;

    -- 6. The executions' ends and cached answers, and the projected facts (in batch order).
    UPDATE executions AS e SET state = p_states[s.ord], actual_micro_usd = p_actuals[s.ord],
        prompt_tokens = p_prompt_tokens[s.ord], completion_tokens = p_completion_tokens[s.ord],
        usage_source = p_usage_sources[s.ord], reason = p_reasons[s.ord],
        completed_at = now(), updated_at = now(),
        response_status = COALESCE(p_result_statuses[s.ord], e.response_status),
        response_body = COALESCE(p_result_bodies[s.ord], e.response_body),
        response_is_stream = COALESCE(p_result_is_streams[s.ord], e.response_is_stream)
    FROM unnest(s_ord) AS s(ord)
    WHERE e.id = p_execution_ids[s.ord];

    INSERT INTO events (tenant_id, agent_id, execution_id, kind, reason, model_alias,
                        cost_micro_usd, prompt_tokens, completion_tokens, latency_ms)
    SELECT p_tenant_ids[s.ord], p_agent_ids[s.ord], p_execution_keys[s.ord], p_event_types[s.ord],
           p_reasons[s.ord], p_model_aliases[s.ord], p_actuals[s.ord], p_prompt_tokens[s.ord],
           p_completion_tokens[s.ord], p_latency_ms[s.ord]
    FROM unnest(s_ord) AS s(ord) ORDER BY s.ord;

    -- 7. The chains' advisory locks, in ascending agent id (each after its agent's row lock).
    --    A volatile function in the output list is evaluated after the sort.
    PERFORM pg_advisory_xact_lock(c.lock_key)
    FROM (SELECT DISTINCT p_agent_ids[s.ord] AS agent_id, p_lock_keys[s.ord] AS lock_key
          FROM unnest(s_ord) AS s(ord)) AS c
    ORDER BY c.agent_id, c.lock_key;

    -- 8. Per member: the agent's remaining budget right after it (the counters before the batch
    --    plus the running totals of the agent's members up to it, saturating as the UPDATE
    --    does), and its chain's tail, read by a statement of its own now that the locks are held.
    RETURN QUERY
    SELECT m.ord, m.estimate, m.holds_tenant,
           GREATEST(ag.budget::numeric
                    - LEAST(ag.spent::numeric + m.actual_so_far, c_max)
                    - (ag.reserved::numeric - m.estimate_so_far), c_min)::bigint,
           COALESCE(tail.seq, 0::bigint), COALESCE(tail.event_hash, repeat('0', 64))
    FROM (SELECT s.ord, s.estimate, s.h AS holds_tenant, p_agent_ids[s.ord] AS agent_id,
                 p_chain_ids[s.ord] AS chain_id,
                 sum(COALESCE(p_actuals[s.ord], 0)::numeric)
                     OVER (PARTITION BY p_agent_ids[s.ord] ORDER BY s.ord) AS actual_so_far,
                 sum(s.estimate::numeric)
                     OVER (PARTITION BY p_agent_ids[s.ord] ORDER BY s.ord) AS estimate_so_far
          FROM unnest(s_ord, s_estimate, s_holds_tenant) AS s(ord, estimate, h)) AS m
    JOIN unnest(a_id, a_budget, a_spent, a_reserved) AS ag(id, budget, spent, reserved)
        ON ag.id = m.agent_id
    LEFT JOIN LATERAL (SELECT e.seq, e.event_hash FROM event_log AS e
                       WHERE e.chain_id = m.chain_id ORDER BY e.seq DESC LIMIT 1) AS tail ON true
    ORDER BY m.ord;
END;
$$;
