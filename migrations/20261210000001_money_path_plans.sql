-- The money path's statements look rows up by key, whatever Postgres's statistics say (issue 17:
-- Postgres CPU per call at half of peak).
--
-- Every statement of the money functions touches the few rows of its batch (at most 32 calls)
-- through a key: the reservations by (execution_id, attempt), the agents, tenants and executions
-- by id, a chain's tail by (chain_id, seq). Postgres chose otherwise, and a plpgsql function keeps
-- the plan it chose for as long as its connection lives (a generic plan is replanned only when
-- the table's statistics or definition change):
--
--   * Settlement's compare-and-set (`r.execution_id = … AND r.attempt = … AND r.state =
--     'RESERVED'`) matched the predicate of the partial index reservations_open_idx (agent_id)
--     WHERE state = 'RESERVED', which the planner takes for a list of the few open holds. It is
--     not quite: a settlement moves its row out of the predicate, but the entry stays in the
--     index, pointing at a dead row, until vacuum (or the btree's own clean-up when a page fills)
--     removes it. The batch read that whole index (a bitmap or full index scan, joined by hash)
--     in every settlement: at 1,000 calls/s on a bench database the statement took 2,020 µs per
--     batch where the lookup by key takes 278 (pg_stat_statements, track = all). The index now
--     has a predicate no money statement states, `settled_at IS NULL` (the same rows:
--     reservations_settled_consistently ties `settled_at IS NULL` to RESERVED), and the queries
--     that list open holds (the reconciler, stats, stale-hold alerts) say it.
--   * Planned while a table is empty or was never analyzed (a new database; CI's Postgres runs
--     without autovacuum), the same statements join their members by hash over a sequential scan
--     of the table, a plan that then reads the whole table for every batch. The functions are
--     therefore planned without sequential or bitmap scans and without hash or merge joins:
--     every join is a nested loop over the batch's members with an index lookup per member,
--     the plan their size calls for. (These settings only cost a plan its alternatives: a
--     statement with no index to use still runs, by the plan it would have had.)
--
-- The functions are the ones the replica calls, and those they call.

CREATE INDEX reservations_unsettled_idx ON reservations (agent_id) WHERE settled_at IS NULL;
DROP INDEX reservations_open_idx;

DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc AS p
             JOIN pg_namespace AS n ON n.oid = p.pronamespace
             WHERE n.nspname = current_schema()
               AND p.proname IN ('aex_lock_agent_chains', 'aex_hold_batch', 'aex_settle_batch',
                                 'aex_settle_books', 'aex_settle_linked', 'aex_lock_agent_chain',
                                 'aex_hold_hashed', 'aex_upsert_execution')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET enable_seqscan = off SET enable_bitmapscan = off '
                       'SET enable_hashjoin = off SET enable_mergejoin = off', f);
    END LOOP;
END;
$$;
