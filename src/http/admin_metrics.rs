//! `GET /admin/metrics`: the JSON summary the dashboard polls.

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{AdminApiError, AdminErrorBody};
use super::extract::AdminCaller;
use super::AppState;
use crate::admin::metrics::MetricsSummary;
use crate::admin::{self, acting_tenant};
use crate::domain::{Scope, TenantId};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// Summarise this tenant only. An operator token without it sees every tenant; an admin
    /// token always sees its own.
    pub tenant_id: Option<TenantId>,
}

/// Totals, per-agent financials (burn rate, time to exhaustion), execution states, top models,
/// the 24-hour histogram, recent executions and the ledger's status.
#[utoipa::path(
    get,
    path = "/admin/metrics",
    tag = "admin",
    params(MetricsQuery),
    responses(
        (status = 200, body = MetricsSummary),
        (status = 401, body = AdminErrorBody),
        (status = 403, body = AdminErrorBody),
        (status = 404, body = AdminErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_admin_metrics(
    State(state): State<AppState>,
    caller: AdminCaller,
    Query(q): Query<MetricsQuery>,
) -> Result<Json<MetricsSummary>, AdminApiError> {
    let tenant = match caller.principal.scope {
        Scope::Operator => q.tenant_id,
        _ => Some(acting_tenant(&caller.principal, q.tenant_id)?),
    };
    let gw = &state.gateway;
    let summary = admin::metrics::summary(
        &gw.pool,
        &state.observed,
        gw.settings.metrics.stale_reservation_seconds,
        tenant,
    )
    .await
    .map_err(admin::AdminError::from)?;
    Ok(Json(summary))
}
