-- event_log_tenant_id_idx (20261203000002) is the same index as event_log_tenant_idx
-- (20261128050001): both on (tenant_id, id). Every ledger event paid for the second copy on insert
-- (three per governed request) and it served no query the first cannot (issue 17, item 3).
DROP INDEX IF EXISTS event_log_tenant_id_idx;
