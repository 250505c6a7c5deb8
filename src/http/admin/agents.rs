//! `/admin/agents`: create (token shown once), list, get with financials, update limits and
//! policy, lifecycle state, budget, decommission, and the agent's tokens.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::{AdminErrors, TenantQuery};
use crate::admin::agent_changes::{
    self, DecommissionRequest, SetStateRequest, StateChangeResponse, UpdateAgentRequest,
};
use crate::admin::agent_tokens::{
    self, RevokeTokensRequest, RevokedTokensResponse, RotateAgentTokenRequest, RotatedTokenResponse,
};
use crate::admin::agents::{
    self, AgentQuery, AgentResponse, CreateAgentRequest, CreatedAgentResponse,
};
use crate::admin::budgets::{self, BudgetChange, SetBudgetRequest, TopUpRequest};
use crate::app_state::AppState;
use crate::domain::AgentState;
use crate::http::error::{AdminApiError, AdminErrorBody};
use crate::http::extract::{AdminCaller, AdminJson, AdminPath, AdminQuery};

type Result<T> = std::result::Result<T, AdminApiError>;

/// Create an agent; the response carries its token, shown this once.
///
/// A tenant has at most `gateway.max_agents_per_tenant` agents (default 1000), decommissioned
/// ones included: one more is a 409 `agent_limit_reached` and nothing is written.
#[utoipa::path(post, path = "/admin/agents", tag = "agents", params(TenantQuery),
    request_body = CreateAgentRequest,
    responses((status = 201, body = CreatedAgentResponse), AdminErrors,
        (status = 409, body = AdminErrorBody, description = "The name is taken (`conflict`), or \
            the tenant has as many agents as `gateway.max_agents_per_tenant` allows \
            (`agent_limit_reached`).")),
    security(("bearer" = [])))]
pub async fn create_agent(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminQuery(q): AdminQuery<TenantQuery>,
    AdminJson(req): AdminJson<CreateAgentRequest>,
) -> Result<(StatusCode, Json<CreatedAgentResponse>)> {
    let tenant = caller.tenant(q.tenant_id)?;
    let limit = state.settings.gateway.max_agents_per_tenant;
    let by = &caller.principal;
    let created = agents::create_agent(&state.pool, &state.signer, by, tenant, limit, req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// List agents with their financials, oldest first.
#[utoipa::path(get, path = "/admin/agents", tag = "agents", params(AgentQuery),
    responses((status = 200, body = Vec<AgentResponse>), AdminErrors), security(("bearer" = [])))]
pub async fn list_agents(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminQuery(q): AdminQuery<AgentQuery>,
) -> Result<Json<Vec<AgentResponse>>> {
    let tenant = caller.tenant(q.tenant_id)?;
    Ok(Json(agents::list_agents(&state.pool, tenant, &q).await?))
}

/// Get one agent (by id or name) with its financials.
#[utoipa::path(get, path = "/admin/agents/{agent}", tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name"), TenantQuery),
    responses((status = 200, body = AgentResponse), AdminErrors), security(("bearer" = [])))]
pub async fn get_agent(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminPath(agent): AdminPath<String>,
    AdminQuery(q): AdminQuery<TenantQuery>,
) -> Result<Json<AgentResponse>> {
    let tenant = caller.tenant(q.tenant_id)?;
    Ok(Json(agents::get_agent(&state.pool, tenant, &agent).await?))
}

/// Change an agent's limits, budget period or policy (a merge patch); a ledger event records
/// the settings before and after.
#[utoipa::path(patch, path = "/admin/agents/{agent}", tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name"), TenantQuery),
    request_body = UpdateAgentRequest,
    responses((status = 200, body = AgentResponse), AdminErrors), security(("bearer" = [])))]
pub async fn update_agent(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminPath(agent): AdminPath<String>,
    AdminQuery(q): AdminQuery<TenantQuery>,
    AdminJson(req): AdminJson<UpdateAgentRequest>,
) -> Result<Json<AgentResponse>> {
    let tenant = caller.tenant(q.tenant_id)?;
    let pool = &state.pool;
    Ok(Json(
        agent_changes::update_agent(pool, &caller.principal, tenant, &agent, req).await?,
    ))
}

/// Move an agent to another lifecycle state (the seed's transitions only; 409 otherwise).
#[utoipa::path(post, path = "/admin/agents/{agent}/state", tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name"), TenantQuery),
    request_body = SetStateRequest,
    responses((status = 200, body = StateChangeResponse), AdminErrors), security(("bearer" = [])))]
pub async fn set_agent_state(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminPath(agent): AdminPath<String>,
    AdminQuery(q): AdminQuery<TenantQuery>,
    AdminJson(req): AdminJson<SetStateRequest>,
) -> Result<Json<StateChangeResponse>> {
    let tenant = caller.tenant(q.tenant_id)?;
    let (pool, revocations) = (&state.pool, &state.revocations);
    let by = &caller.principal;
    Ok(Json(
        agent_changes::change_state(pool, revocations, by, tenant, &agent, req.state, req.reason)
            .await?,
    ))
}

