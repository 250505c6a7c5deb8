//! The HTTP edge (axum only): the route table, extractors, error rendering and handlers for the
//! OpenAI-compatible `/v1` routes, the admin API and the ops endpoints.

pub mod admin;
pub mod error;
pub mod extract;
pub mod openai;
pub mod openapi;
pub mod ops;
pub mod router;

use std::sync::Arc;

use crate::cluster::Readiness;
use crate::gateway::Gateway;

/// Shared state of every handler: cheap handles only.
#[derive(Clone)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
    pub readiness: Arc<Readiness>,
}
