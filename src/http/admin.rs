//! Handlers of the admin API. Thin: extract, call one admin use case, render JSON.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{AdminApiError, AdminErrorBody};
use super::extract::{AdminCaller, AdminJson};
use super::AppState;
use crate::admin::agents::{AgentResponse, CreateAgentRequest, CreatedAgentResponse};
use crate::admin::replay::{ReplayReport, TimelineEvent};
use crate::admin::{self, acting_tenant};
use crate::domain::{AgentId, AgentState, Scope, TenantId};
use crate::ledger::verify::{self, VerifyReport};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    /// Tenant to act on (operator tokens only; an admin token acts on its own tenant).
    pub tenant_id: Option<TenantId>,
}

/// Create an agent; the response carries its token, shown this once.
#[utoipa::path(
    post,
    path = "/admin/agents",
    tag = "admin",
    params(TenantQuery),
    request_body = CreateAgentRequest,
    responses(
        (status = 201, body = CreatedAgentResponse),
        (status = 400, body = AdminErrorBody),
        (status = 401, body = AdminErrorBody),
        (status = 403, body = AdminErrorBody),
        (status = 409, body = AdminErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_agent(
    State(state): State<AppState>,
    caller: AdminCaller,
    Query(q): Query<TenantQuery>,
    AdminJson(req): AdminJson<CreateAgentRequest>,
) -> Result<Response, AdminApiError> {
    let tenant = acting_tenant(&caller.principal, q.tenant_id)?;
    let gw = &state.gateway;
    let created =
        admin::agents::create_agent(&gw.pool, &gw.signer, &caller.principal, tenant, req).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListAgentsQuery {
    pub tenant_id: Option<TenantId>,
    /// Only agents in this lifecycle state.
    pub state: Option<AgentState>,
    /// Keyset paging: agents after this id.
    pub after: Option<AgentId>,
    /// At most this many (1–1000, default 100).
    pub limit: Option<i64>,
}

/// List agents with their financials.
#[utoipa::path(
    get,
    path = "/admin/agents",
    tag = "admin",
    params(ListAgentsQuery),
    responses((status = 200, body = Vec<AgentResponse>), (status = 400, body = AdminErrorBody), (status = 401, body = AdminErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_agents(
    State(state): State<AppState>,
    caller: AdminCaller,
    Query(q): Query<ListAgentsQuery>,
) -> Result<Json<Vec<AgentResponse>>, AdminApiError> {
    let tenant = acting_tenant(&caller.principal, q.tenant_id)?;
    Ok(Json(
        admin::agents::list_agents(&state.gateway.pool, tenant, q.state, q.after, q.limit).await?,
    ))
}

/// Get one agent (by id or name) with its financials.
#[utoipa::path(
    get,
    path = "/admin/agents/{agent}",
    tag = "admin",
    params(("agent" = String, Path, description = "Agent id or name"), TenantQuery),
    responses((status = 200, body = AgentResponse), (status = 404, body = AdminErrorBody)),
    security(("bearer" = []))
)]
pub async fn get_agent(
    State(state): State<AppState>,
    caller: AdminCaller,
    Path(agent): Path<String>,
    Query(q): Query<TenantQuery>,
) -> Result<Json<AgentResponse>, AdminApiError> {
    let tenant = acting_tenant(&caller.principal, q.tenant_id)?;
    Ok(Json(
        admin::agents::get_agent(&state.gateway.pool, tenant, &agent).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReplayQuery {
    pub tenant_id: Option<TenantId>,
    /// Return this execution's event timeline instead of the full replay.
    pub execution_id: Option<String>,
}

/// Verify the hash chains and rebuild every agent's books from the ledger, compared with the live
/// counters; or, with `execution_id`, that execution's event timeline.
#[utoipa::path(
    get,
    path = "/admin/replay",
    tag = "admin",
    params(ReplayQuery),
    responses(
        (status = 200, description = "A ReplayReport, or a list of TimelineEvent with execution_id", body = ReplayReport),
        (status = 404, body = AdminErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_replay(
    State(state): State<AppState>,
    caller: AdminCaller,
    Query(q): Query<ReplayQuery>,
) -> Result<Response, AdminApiError> {
    let pool = &state.gateway.pool;
    if let Some(execution_id) = q.execution_id {
        let tenant = acting_tenant(&caller.principal, q.tenant_id)?;
        let events: Vec<TimelineEvent> =
            admin::replay::timeline(pool, tenant, &execution_id).await?;
        if events.is_empty() {
            return Err(admin::AdminError::NotFound("execution").into());
        }
        return Ok(Json(events).into_response());
    }
    let scope = match caller.principal.scope {
        Scope::Operator => q.tenant_id,
        _ => Some(acting_tenant(&caller.principal, q.tenant_id)?),
    };
    let keys = &state.gateway.settings.auth.keys;
    Ok(Json(admin::replay::replay(pool, scope, keys).await?).into_response())
}

/// Verify every hash chain; names the first bad event.
#[utoipa::path(
    get,
    path = "/admin/ledger/verify",
    tag = "admin",
    responses((status = 200, body = VerifyReport), (status = 403, body = AdminErrorBody)),
    security(("bearer" = []))
)]
pub async fn verify_ledger(
    State(state): State<AppState>,
    caller: AdminCaller,
) -> Result<Json<VerifyReport>, AdminApiError> {
    if caller.principal.scope != Scope::Operator {
        return Err(AdminApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "ledger verification covers every tenant: operator token required",
        ));
    }
    let gw = &state.gateway;
    let report = verify::verify_all(&gw.pool, &gw.settings.auth.keys).await?;
    state.observed.record_verification(&report);
    Ok(Json(report))
}
