-- Which copy of the ledger's canonical encoding v1 is the source of truth, said where a reader of
-- the database finds it (`\df+ aex_ledger_hash`, obj_description). Comments only: the functions'
-- bodies and the encoding are unchanged.
--
-- The source of truth is the Rust encoder, src/ledger/encoding.rs, pinned by the golden vectors
-- tests/vectors/ledger_v1.json (written by an independent Python implementation,
-- tests/vectors/ledger_v1.py); the verifier recomputes every stored hash with it, and the
-- admission's and the settlement's events are hashed with it in the replica. These plpgsql
-- functions are a copy, kept for what still hashes in SQL (aex_append_event: refusals and admin
-- changes; aex_hold and aex_settle: replicas of a previous version, bench/driver.rs), and are
-- checked against the same vectors in a real Postgres by
-- tests/api/ledger.rs `the_databases_append_function_hashes_the_golden_vectors_as_recorded`.
COMMENT ON FUNCTION aex_ledger_field(text) IS
    'One field of the ledger''s canonical encoding v1 (<byte length>:<bytes>\n). A copy of '
    'src/ledger/encoding.rs, the source of truth pinned by tests/vectors/ledger_v1.json; checked '
    'against those vectors by tests/api/ledger.rs '
    'the_databases_append_function_hashes_the_golden_vectors_as_recorded.';
COMMENT ON FUNCTION aex_ledger_hash(text, bigint, text, text, uuid, uuid, text, timestamptz, text) IS
    'SHA-256 (hex) of a ledger event in canonical encoding v1. A copy of src/ledger/encoding.rs '
    '(event_hash), the source of truth pinned by tests/vectors/ledger_v1.json; checked against '
    'those vectors by tests/api/ledger.rs '
    'the_databases_append_function_hashes_the_golden_vectors_as_recorded. Any change to the '
    'encoding is a new version in Rust first, never an edit of v1 here.';
