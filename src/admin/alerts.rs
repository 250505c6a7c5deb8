//! Alerts (issue 19): listed with a summary, filters and keyset paging; acknowledged (an admin
//! action in the ledger); and the per-tenant rules that decide which fire. An admin sees its
//! tenant's alerts; an operator every tenant's and the installation's (a lost replica).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::{admin_event, check_time, find_agent, page_limit, AdminError};
use crate::alerts::{DEFAULT_THRESHOLDS, KINDS, THRESHOLD_KINDS};
use crate::auth::Principal;
use crate::domain::TenantId;
use crate::ledger;
use crate::store::alerts::{self as store, AlertFilter, AlertRow, AlertSummary};

/// Filters of `GET /admin/alerts`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// Tenant (operator tokens only; without it an operator sees every tenant's alerts and the
    /// installation's). An admin token sees its own tenant's.
    pub tenant_id: Option<TenantId>,
    /// Only this agent's (id or name; needs a tenant).
    pub agent: Option<String>,
    /// Only this kind (`agent_budget`, `tenant_budget`, `budget_refusal`, `lifecycle`,
    /// `overrun`, `ledger_verification`, `replica_lost`, `stale_reservation`).
    pub kind: Option<String>,
    /// Only this severity (`critical`, `warning`, `info`).
    pub severity: Option<String>,
    /// `open` (not acknowledged) or `acknowledged`.
    pub status: Option<String>,
    /// Raised at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Raised before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Keyset paging: alerts older than this id (`next_before` of the previous page).
    pub before: Option<i64>,
    /// At most this many (1–500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// A page of alerts, newest first, and the counts over every page.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertList {
    pub summary: AlertSummary,
    pub alerts: Vec<AlertRow>,
    /// Pass as `before` for the next page; `null` on the last one.
    pub next_before: Option<i64>,
}

fn one_of(
    field: &'static str,
    value: Option<String>,
    allowed: &[&str],
) -> Result<Option<String>, AdminError> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(AdminError::invalid(
            field,
            format!("must be one of: {}", allowed.join(", ")),
        )),
        v => Ok(v),
    }
}

pub async fn list_alerts(
    pool: &sqlx::PgPool,
    scope: Option<TenantId>,
    q: AlertQuery,
) -> Result<AlertList, AdminError> {
    let limit = page_limit(q.limit, 50, 500)?;
    check_time("since", q.since)?;
    check_time("until", q.until)?;
    let open = match one_of("status", q.status, &["open", "acknowledged"])?.as_deref() {
        Some("open") => Some(true),
        Some(_) => Some(false),
        None => None,
    };
    let mut conn = pool.acquire().await?;
    let agent_id = match (&q.agent, scope) {
        (Some(a), Some(t)) => Some(find_agent(&mut conn, t, a, false).await?.id),
        (Some(_), None) => {
            return Err(AdminError::invalid(
                "agent",
                "name a tenant (tenant_id) to filter by agent",
            ))
        }
        (None, _) => None,
    };
    let filter = AlertFilter {
        tenant_id: scope,
        agent_id,
        kind: one_of("kind", q.kind, KINDS)?,
        severity: one_of("severity", q.severity, &["critical", "warning", "info"])?,
        open,
        since: q.since,
        until: q.until,
    };
    let summary = store::summarize(&mut conn, &filter).await?;
    let alerts = store::list_alerts(&mut conn, &filter, q.before, limit).await?;
    let next_before = match alerts.len() as i64 == limit {
        true => alerts.last().map(|a| a.id),
        false => None,
    };
    Ok(AlertList {
        summary,
        alerts,
        next_before,
    })
}

