//! Development tooling shipped in the binary: a fast OpenAI-compatible mock upstream for tests,
//! benchmarks and `docker compose up` without a provider key, and the ledger seeding and append
//! benchmark behind `bench/ledger.sh`.

pub mod append_bench;
pub mod ledger_seed;
pub mod mock_anthropic;
pub mod mock_auth;
mod mock_billing;
mod mock_control;
mod mock_sse;
pub mod mock_upstream;
