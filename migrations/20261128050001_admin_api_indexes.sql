-- Indexes for the admin API's tenant-scoped listings (SPEC §9): the ledger feed of one tenant,
-- a tenant's tokens, and its plugins by name.
CREATE INDEX event_log_tenant_idx ON event_log (tenant_id, id);
CREATE INDEX api_tokens_tenant_idx ON api_tokens (tenant_id, issued_at);
