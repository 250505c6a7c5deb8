//! Alerts (`alerts`) and their per-tenant rules (`alert_rules`). Alerts are raised by
//! `aex_raise_alert` (migrations/20261207120001_alerts_and_webhooks.sql), mostly from triggers in
//! the transaction of the fact; [`raise`] is the same call for facts the server finds itself
//! (a ledger that fails verification, a lost replica, a stale reservation). `tenant: None` in a
//! read means every tenant and the installation's own alerts (an operator's view).

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, QueryBuilder};

use crate::domain::{AgentId, TenantId};

/// An alert, as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema, sqlx::FromRow)]
#[schema(as = AlertResponse)]
pub struct AlertRow {
    pub id: i64,
    /// `null` for alerts about the installation (operators only).
    pub tenant_id: Option<TenantId>,
    pub agent_id: Option<AgentId>,
    /// `agent_budget`, `tenant_budget`, `budget_refusal`, `lifecycle`, `overrun`,
    /// `ledger_verification`, `replica_lost` or `stale_reservation`.
    pub kind: String,
    /// `critical`, `warning` or `info`.
    pub severity: String,
    /// What it is about: `agent:<id>`, `tenant:<id>`, `replica:<id>`, `chain:<id>`.
    pub subject: String,
    /// The budget threshold crossed, in percent (0 for the other kinds).
    pub threshold: i32,
    pub message: String,
    #[schema(value_type = Object)]
    pub details: Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub acked_at: Option<DateTime<Utc>>,
    pub acked_by: Option<String>,
}

const COLUMNS: &str =
    "SELECT id, tenant_id, agent_id, kind, severity, subject, threshold, message, \
                       details, created_at, acked_at, acked_by FROM alerts WHERE true";

/// Which alerts to list or count.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    /// `None`: every tenant's and the installation's.
    pub tenant_id: Option<TenantId>,
    pub agent_id: Option<AgentId>,
    pub kind: Option<String>,
    pub severity: Option<String>,
    /// `Some(true)`: not acknowledged; `Some(false)`: acknowledged.
    pub open: Option<bool>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

fn push_filter(q: &mut QueryBuilder<'_, sqlx::Postgres>, f: &AlertFilter) {
    if let Some(t) = f.tenant_id {
        q.push(" AND tenant_id = ").push_bind(t);
    }
    if let Some(a) = f.agent_id {
        q.push(" AND agent_id = ").push_bind(a);
    }
    if let Some(k) = &f.kind {
        q.push(" AND kind = ").push_bind(k.clone());
    }
    if let Some(s) = &f.severity {
        q.push(" AND severity = ").push_bind(s.clone());
    }
    match f.open {
        Some(true) => q.push(" AND acked_at IS NULL"),
        Some(false) => q.push(" AND acked_at IS NOT NULL"),
        None => q,
    };
    if let Some(t) = f.since {
        q.push(" AND created_at >= ").push_bind(t);
    }
    if let Some(t) = f.until {
        q.push(" AND created_at < ").push_bind(t);
    }
}

/// Newest first; `before` is keyset paging (the last id of the previous page).
pub async fn list_alerts(
    conn: &mut PgConnection,
    f: &AlertFilter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AlertRow>, sqlx::Error> {
    let mut q = QueryBuilder::new(COLUMNS);
    push_filter(&mut q, f);
    if let Some(b) = before {
        q.push(" AND id < ").push_bind(b);
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
    q.build_query_as().fetch_all(conn).await
}

/// Counts of the alerts a filter matches (all pages).
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct AlertSummary {
    /// Every alert matched.
    pub total: i64,
    /// Those not acknowledged.
    pub open: i64,
    /// Open alerts by severity.
    pub critical: i64,
    pub warning: i64,
    pub info: i64,
}

pub async fn summarize(
    conn: &mut PgConnection,
    f: &AlertFilter,
) -> Result<AlertSummary, sqlx::Error> {
    let mut q = QueryBuilder::new(
        "SELECT count(*) AS total, count(*) FILTER (WHERE acked_at IS NULL) AS open, \
         count(*) FILTER (WHERE acked_at IS NULL AND severity = 'critical') AS critical, \
         count(*) FILTER (WHERE acked_at IS NULL AND severity = 'warning') AS warning, \
         count(*) FILTER (WHERE acked_at IS NULL AND severity = 'info') AS info \
         FROM alerts WHERE true",
    );
    push_filter(&mut q, f);
    q.build_query_as().fetch_one(conn).await
}

/// One alert, locked, if the caller may see it (`tenant: None`: any).
pub async fn lock_alert(
    conn: &mut PgConnection,
    tenant_id: Option<TenantId>,
    id: i64,
) -> Result<Option<AlertRow>, sqlx::Error> {
    let mut q = QueryBuilder::new(COLUMNS);
    q.push(" AND id = ").push_bind(id);
    if let Some(t) = tenant_id {
        q.push(" AND tenant_id = ").push_bind(t);
    }
    q.push(" FOR UPDATE");
    q.build_query_as().fetch_optional(conn).await
}

pub async fn ack_alert(
    conn: &mut PgConnection,
    id: i64,
    by: &str,
) -> Result<AlertRow, sqlx::Error> {
    sqlx::query_as(
        "UPDATE alerts SET acked_at = now(), acked_by = $2 WHERE id = $1 \
         RETURNING id, tenant_id, agent_id, kind, severity, subject, threshold, message, \
         details, created_at, acked_at, acked_by",
    )
    .bind(id)
    .bind(by)
    .fetch_one(conn)
    .await
}

/// An alert the server raises itself (the triggers raise the others).
#[derive(Debug, Clone)]
pub struct NewAlert<'a> {
    pub tenant_id: Option<TenantId>,
    pub agent_id: Option<AgentId>,
    pub kind: &'a str,
    pub severity: &'a str,
    pub subject: String,
    /// Which occurrence: the same (kind, subject, period, threshold) fires once.
    pub period: String,
    pub message: String,
    pub details: serde_json::Value,
}

/// Raises it once, with its deliveries; the new alert's id, `None` when it fired before (or its
/// rule is off).
pub async fn raise(conn: &mut PgConnection, a: &NewAlert<'_>) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT aex_raise_alert($1, $2, $3, $4, $5, $6, 0, $7, $8)")
        .bind(a.tenant_id)
        .bind(a.agent_id)
        .bind(a.kind)
        .bind(a.severity)
        .bind(&a.subject)
        .bind(&a.period)
        .bind(&a.message)
        .bind(Json(&a.details))
        .fetch_one(conn)
        .await
}

/// A tenant's stored rule for one kind.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RuleRow {
    pub kind: String,
    pub enabled: bool,
    pub thresholds: Option<Vec<i32>>,
    pub updated_at: DateTime<Utc>,
}