/// Acknowledges an alert: recorded with who did it, and in the ledger (on the chain of what it
/// is about). Acknowledging it again changes nothing.
#[tracing::instrument(skip_all, fields(id))]
pub async fn ack_alert(
    pool: &sqlx::PgPool,
    by: &Principal,
    scope: Option<TenantId>,
    id: i64,
) -> Result<AlertRow, AdminError> {
    let mut tx = pool.begin().await?;
    let alert = store::lock_alert(&mut tx, scope, id)
        .await?
        .ok_or(AdminError::NotFound("alert"))?;
    if alert.acked_at.is_some() {
        return Ok(alert);
    }
    let acked = store::ack_alert(&mut tx, id, &by.subject).await?;
    let payload = json!({
        "by": by.subject, "alert_id": id, "kind": acked.kind, "subject": acked.subject,
        "severity": acked.severity, "before": {"acknowledged": false},
        "after": {"acknowledged": true},
    });
    ledger::append(
        &mut tx,
        admin_event(
            acked.tenant_id,
            acked.agent_id,
            "alert.acknowledged",
            payload,
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(acked)
}

/// A tenant's rule for one kind of alert.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertRuleResponse {
    pub kind: String,
    pub enabled: bool,
    /// Percentages of the budget (budget kinds only).
    pub thresholds: Option<Vec<i32>>,
    /// Whether this is the default (the tenant never set it).
    pub default: bool,
}

/// Every kind's rule for the tenant, defaults included.
pub async fn list_rules(
    pool: &sqlx::PgPool,
    tenant_id: TenantId,
) -> Result<Vec<AlertRuleResponse>, AdminError> {
    let mut conn = pool.acquire().await?;
    let stored = store::list_rules(&mut conn, tenant_id).await?;
    Ok(KINDS
        .iter()
        .map(|kind| {
            let row = stored.iter().find(|r| r.kind == *kind);
            let budget = THRESHOLD_KINDS.contains(kind);
            AlertRuleResponse {
                kind: (*kind).to_owned(),
                enabled: row.is_none_or(|r| r.enabled),
                thresholds: budget.then(|| {
                    row.and_then(|r| r.thresholds.clone())
                        .unwrap_or_else(|| DEFAULT_THRESHOLDS.to_vec())
                }),
                default: row.is_none(),
            }
        })
        .collect())
}

/// `PUT /admin/alert_rules/{kind}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAlertRuleRequest {
    pub enabled: bool,
    /// Percentages of the budget, 1–1000, at most 10 (budget kinds only; default 50, 80, 100).
    pub thresholds: Option<Vec<i32>>,
}

#[tracing::instrument(skip_all, fields(%tenant_id, kind))]
pub async fn set_rule(
    pool: &sqlx::PgPool,
    by: &Principal,
    tenant_id: TenantId,
    kind: &str,
    req: SetAlertRuleRequest,
) -> Result<AlertRuleResponse, AdminError> {
    if !KINDS.contains(&kind) {
        return Err(AdminError::NotFound("alert rule"));
    }
    let thresholds = match (req.thresholds, THRESHOLD_KINDS.contains(&kind)) {
        (Some(_), false) => {
            return Err(AdminError::invalid(
                "thresholds",
                "only budget rules have thresholds",
            ))
        }
        (Some(mut t), true) => {
            t.sort_unstable();
            t.dedup();
            if t.is_empty() || t.len() > 10 || t.iter().any(|p| !(1..=1000).contains(p)) {
                return Err(AdminError::invalid(
                    "thresholds",
                    "must be 1 to 10 percentages, each between 1 and 1000",
                ));
            }
            Some(t)
        }
        (None, _) => None,
    };
    let mut tx = pool.begin().await?;
    crate::store::tenants::get_tenant(&mut tx, tenant_id)
        .await
        .map_err(AdminError::from_store("tenant"))?;
    let before =
        store::save_rule(&mut tx, tenant_id, kind, req.enabled, thresholds.as_deref()).await?;
    let payload = json!({
        "by": by.subject, "kind": kind,
        "before": before.map(|r| json!({"enabled": r.enabled, "thresholds": r.thresholds})),
        "after": {"enabled": req.enabled, "thresholds": thresholds},
    });
    ledger::append(
        &mut tx,
        admin_event(Some(tenant_id), None, "alert_rule.updated", payload),
    )
    .await?;
    tx.commit().await?;
    let budget = THRESHOLD_KINDS.contains(&kind);
    Ok(AlertRuleResponse {
        kind: kind.to_owned(),
        enabled: req.enabled,
        thresholds: budget.then(|| thresholds.unwrap_or_else(|| DEFAULT_THRESHOLDS.to_vec())),
        default: false,
    })
}
