//! Integration tests: the real server on port 0, a real Postgres (a fresh database per test),
//! and a real HTTP provider on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod auth;
mod bad_input;
mod chat;
mod cli;
mod concurrency;
mod db_faults;
mod faults;
mod helpers;
mod ledger;
mod load;
mod openapi;
mod policy;
mod private_pg;
mod processes;
mod rate_limits;
mod recovery;
mod streaming;
mod surface;
mod tamper;
