//! The test harness, by concern: a fresh database per test ([`database`]), the loopback mock
//! provider and the routing table pointing at it ([`upstream`]), the real server bound to port 0
//! ([`server`]), calls made as a client would ([`clients`]), the books read back and audited
//! ([`books`]) and the one bounded wait for an event ([`poll`]).
//!
//! Every item is re-exported here, so tests name them `helpers::x` whatever file they live in.
// The re-exports are the harness's whole surface, whether or not a test names an item yet
// (tests/logs.rs names two of them).
#![allow(unused_imports)]

mod books;
mod clients;
mod database;
mod poll;
mod server;
mod upstream;

pub use books::mini_cost;
pub use clients::{burst, create_agent_at, execution_id, hello, merged, Agent};
pub use database::{admin_database_url, TestDb};
pub use poll::{poll, PATIENCE};
pub use server::{spawn_app, spawn_app_on, spawn_app_with, spawn_app_with_models, test_settings};
pub use server::{wait_ready, TestApp, KEY};
pub use upstream::models_toml;