pub async fn list_rules(
    conn: &mut PgConnection,
    tenant_id: TenantId,
) -> Result<Vec<RuleRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT kind, enabled, thresholds, updated_at FROM alert_rules WHERE tenant_id = $1 \
         ORDER BY kind",
    )
    .bind(tenant_id)
    .fetch_all(conn)
    .await
}

/// Writes the tenant's rule for `kind`; the one it replaced, if any.
pub async fn save_rule(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    kind: &str,
    enabled: bool,
    thresholds: Option<&[i32]>,
) -> Result<Option<RuleRow>, sqlx::Error> {
    let before: Option<RuleRow> = sqlx::query_as(
        "SELECT kind, enabled, thresholds, updated_at FROM alert_rules \
         WHERE tenant_id = $1 AND kind = $2 FOR UPDATE",
    )
    .bind(tenant_id)
    .bind(kind)
    .fetch_optional(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO alert_rules (tenant_id, kind, enabled, thresholds) VALUES ($1, $2, $3, $4) \
         ON CONFLICT ON CONSTRAINT alert_rules_pkey DO UPDATE SET enabled = EXCLUDED.enabled, \
         thresholds = EXCLUDED.thresholds, updated_at = now()",
    )
    .bind(tenant_id)
    .bind(kind)
    .bind(enabled)
    .bind(thresholds)
    .execute(conn)
    .await?;
    Ok(before)
}

/// Raises `replica_lost` (an installation alert) for every replica whose heartbeat stopped
/// before `before` without deregistering; how many were new.
pub async fn raise_lost_replicas(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(aex_raise_alert(NULL, NULL, 'replica_lost', 'warning', 'replica:' || id, \
           'lost', 0, format('replica %s on %s stopped sending heartbeats', id, hostname), \
           jsonb_build_object('replica_id', id, 'hostname', hostname, 'version', version, \
                              'heartbeat_at', heartbeat_at))) \
         FROM replicas WHERE stopped_at IS NULL AND heartbeat_at < $1",
    )
    .bind(before)
    .fetch_one(conn)
    .await
}

/// Raises `stale_reservation` for every hold still RESERVED since before `before` (at most
/// 1000 a pass); how many were new.
pub async fn raise_stale_reservations(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(aex_raise_alert(r.tenant_id, r.agent_id, 'stale_reservation', 'warning', \
           'agent:' || r.agent_id, 'reservation:' || r.id, 0, \
           format('execution %s has held %s micro-USD since %s', e.execution_key, \
                  r.estimate_micro_usd, r.created_at), \
           jsonb_build_object('execution_id', e.execution_key, 'state', e.state, \
                              'estimate_micro_usd', r.estimate_micro_usd, \
                              'held_since', r.created_at, 'replica_id', e.replica_id))) \
         FROM (SELECT * FROM reservations WHERE settled_at IS NULL AND created_at < $1 \
               ORDER BY created_at LIMIT 1000) r \
         JOIN executions e ON e.id = r.execution_id",
    )
    .bind(before)
    .fetch_one(conn)
    .await
}

/// Raises `ledger_verification` for the first bad event of a chain (once per bad event), for
/// the chain's tenant when it has one.
pub async fn raise_ledger_failure(
    conn: &mut PgConnection,
    chain_id: &str,
    event_id: i64,
    seq: i64,
    problem: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT aex_raise_alert(o.tenant_id, o.agent_id, 'ledger_verification', 'critical', \
           'chain:' || $1, 'event:' || $2, 0, \
           format('the ledger fails verification at event %s (chain %s, seq %s): %s', \
                  $2, $1, $3, $4), \
           jsonb_build_object('chain_id', $1, 'event_id', $2, 'seq', $3, 'problem', $4)) \
         FROM (SELECT (SELECT tenant_id FROM event_log WHERE chain_id = $1 LIMIT 1) AS tenant_id, \
                      (SELECT agent_id FROM event_log WHERE chain_id = $1 LIMIT 1) AS agent_id) o",
    )
    .bind(chain_id)
    .bind(event_id)
    .bind(seq)
    .bind(problem)
    .fetch_one(conn)
    .await
}
