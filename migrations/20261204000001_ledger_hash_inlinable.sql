-- The ledger hash functions were declared IMMUTABLE, but convert_to() and to_char() are STABLE,
-- so Postgres refused to inline them: every append ran both SQL functions through the function
-- manager, parsing and planning their bodies anew in each transaction (about 70 µs of the
-- 100 µs an append cost, and the largest share of Postgres's CPU per governed request). Declared
-- STABLE, as their bodies are, they inline into aex_append_event's cached plan. The encoding is
-- unchanged: the golden vectors test checks it.
ALTER FUNCTION aex_ledger_field(text) STABLE;
ALTER FUNCTION aex_ledger_hash(text, bigint, text, text, uuid, uuid, text, timestamptz, text) STABLE;
