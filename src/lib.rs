//! AEX: a governance gateway between AI agents and LLM providers.
//!
//! Layers, with dependencies pointing one way:
//! `http` → `gateway` / `admin` (use cases) → `store` / `providers` / `ledger` → `domain`, `money`.
//! `app_state` holds every long-lived handle and `server` wires them together; `cluster` runs the
//! background tasks and coordinates replicas through Postgres; `metrics` is a leaf every layer
//! counts into; `cli` is the command line.

pub mod admin;
pub mod alerts;
pub mod app_state;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dev;
pub mod domain;
pub mod gateway;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod money;
pub mod net_guard;
pub mod providers;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tokenizer;
pub mod tools;

/// The version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
