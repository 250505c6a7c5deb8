-- Least privilege (SPEC §10). The tables belong to the migration role (`migration_database_url`);
-- the server connects as a runtime role that may read and write the books and append to the
-- ledger, but owns nothing: it cannot disable a trigger, alter a table, or delete, update or
-- truncate the ledger. A migration cannot know the runtime role's name, so it defines this
-- function instead, and `aex migrate` (and `aex init`, and a server's auto-migration) call it
-- after every run with the role of `database_url` when that differs from the migration role.
-- Being rerun after each migration, it also covers tables that later migrations add.
CREATE FUNCTION aex_grant_runtime(runtime name) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t record;
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), runtime);
    FOR t IN
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
    LOOP
        -- Nothing that could rewrite history, whatever was granted before.
        EXECUTE format('REVOKE ALL ON %I FROM %I', t.relname, runtime);
        IF t.relname IN ('event_log', 'ledger_checkpoints') THEN
            EXECUTE format('GRANT SELECT, INSERT ON %I TO %I', t.relname, runtime);
        ELSIF t.relname = '_sqlx_migrations' THEN
            EXECUTE format('GRANT SELECT ON %I TO %I', t.relname, runtime);
        ELSE
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO %I', t.relname, runtime);
        END IF;
    END LOOP;
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I',
                   current_schema(), runtime);
END;
$$;

-- Only the owner hands out privileges.
REVOKE ALL ON FUNCTION aex_grant_runtime(name) FROM PUBLIC;
