-- The settlement's UPDATE of an execution becomes a HOT update (issue 17, per-row work): it
-- changes `state`, `completed_at` and `response_body`, and two indexes depended on them —
-- executions_open_idx (replica_id, state) WHERE state is open, and executions_prunable_idx
-- (completed_at) WHERE response_body IS NOT NULL. Postgres updates a row in place (heap-only, no
-- index entry written) only when no indexed column, predicate columns included, changes; so
-- every settlement wrote a new entry into all seven indexes of the table. Without those two
-- indexes no column an index reads changes, and the new row version goes on the same page with
-- no index entry at all.
--
-- Who needed them, and what serves them now:
--   * the reconciler's open executions of lost replicas (store::executions::list_orphaned) are
--     found through their holds: an execution is RESERVED or DISPATCHED exactly while its
--     attempt's reservation is RESERVED (both written by the admission's transaction, both ended
--     by the settlement's), and reservations_open_idx lists those. (RESERVING was never written
--     by any version: the admission has always written RESERVED or DISPATCHED with its hold.)
--     `aex audit` still reads the executions' own states (a full check, not a hot query).
--   * the pruning of cached results (store::executions::prune_results) reads the new
--     executions_unpruned_idx (created_at) WHERE result_pruned_at IS NULL: no settlement changes
--     either column. A result completes after its execution was created, so the results older
--     than the retention are among the unpruned rows created before it; pruning now marks every
--     finished row past retention (with or without a body), so the index keeps only the rows of
--     the retention period and the open ones.
--
-- A replica of the previous version during a rolling upgrade still works, its two queries read
-- the table without those indexes (slower, not wrong) until it is replaced.
DROP INDEX executions_open_idx;
DROP INDEX executions_prunable_idx;
CREATE INDEX executions_unpruned_idx ON executions (created_at) WHERE result_pruned_at IS NULL;

-- The next attempt of a key reuses its row; the row may have been marked pruned since its last
-- attempt ended, and the new attempt's result must be pruned in its turn: the upsert clears the
-- mark (20261204000003's function, otherwise unchanged).
CREATE OR REPLACE FUNCTION aex_upsert_execution(
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
        response_body = NULL, result_pruned_at = NULL, dispatched_at = EXCLUDED.dispatched_at,
        completed_at = EXCLUDED.completed_at, updated_at = now();
END;
$$;
