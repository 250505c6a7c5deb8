//! The HTTP edge (axum only): the route table, extractors, error rendering and handlers for the
//! OpenAI-compatible `/v1` routes, the admin API, the ops endpoints and the dashboard.

pub mod admin;
pub mod anthropic;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod observe;
pub mod openai;
pub mod openapi;
pub mod ops;
pub mod router;
pub mod scrape;
pub mod serve;
