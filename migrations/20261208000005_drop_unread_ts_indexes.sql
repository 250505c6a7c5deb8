-- Two indexes no query reads, paid for by every governed request (issue 17, per-row work):
--   * event_log_ts_idx (20261127000004): every read of the ledger goes by chain and seq, by id,
--     or by tenant / agent / execution (store::chain_events, store::event_log, store::audit,
--     store::stats); none filters or orders by `ts`. Three ledger events per request.
--   * events_agent_ts_idx (20261127000004): the projection is read by time (events_ts_idx), by
--     tenant and time (events_tenant_ts_idx) or by id (store::stats, store::projection); the
--     per-agent spend groups a time range by agent, it does not look an agent up. One fact per
--     request.
DROP INDEX event_log_ts_idx;
DROP INDEX events_agent_ts_idx;
