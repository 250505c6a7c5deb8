//! Development tooling shipped in the binary: a fast OpenAI-compatible mock upstream for tests,
//! benchmarks and `docker compose up` without a provider key.

pub mod mock_upstream;