/// Decommission an agent: it never executes again and all its tokens are revoked, on every
/// replica within a second. The agent and its ledger stay.
#[utoipa::path(post, path = "/admin/agents/{agent}/decommission", tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name"), TenantQuery),
    request_body(content = Option<DecommissionRequest>, description = "Optional reason"),
    responses((status = 200, body = StateChangeResponse), AdminErrors), security(("bearer" = [])))]
pub async fn decommission_agent(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminPath(agent): AdminPath<String>,
    AdminQuery(q): AdminQuery<TenantQuery>,
    AdminJson(req): AdminJson<Option<DecommissionRequest>>,
) -> Result<Json<StateChangeResponse>> {
    let tenant = caller.tenant(q.tenant_id)?;
    let reason = req.and_then(|r| r.reason);
    let next = AgentState::Decommissioned;
    let by = &caller.principal;
    Ok(Json(
        agent_changes::change_state(
            &state.pool,
            &state.revocations,
            by,
            tenant,
            &agent,
            next,
            reason,
        )
        .await?,
    ))
}

/// Add to an agent's budget.
#[utoipa::path(post, path = "/admin/agents/{agent}/topup", tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name"), TenantQuery),
    request_body = TopUpRequest,
    responses((status = 200, body = AgentResponse), AdminErrors), security(("bearer" = [])))]
pub async fn top_up_agent(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminPath(agent): AdminPath<String>,
    AdminQuery(q): AdminQuery<TenantQuery>,
    AdminJson(req): AdminJson<TopUpRequest>,
) -> Result<Json<AgentResponse>> {
    let tenant = caller.tenant(q.tenant_id)?;
    let change = BudgetChange::top_up(&req)?;
    let by = &caller.principal;
    Ok(Json(
        budgets::change_budget(&state.pool, by, tenant, &agent, change).await?,
    ))
}

/// Set an agent's budget.
#[utoipa::path(put, path = "/admin/agents/{agent}/budget", tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name"), TenantQuery),
    request_body = SetBudgetRequest,
    responses((status = 200, body = AgentResponse), AdminErrors), security(("bearer" = [])))]
pub async fn set_agent_budget(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminPath(agent): AdminPath<String>,
    AdminQuery(q): AdminQuery<TenantQuery>,
    AdminJson(req): AdminJson<SetBudgetRequest>,
) -> Result<Json<AgentResponse>> {
    let tenant = caller.tenant(q.tenant_id)?;
    let change = BudgetChange::set(&req)?;
    let by = &caller.principal;
    Ok(Json(
        budgets::change_budget(&state.pool, by, tenant, &agent, change).await?,
    ))
}

/// Revoke every live token of the agent and issue a new one (shown this once).
#[utoipa::path(post, path = "/admin/agents/{agent}/rotate_token", tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name"), TenantQuery),
    request_body(content = Option<RotateAgentTokenRequest>, description = "Scope and lifetime of the new token"),
    responses((status = 200, body = RotatedTokenResponse), AdminErrors), security(("bearer" = [])))]
pub async fn rotate_agent_token(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminPath(agent): AdminPath<String>,
    AdminQuery(q): AdminQuery<TenantQuery>,
    AdminJson(req): AdminJson<Option<RotateAgentTokenRequest>>,
) -> Result<Json<RotatedTokenResponse>> {
    let tenant = caller.tenant(q.tenant_id)?;
    let req = req.unwrap_or_default();
    let by = &caller.principal;
    Ok(Json(
        agent_tokens::rotate_agent_token(
            &state.pool,
            &state.signer,
            &state.revocations,
            by,
            tenant,
            &agent,
            req,
        )
        .await?,
    ))
}

/// Revoke every live token of the agent (the agent stays; issue or rotate to give it one).
#[utoipa::path(post, path = "/admin/agents/{agent}/revoke_tokens", tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name"), TenantQuery),
    request_body(content = Option<RevokeTokensRequest>, description = "Optional reason"),
    responses((status = 200, body = RevokedTokensResponse), AdminErrors), security(("bearer" = [])))]
pub async fn revoke_agent_tokens(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminPath(agent): AdminPath<String>,
    AdminQuery(q): AdminQuery<TenantQuery>,
    AdminJson(req): AdminJson<Option<RevokeTokensRequest>>,
) -> Result<Json<RevokedTokensResponse>> {
    let tenant = caller.tenant(q.tenant_id)?;
    let reason = req.and_then(|r| r.reason);
    let by = &caller.principal;
    Ok(Json(
        agent_tokens::revoke_agent_tokens(
            &state.pool,
            &state.revocations,
            by,
            tenant,
            &agent,
            reason,
        )
        .await?,
    ))
}
