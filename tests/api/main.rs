//! Integration tests: the real server on port 0, a real Postgres (a fresh database per test),
//! and a real HTTP provider on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin_agents;
mod admin_reads;
mod admin_tokens;
mod alerts;
mod attempts;
mod auth;
mod bad_input;
mod chat;
mod cli;
mod cli_admin;
mod cluster;
mod concurrency;
mod db_faults;
mod doctor;
mod faults;
mod helpers;
mod hold_bound;
mod hold_property;
mod invoiced;
mod ledger;
mod ledger_roles;
mod ledger_watch;
mod lifecycle;
mod load;
mod messages;
mod metrics;
mod openapi;
mod policy;
mod private_pg;
mod processes;
mod propagation;
mod provider_auth;
mod rate_limits;
mod recovery;
mod security_plugins;
mod server_limits;
mod settle;
mod streaming;
mod surface;
mod tamper;
mod tenancy;
mod tenant_scoping;
mod tools;
