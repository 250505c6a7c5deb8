//! `/admin/alerts` and `/admin/alert_rules`: a tenant's alerts (an operator's: every tenant's and
//! the installation's), acknowledged one by one, and the rules that decide which fire.

use axum::extract::State;
use axum::Json;

use super::{AdminErrors, TenantQuery};
use crate::admin::alerts::{self, AlertList, AlertQuery, AlertRuleResponse, SetAlertRuleRequest};
use crate::app_state::AppState;
use crate::http::error::AdminApiError;
use crate::http::extract::{AdminCaller, AdminJson, AdminPath, AdminQuery};
use crate::store::alerts::AlertRow;

type Result<T> = std::result::Result<T, AdminApiError>;

/// List alerts, newest first, with the counts over every page (`summary`: `total`, `open`, and
/// open ones by severity).
#[utoipa::path(get, path = "/admin/alerts", tag = "alerts", params(AlertQuery),
    responses((status = 200, body = AlertList), AdminErrors), security(("bearer" = [])))]
pub async fn list_alerts(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminQuery(q): AdminQuery<AlertQuery>,
) -> Result<Json<AlertList>> {
    let scope = caller.visible(q.tenant_id)?;
    Ok(Json(alerts::list_alerts(&state.pool, scope, q).await?))
}

/// Acknowledge an alert (recorded in the ledger as `alert.acknowledged`; again: no change).
#[utoipa::path(post, path = "/admin/alerts/{id}/ack", tag = "alerts",
    params(("id" = i64, Path, description = "Alert id"), TenantQuery),
    responses((status = 200, body = AlertRow), AdminErrors), security(("bearer" = [])))]
pub async fn ack_alert(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminPath(id): AdminPath<i64>,
    AdminQuery(q): AdminQuery<TenantQuery>,
) -> Result<Json<AlertRow>> {
    let scope = caller.visible(q.tenant_id)?;
    let by = &caller.principal;
    Ok(Json(alerts::ack_alert(&state.pool, by, scope, id).await?))
}

/// The tenant's alert rules, one per kind (defaults included).
#[utoipa::path(get, path = "/admin/alert_rules", tag = "alerts", params(TenantQuery),
    responses((status = 200, body = Vec<AlertRuleResponse>), AdminErrors), security(("bearer" = [])))]
pub async fn list_alert_rules(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminQuery(q): AdminQuery<TenantQuery>,
) -> Result<Json<Vec<AlertRuleResponse>>> {
    let tenant = caller.tenant(q.tenant_id)?;
    Ok(Json(alerts::list_rules(&state.pool, tenant).await?))
}

/// Set the tenant's rule for one kind: on or off, and a budget rule's thresholds.
#[utoipa::path(put, path = "/admin/alert_rules/{kind}", tag = "alerts",
    params(("kind" = String, Path, description = "Alert kind"), TenantQuery),
    request_body = SetAlertRuleRequest,
    responses((status = 200, body = AlertRuleResponse), AdminErrors), security(("bearer" = [])))]
pub async fn set_alert_rule(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminPath(kind): AdminPath<String>,
    AdminQuery(q): AdminQuery<TenantQuery>,
    AdminJson(req): AdminJson<SetAlertRuleRequest>,
) -> Result<Json<AlertRuleResponse>> {
    let tenant = caller.tenant(q.tenant_id)?;
    let by = &caller.principal;
    Ok(Json(
        alerts::set_rule(&state.pool, by, tenant, &kind, req).await?,
    ))
}
