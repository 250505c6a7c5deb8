//! `GET /admin/usage` (summaries) and the seed's `GET /admin/activity` (the recent feed).

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::AdminErrors;
use crate::admin::activity::{self, ActivityItem};
use crate::admin::usage::{self, UsageQuery, UsageSummary};
use crate::app_state::AppState;
use crate::domain::TenantId;
use crate::http::error::AdminApiError;
use crate::http::extract::{AdminCaller, AdminQuery};

type Result<T> = std::result::Result<T, AdminApiError>;

/// Executions, spend and tokens over a time range: in total, per tenant, agent and model.
#[utoipa::path(get, path = "/admin/usage", tag = "usage", params(UsageQuery),
    responses((status = 200, body = UsageSummary), AdminErrors), security(("bearer" = [])))]
pub async fn get_usage(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminQuery(mut q): AdminQuery<UsageQuery>,
) -> Result<Json<UsageSummary>> {
    q.tenant_id = q.tenant_id.or(caller.tenant_header);
    Ok(Json(
        usage::summarise(&state.pool, &caller.principal, q).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActivityParams {
    /// An operator without it sees every tenant.
    pub tenant_id: Option<TenantId>,
    /// Keyset paging: items older than this id.
    pub before_id: Option<i64>,
    /// At most this many (1–500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// The recent activity feed, newest first: usage committed, reservations released, refusals.
#[utoipa::path(get, path = "/admin/activity", tag = "usage", params(ActivityParams),
    responses((status = 200, body = Vec<ActivityItem>), AdminErrors), security(("bearer" = [])))]
pub async fn get_activity(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminQuery(q): AdminQuery<ActivityParams>,
) -> Result<Json<Vec<ActivityItem>>> {
    let tenant = q.tenant_id.or(caller.tenant_header);
    let by = &caller.principal;
    Ok(Json(
        activity::recent(&state.pool, by, tenant, q.before_id, q.limit).await?,
    ))
}
