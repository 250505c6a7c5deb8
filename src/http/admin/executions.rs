//! `/admin/executions`: listed with filters, and one with its ledger timeline.

use axum::extract::State;
use axum::Json;

use super::{AdminErrors, TenantQuery};
use crate::admin::executions::{self, ExecutionDetail, ExecutionQuery, ExecutionResponse};
use crate::app_state::AppState;
use crate::http::error::AdminApiError;
use crate::http::extract::{AdminCaller, AdminPath, AdminQuery};

type Result<T> = std::result::Result<T, AdminApiError>;

/// List executions, newest first.
#[utoipa::path(get, path = "/admin/executions", tag = "executions", params(ExecutionQuery),
    responses((status = 200, body = Vec<ExecutionResponse>), AdminErrors), security(("bearer" = [])))]
pub async fn list_executions(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminQuery(q): AdminQuery<ExecutionQuery>,
) -> Result<Json<Vec<ExecutionResponse>>> {
    let tenant = caller.tenant(q.tenant_id)?;
    Ok(Json(
        executions::list_executions(&state.pool, tenant, q).await?,
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
        executions::get_execution(&state.pool, tenant, &execution).await?,
    ))
}
