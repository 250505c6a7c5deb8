//! Ops endpoints, open without a token: liveness, readiness, metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::scrape::{render, ScrapeInputs};
use crate::app_state::AppState;
use crate::cluster::Readiness;

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    pub status: &'static str,
    pub version: &'static str,
    pub config_version: i64,
    pub replica_id: uuid::Uuid,
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/health", tag = "ops", responses((status = 200, body = HealthResponse)))]
pub async fn get_health(State(state): State<AppState>) -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok",
        version: crate::VERSION,
        config_version: state.routing.current().version,
        replica_id: state.replica_id.0,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyChecks {
    pub database: bool,
    pub migrations: bool,
    pub config: bool,
    pub registered: bool,
    pub startup_gate: bool,
    pub draining: bool,
    /// False when the server connects as a superuser or as the owner of the ledger, and so
    /// could disable its append-only triggers (SPEC §10). Informational: it does not make the
    /// replica unready.
    pub least_privilege: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyResponse {
    pub ready: bool,
    pub checks: ReadyChecks,
}

/// Readiness: database reachable, migrations current, config loaded, not draining.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "ops",
    responses((status = 200, body = ReadyResponse), (status = 503, body = ReadyResponse))
)]
pub async fn get_ready(State(state): State<AppState>) -> impl IntoResponse {
    let r = &state.readiness;
    let database = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        crate::store::db::ping(&state.pool),
    )
    .await
    .is_ok_and(|res| res.is_ok());
    let checks = ReadyChecks {
        database,
        migrations: Readiness::get(&r.schema_current),
        config: Readiness::get(&r.config_loaded),
        registered: Readiness::get(&r.registered),
        startup_gate: !Readiness::get(&r.gate_failed),
        draining: Readiness::get(&r.draining),
        least_privilege: Readiness::get(&r.least_privilege),
    };
    let ready = database && r.accepts_traffic();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(ReadyResponse { ready, checks }))
}

/// Prometheus text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
pub async fn get_metrics(State(state): State<AppState>) -> impl IntoResponse {
    let text = render(&ScrapeInputs {
        observed: &state.observed,
        pool: &state.pool,
        max_connections: state.settings.db.general_pool_size(),
        duplicates_waiting: state.gateway.duplicates_waiting(),
        up: state.readiness.accepts_traffic(),
        agent_labels: state.settings.metrics.agent_labels,
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}
