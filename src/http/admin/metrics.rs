//! `GET /admin/metrics`: the JSON summary the dashboard polls.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::AdminErrors;
use crate::admin::metrics::MetricsSummary;
use crate::admin::{self, AdminError};
use crate::app_state::AppState;
use crate::domain::TenantId;
use crate::http::error::AdminApiError;
use crate::http::extract::{AdminCaller, AdminQuery};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// Summarise this tenant only. An operator token without it sees every tenant; an admin
    /// token always sees its own.
    pub tenant_id: Option<TenantId>,
}

/// Totals, per-agent financials (burn rate, time to exhaustion), execution states, top models,
/// the 24-hour histogram, recent executions and the ledger's status.
#[utoipa::path(get, path = "/admin/metrics", tag = "usage", params(MetricsQuery),
    responses((status = 200, body = MetricsSummary), AdminErrors), security(("bearer" = [])))]
pub async fn get_admin_metrics(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminQuery(q): AdminQuery<MetricsQuery>,
) -> Result<Json<MetricsSummary>, AdminApiError> {
    let tenant = caller.visible(q.tenant_id)?;
    let stale = state.settings.metrics.stale_reservation_seconds;
    let summary = admin::metrics::summary(&state.pool, &state.observed, stale, tenant)
        .await
        .map_err(AdminError::from)?;
    Ok(Json(summary))
}
