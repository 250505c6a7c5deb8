//! Development tooling shipped in the binary: a fast OpenAI-compatible mock upstream for tests,
//! benchmarks and `docker compose up` without a provider key, and the ledger seeding and append
//! benchmark behind `bench/ledger.sh`.

pub mod append_bench;
pub mod ledger_seed;
pub mod mock_auth;
pub mod mock_upstream;
