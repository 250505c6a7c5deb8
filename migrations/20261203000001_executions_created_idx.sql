-- The newest executions of every tenant and their state counts over a time window (the operator's
-- view of /admin/metrics and the dashboard); per tenant, executions_tenant_created_idx serves.
CREATE INDEX executions_created_idx ON executions (created_at DESC);
