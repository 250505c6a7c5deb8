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
pub mod serve;

use std::sync::Arc;

use crate::cluster::Readiness;
use crate::gateway::Gateway;
use crate::metrics::Observed;

/// Shared state of every handler: cheap handles only.
#[derive(Clone)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
    pub readiness: Arc<Readiness>,
    /// The last ledger verification and database sample, for `/metrics` and the dashboard.
    pub observed: Arc<Observed>,
}
