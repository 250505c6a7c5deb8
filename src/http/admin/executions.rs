//! `/admin/executions`: listed with filters, and one with its ledger timeline.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::{AdminErrors, TenantQuery};
use crate::admin::executions::{self, ExecutionDetail, ExecutionQuery, ExecutionResponse};
use crate::domain::{ExecutionState, TenantId};
use crate::http::error::AdminApiError;
use crate::http::extract::{AdminCaller, AdminPath, AdminQuery};
use crate::http::AppState;

type Result<T> = std::result::Result<T, AdminApiError>;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListExecutionsQuery {
    pub tenant_id: Option<TenantId>,
    /// Only this agent's (id or name).
    pub agent: Option<String>,
    pub state: Option<ExecutionState>,
    /// Only this model alias.
    pub model: Option<String>,
    /// Only this route, e.g. `/v1/chat/completions`.
    pub route: Option<String>,
    /// Created at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Keyset paging: executions older than this id (the last id of the previous page).
    pub before: Option<Uuid>,
    /// At most this many (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// List executions, newest first.
#[utoipa::path(get, path = "/admin/executions", tag = "executions", params(ListExecutionsQuery),
    responses((status = 200, body = Vec<ExecutionResponse>), AdminErrors), security(("bearer" = [])))]
pub async fn list_executions(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminQuery(q): AdminQuery<ListExecutionsQuery>,
) -> Result<Json<Vec<ExecutionResponse>>> {
    let tenant = caller.tenant(q.tenant_id)?;
    let query = ExecutionQuery {
        agent: q.agent,
        state: q.state,
        model: q.model,
        route: q.route,
        since: q.since,
        until: q.until,
        before: q.before,
        limit: q.limit,
    };
    Ok(Json(
        executions::list_executions(&state.gateway.pool, tenant, query).await?,
    ))
}

/// Get one execution (by id, or by its caller key) with its full ledger timeline.
#[utoipa::path(get, path = "/admin/executions/{execution}", tag = "executions",
    params(("execution" = String, Path, description = "Execution id, or its Idempotency-Key"), TenantQuery),
    responses((status = 200, body = ExecutionDetail), AdminErrors), security(("bearer" = [])))]
pub async fn get_execution(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminPath(execution): AdminPath<String>,
    AdminQuery(q): AdminQuery<TenantQuery>,
) -> Result<Json<ExecutionDetail>> {
    let tenant = caller.tenant(q.tenant_id)?;
    Ok(Json(
        executions::get_execution(&state.gateway.pool, tenant, &execution).await?,
    ))
}
