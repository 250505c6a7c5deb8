-- The SQL of one governed, non-streaming chat request, statement for statement and in the same
-- two transactions, for pgbench (-M prepared) to find what Postgres alone can do: the ceiling
-- of AEX's throughput. Copied from src/gateway/admission.rs (admit), src/store/agents.rs
-- (lock_agent_chain), src/store/holds.rs and src/store/settlements.rs (aex_settle_books()), for the
-- path the benchmark
-- takes: a tenant without budget or limits, an agent without rate limits, no Idempotency-Key,
-- the provider's usage reported. bench/run.sh substitutes @TENANT@, @AGENT@, @CHAIN@ (the
-- agent's chain id), @LOCKKEY@ (its advisory-lock key) and @REPLICA@.
--
-- Where AEX computes a value in Rust and binds it, this script writes a constant (fingerprint,
-- estimate, usage, payloads, the cached response, and the events' hashes, which AEX
-- computes in the replica after the chain tail these statements read: a constant costs Postgres
-- the same to store) or lets Postgres make it (ids, from gen_random_uuid(); timestamps, from now()). The
-- tail's seq and hash come back with \gset, as AEX reads them, and the events link to them.
--
-- pgbench reads `:name` as a variable even inside a string literal, so the JSON here has a
-- space after each colon, and @CHAIN@ becomes ('agent:' || '<uuid>'), folded to a constant
-- when the statement is prepared.

-- Admission: lock the agent and its chain and read the tail (aex_lock_agent_chain), then
-- aex_hold_hashed(): the execution (DISPATCHED: it is sent as soon as this commits), its
-- reservation, the estimate held on the agent, the events `reservation.reserved` and
-- `execution.dispatched` as hashed by AEX. The execution's id and key come from a random number
-- pgbench draws, where AEX draws a UUIDv7.
\set r random(1, 140737488355327)
BEGIN;
SELECT budget_micro_usd IS NOT NULL OR rpm_limit IS NOT NULL OR tpm_limit IS NOT NULL, default_policy FROM tenants WHERE id = '@TENANT@';
SELECT id, tenant_id, name, budget_micro_usd, spent_micro_usd, reserved_micro_usd, budget_period, period_started_at, rpm_limit, tpm_limit, policy, state, prompt_tokens_total, completion_tokens_total, requests_total, created_at, updated_at, tail_seq, tail_hash FROM aex_lock_agent_chain('@TENANT@', '@AGENT@', @CHAIN@, @LOCKKEY@) \gset
SELECT aex_hold_hashed(('00000000-0000-4000-8000-' || lpad(to_hex(:r::bigint), 12, '0'))::uuid, '@TENANT@', '@AGENT@', lpad(to_hex(:r::bigint), 12, '0'), false, '/v1/chat/completions', '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08', 'bench-chat', 'DISPATCHED', 1, false, '@REPLICA@', 14, 'mock', gen_random_uuid(), false, 0, @CHAIN@, now(), :tail_seq + 1, :tail_hash, 'b9e1a4c7d2f05e83a6c1d4b7e0f3a6c9d2e5f8a1b4c7d0e3f6a9b2c5d8e1f4a7', '{"attempt": 1,"choices": 1,"clamped": false,"estimate_micro_usd": 14,"holds_tenant": false,"model": "bench-chat","output_cap": 20,"output_tokens_bound": 20,"prompt_tokens_estimate": 16,"route": "/v1/chat/completions"}', 'c0f2b5d8e1a4c7f0b3d6e9a2c5f8b1d4e7a0c3f6b9d2e5a8c1f4b7d0e3a6c9f2', '{"attempt": 1,"model": "bench-chat","output_cap": 20,"output_tokens_bound": 20,"provider": "mock","upstream_model": "gpt-4o-mini"}');
COMMIT;

-- Settlement: its own transaction, as src/store/settlements.rs pipelines it: aex_settle_books()
-- compare-and-sets the reservation, moves the money, finishes the execution with its cached result,
-- projects the fact, takes the chain's lock and reads its tail; then `usage.commit`, hashed by AEX
-- in the replica (a constant here), is inserted after that tail, and the transaction commits.
BEGIN;
SELECT estimate_micro_usd, holds_tenant, remaining_micro_usd, tail_seq, tail_hash FROM aex_settle_books(('00000000-0000-4000-8000-' || lpad(to_hex(:r::bigint), 12, '0'))::uuid, 1, '@TENANT@', '@AGENT@', lpad(to_hex(:r::bigint), 12, '0'), @CHAIN@, @LOCKKEY@, 'COMMITTED', 14, 10, 20, 'reported', NULL, 200, convert_to('{"choices": [{"finish_reason": "stop","index": 0,"message": {"content": "Hello w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 w17 w18 w19","role": "assistant"}}],"created": 1700000000,"id": "chatcmpl-mock","model": "bench-chat","object": "chat.completion","usage": {"completion_tokens": 20,"prompt_tokens": 10,"total_tokens": 30}}', 'UTF8'), false, 'usage.commit', 'bench-chat', 1, ARRAY['agent:' || '@AGENT@', 'tenant:' || '@TENANT@']) \gset
INSERT INTO event_log (chain_id, seq, prev_hash, event_hash, event_type, tenant_id, agent_id, execution_id, ts, payload, encoding) VALUES (@CHAIN@, :tail_seq + 1, :tail_hash, 'd4e7a0c3f6b9d2e5a8c1f4b7d0e3a6c9f2b5d8e1a4c7f0b3d6e9a2c5f8b1d4e7', 'usage.commit', '@TENANT@', '@AGENT@', ('00000000-0000-4000-8000-' || lpad(to_hex(:r::bigint), 12, '0'))::uuid, now(), '{"actual_micro_usd": 14,"attempt": 1,"completion_tokens": 20,"model": "bench-chat","prompt_tokens": 10,"provider": "mock","stream_end": null,"stream_events": null,"usage": "reported"}', 1);
COMMIT;
