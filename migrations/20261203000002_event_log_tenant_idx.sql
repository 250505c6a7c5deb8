-- The newest ledger events of one tenant (the dashboard's ledger feed of an admin token).
CREATE INDEX event_log_tenant_id_idx ON event_log (tenant_id, id);
