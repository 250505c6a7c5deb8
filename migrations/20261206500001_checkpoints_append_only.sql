-- Signed checkpoints are what make a removed chain tail detectable, so they are append-only like
-- the events they vouch for (SPEC §10): a trigger refuses UPDATE, DELETE and TRUNCATE.
CREATE FUNCTION ledger_checkpoints_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_checkpoints is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER ledger_checkpoints_append_only
    BEFORE UPDATE OR DELETE ON ledger_checkpoints
    FOR EACH ROW EXECUTE FUNCTION ledger_checkpoints_reject_change();

CREATE TRIGGER ledger_checkpoints_no_truncate
    BEFORE TRUNCATE ON ledger_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_checkpoints_reject_change();
