-- Appending a ledger event in one round trip: take the chain's advisory lock, read its tail,
-- compute the event hash with the canonical encoding v1 (src/ledger/encoding.rs: length-prefixed
-- fields after the line 'aex-ledger-v1') and insert, all inside the caller's transaction. The Rust
-- verifier recomputes every hash independently; golden vectors pin both to one encoding.
CREATE FUNCTION aex_ledger_field(value text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT octet_length(convert_to(value, 'UTF8'))::text || ':' || value || E'\n'
$$;

CREATE FUNCTION aex_ledger_hash(
    chain_id text, seq bigint, prev_hash text, event_type text, tenant_id uuid, agent_id uuid,
    execution_id text, ts timestamptz, payload text
) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT encode(sha256(convert_to(
        E'aex-ledger-v1\n'
        || aex_ledger_field(chain_id)
        || aex_ledger_field(seq::text)
        || aex_ledger_field(prev_hash)
        || aex_ledger_field(event_type)
        || aex_ledger_field(COALESCE(tenant_id::text, ''))
        || aex_ledger_field(COALESCE(agent_id::text, ''))
        || aex_ledger_field(COALESCE(execution_id, ''))
        || aex_ledger_field(to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
        || aex_ledger_field(payload),
        'UTF8')), 'hex')
$$;

CREATE FUNCTION aex_append_event(
    p_chain_id text, p_lock_key bigint, p_event_type text, p_tenant_id uuid, p_agent_id uuid,
    p_execution_id text, p_payload text
) RETURNS TABLE (id bigint, seq bigint, event_hash text)
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
    v_prev text;
    v_ts timestamptz := clock_timestamp();
    v_hash text;
    v_id bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_key);
    SELECT e.seq, e.event_hash INTO v_seq, v_prev
        FROM event_log e WHERE e.chain_id = p_chain_id ORDER BY e.seq DESC LIMIT 1;
    IF NOT FOUND THEN
        v_seq := 0;
        v_prev := repeat('0', 64);
    END IF;
    v_seq := v_seq + 1;
    v_hash := aex_ledger_hash(p_chain_id, v_seq, v_prev, p_event_type, p_tenant_id, p_agent_id,
                              p_execution_id, v_ts, p_payload);
    INSERT INTO event_log AS e (chain_id, seq, prev_hash, event_hash, event_type, tenant_id,
                                agent_id, execution_id, ts, payload, encoding)
        VALUES (p_chain_id, v_seq, v_prev, v_hash, p_event_type, p_tenant_id, p_agent_id,
                p_execution_id, v_ts, p_payload, 1)
        RETURNING e.id INTO v_id;
    RETURN QUERY SELECT v_id, v_seq, v_hash;
END;
$$;
