//! `/admin/ledger/*` and the seed's `GET /admin/replay`: read and verify the hash chains.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::AdminErrors;
use crate::admin::ledger::{self, CheckpointResponse, CheckpointWritten, EventQuery, LedgerEvent};
use crate::admin::replay::{self, ReplayReport, TimelineEvent};
use crate::admin::AdminError;
use crate::app_state::AppState;
use crate::domain::TenantId;
use crate::http::error::AdminApiError;
use crate::http::extract::{AdminCaller, AdminQuery};
use crate::ledger::verify::{self, VerifyReport};

type Result<T> = std::result::Result<T, AdminApiError>;

/// List ledger events in append order.
#[utoipa::path(get, path = "/admin/ledger/events", tag = "ledger", params(EventQuery),
    responses((status = 200, body = Vec<LedgerEvent>), AdminErrors), security(("bearer" = [])))]
pub async fn list_ledger_events(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminQuery(mut q): AdminQuery<EventQuery>,
) -> Result<Json<Vec<LedgerEvent>>> {
    q.tenant_id = q.tenant_id.or(caller.tenant_header);
    Ok(Json(
        ledger::list_events(&state.pool, &caller.principal, q).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// Only this tenant's chains (an admin always gets its own; an operator without it, every
    /// chain).
    pub tenant_id: Option<TenantId>,
}

/// Verify the hash chains and name the first bad event: an admin its tenant's chains, an
/// operator every chain (or one tenant's).
#[utoipa::path(get, path = "/admin/ledger/verify", tag = "ledger", params(VerifyQuery),
    responses((status = 200, body = VerifyReport), AdminErrors), security(("bearer" = [])))]
pub async fn verify_ledger(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminQuery(q): AdminQuery<VerifyQuery>,
) -> Result<Json<VerifyReport>> {
    let keys = &state.settings.auth.keys;
    let report = match caller.visible(q.tenant_id)? {
        Some(tenant) => verify::verify_tenant(&state.pool, keys, tenant).await?,
        None => {
            let report = verify::verify_all(&state.pool, keys).await?;
            state.observed.record_verification(&report);
            report
        }
    };
    Ok(Json(report))
}

/// Write a signed checkpoint of every chain's head now (operator; replicas also write one
/// periodically).
#[utoipa::path(post, path = "/admin/ledger/checkpoints", tag = "ledger",
    responses((status = 200, body = CheckpointWritten), AdminErrors), security(("bearer" = [])))]
pub async fn write_checkpoint(
    State(state): State<AppState>,
    caller: AdminCaller,
) -> Result<Json<CheckpointWritten>> {
    Ok(Json(
        ledger::write_checkpoint(
            &state.pool,
            &state.settings.auth,
            state.replica_id,
            &caller.principal,
        )
        .await?,
    ))
}

/// The latest signed checkpoint (operator).
#[utoipa::path(get, path = "/admin/ledger/checkpoints/latest", tag = "ledger",
    responses((status = 200, body = CheckpointResponse), AdminErrors), security(("bearer" = [])))]
pub async fn get_latest_checkpoint(
    State(state): State<AppState>,
    caller: AdminCaller,
) -> Result<Json<CheckpointResponse>> {
    Ok(Json(
        ledger::latest_checkpoint(&state.pool, &caller.principal).await?,
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
#[utoipa::path(get, path = "/admin/replay", tag = "ledger", params(ReplayQuery),
    responses(
        (status = 200, description = "A ReplayReport, or a list of TimelineEvent with execution_id", body = ReplayReport),
        AdminErrors),
    security(("bearer" = [])))]
pub async fn get_replay(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminQuery(q): AdminQuery<ReplayQuery>,
) -> Result<Response> {
    let pool = &state.pool;
    if let Some(execution_id) = q.execution_id {
        let tenant = caller.tenant(q.tenant_id)?;
        let events: Vec<TimelineEvent> = replay::timeline(pool, tenant, &execution_id)
            .await
            .map_err(AdminError::from)?;
        if events.is_empty() {
            return Err(AdminError::NotFound("execution").into());
        }
        return Ok(Json(events).into_response());
    }
    let scope = caller.visible(q.tenant_id)?;
    let keys = &state.settings.auth.keys;
    let report = replay::replay(pool, scope, keys)
        .await
        .map_err(AdminError::from)?;
    Ok(Json(report).into_response())
}
