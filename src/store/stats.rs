//! Read-only aggregates for `/metrics`, `/admin/metrics` and the dashboard. Every query is
//! bounded by an index: a time range on `events (ts)` / `(tenant_id, ts)` or
//! `executions (created_at)` / `(tenant_id, created_at)`, the open-reservation partial index, a
//! `LIMIT` on an ordered index, or the agents table (one row per agent). `tenant: None` means
//! every tenant (an operator's view). Rows that `/admin/metrics` shows as they are serialise
//! directly. Money is summed in `numeric` and never cast back to `bigint` where it could
//! overflow: the totals stay exact ([`MicroUsdSum`]), the per-row sums of committed costs
//! saturate at `i64::MAX` (`LEAST(…)`) instead of failing the whole view.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use utoipa::ToSchema;
use uuid::Uuid;

use super::agents::{agent_columns, AgentRow};
use crate::domain::{AgentId, TenantId};
use crate::money::MicroUsdSum;

/// Appends ` AND <column> = $n` when the view is one tenant's.
fn only_tenant(q: &mut QueryBuilder<'_, Postgres>, column: &str, tenant: Option<TenantId>) {
    if let Some(t) = tenant {
        q.push(" AND ");
        q.push(column);
        q.push(" = ");
        q.push_bind(t);
    }
}

/// Spend and holds of one tenant, summed over its agents.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantBooks {
    pub tenant: String,
    pub spent_micro_usd: i64,
    pub reserved_micro_usd: i64,
}

/// Makes the caller's (fresh) transaction one read-only snapshot, so that the figures read in it
/// agree with each other.
pub async fn snapshot(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn list_tenant_books(conn: &mut PgConnection) -> Result<Vec<TenantBooks>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.name AS tenant, \
         LEAST(COALESCE(sum(a.spent_micro_usd), 0), 9223372036854775807)::bigint AS spent_micro_usd, \
         LEAST(COALESCE(sum(a.reserved_micro_usd), 0), 9223372036854775807)::bigint AS reserved_micro_usd \
         FROM tenants t LEFT JOIN agents a ON a.tenant_id = t.id GROUP BY t.name ORDER BY t.name",
    )
    .fetch_all(conn)
    .await
}

/// Spend and holds of one agent, named by tenant and agent name.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AgentBooks {
    pub tenant: String,
    pub agent: String,
    pub spent_micro_usd: i64,
    pub reserved_micro_usd: i64,
}

/// Every agent that is not decommissioned (only sampled when agent labels are enabled).
pub async fn list_agent_books(conn: &mut PgConnection) -> Result<Vec<AgentBooks>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.name AS tenant, a.name AS agent, a.spent_micro_usd, a.reserved_micro_usd \
         FROM agents a JOIN tenants t ON t.id = a.tenant_id \
         WHERE a.state <> 'DECOMMISSIONED' ORDER BY t.name, a.name",
    )
    .fetch_all(conn)
    .await
}

/// Reservations still held that were made before `before` (`settled_at IS NULL`: served by
/// `reservations_unsettled_idx`).
pub async fn count_stale_reservations(
    conn: &mut PgConnection,
    tenant: Option<TenantId>,
    before: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    let mut q = QueryBuilder::new(
        "SELECT count(*) FROM reservations WHERE settled_at IS NULL AND created_at < ",
    );
    q.push_bind(before);
    only_tenant(&mut q, "tenant_id", tenant);
    q.build_query_scalar().fetch_one(conn).await
}

/// Agents (not decommissioned) with nothing left to spend: `budget - spent - reserved <= 0`.
pub async fn count_exhausted_agents(
    conn: &mut PgConnection,
    tenant: Option<TenantId>,
) -> Result<i64, sqlx::Error> {
    let mut q = QueryBuilder::new(
        "SELECT count(*) FROM agents WHERE state <> 'DECOMMISSIONED' \
         AND budget_micro_usd - spent_micro_usd - reserved_micro_usd <= 0",
    );
    only_tenant(&mut q, "tenant_id", tenant);
    q.build_query_scalar().fetch_one(conn).await
}

/// The money totals over agents, summed in `numeric`: no tenant's budgets can overflow them.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct Totals {
    pub agents: i64,
    pub budget_micro_usd: MicroUsdSum,
    pub spent_micro_usd: MicroUsdSum,
    pub reserved_micro_usd: MicroUsdSum,
    pub requests: i64,
}

pub async fn totals(
    conn: &mut PgConnection,
    tenant: Option<TenantId>,
) -> Result<Totals, sqlx::Error> {
    let mut q = QueryBuilder::new(
        "SELECT count(*) AS agents, \
         COALESCE(sum(budget_micro_usd), 0)::text AS budget_micro_usd, \
         COALESCE(sum(spent_micro_usd), 0)::text AS spent_micro_usd, \
         COALESCE(sum(reserved_micro_usd), 0)::text AS reserved_micro_usd, \
         LEAST(COALESCE(sum(requests_total), 0), 9223372036854775807)::bigint AS requests \
         FROM agents WHERE true",
    );
    only_tenant(&mut q, "tenant_id", tenant);
    q.build_query_as().fetch_one(conn).await
}

/// An agent and what it committed in the last minute, 15 minutes and hour.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AgentSpend {
    #[sqlx(flatten)]
    pub agent: AgentRow,
    pub spent_1m_micro_usd: i64,
    pub spent_15m_micro_usd: i64,
    pub spent_1h_micro_usd: i64,
}

/// Agents with their recent spend, biggest spenders first, at most `limit`.
pub async fn list_agent_spend(
    conn: &mut PgConnection,
    tenant: Option<TenantId>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<AgentSpend>, sqlx::Error> {
    // The agent's columns are unambiguous: the joined sums are `agent_id`, `m1`, `m15`, `h1`.
    let mut q = QueryBuilder::new(concat!(
        "SELECT ",
        agent_columns!(),
        ", LEAST(COALESCE(b.m1, 0), 9223372036854775807)::bigint AS spent_1m_micro_usd, \
         LEAST(COALESCE(b.m15, 0), 9223372036854775807)::bigint AS spent_15m_micro_usd, \
         LEAST(COALESCE(b.h1, 0), 9223372036854775807)::bigint AS spent_1h_micro_usd \
         FROM agents a LEFT JOIN (SELECT agent_id, \
         sum(cost_micro_usd) FILTER (WHERE ts > "
    ));
    q.push_bind(now - chrono::Duration::minutes(1));
    q.push(") AS m1, sum(cost_micro_usd) FILTER (WHERE ts > ");
    q.push_bind(now - chrono::Duration::minutes(15));
    q.push(") AS m15, sum(cost_micro_usd) AS h1 FROM events WHERE kind = 'usage.commit' AND ts > ");
    q.push_bind(now - chrono::Duration::hours(1));
    q.push(" AND ts <= ");
    q.push_bind(now);
    only_tenant(&mut q, "tenant_id", tenant);
    q.push(" GROUP BY agent_id) b ON b.agent_id = a.id WHERE true");
    only_tenant(&mut q, "a.tenant_id", tenant);
    q.push(" ORDER BY a.spent_micro_usd DESC, a.name LIMIT ");
    q.push_bind(limit);
    q.build_query_as().fetch_all(conn).await
}

/// How many executions created since `since` are in each state.
pub async fn count_execution_states(
    conn: &mut PgConnection,
    tenant: Option<TenantId>,
    since: DateTime<Utc>,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let mut q = QueryBuilder::new("SELECT state, count(*) FROM executions WHERE created_at >= ");
    q.push_bind(since);
    only_tenant(&mut q, "tenant_id", tenant);
    q.push(" GROUP BY state ORDER BY state");
    q.build_query_as().fetch_all(conn).await
}

/// A model alias with its governed requests and spend.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, ToSchema)]
pub struct ModelUse {
    pub model: String,
    pub requests: i64,
    pub spent_micro_usd: i64,
}

/// The most used model aliases since `since`.
pub async fn list_top_models(
    conn: &mut PgConnection,
    tenant: Option<TenantId>,
    since: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<ModelUse>, sqlx::Error> {
    let mut q = QueryBuilder::new(
        "SELECT model_alias AS model, count(*) AS requests, \
         LEAST(COALESCE(sum(cost_micro_usd), 0), 9223372036854775807)::bigint AS spent_micro_usd \
         FROM events WHERE model_alias IS NOT NULL AND ts >= ",
    );
    q.push_bind(since);
    only_tenant(&mut q, "tenant_id", tenant);
    q.push(" GROUP BY model_alias ORDER BY requests DESC, model_alias LIMIT ");
    q.push_bind(limit);
    q.build_query_as().fetch_all(conn).await
}

/// Governed requests (projected facts) in one time bucket; empty buckets are not returned.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BucketRow {
    /// The bucket's index from `since`: 0 is `[since, since + width)`.
    pub bucket: i64,
    pub requests: i64,
    pub denied: i64,
    pub spent_micro_usd: i64,
}

/// Facts in `[since, since + width × buckets)`, grouped by bucket. Buckets are computed from the
/// epoch offset, not with `date_trunc`, so they do not depend on the session's time zone.
pub async fn list_buckets(
    conn: &mut PgConnection,
    tenant: Option<TenantId>,
    since: DateTime<Utc>,
    width_seconds: i64,
    buckets: i64,
) -> Result<Vec<BucketRow>, sqlx::Error> {
    let mut q = QueryBuilder::new("SELECT floor(extract(epoch FROM ts - ");
    q.push_bind(since);
    q.push(") / ");
    q.push_bind(width_seconds);
    q.push(
        ")::bigint AS bucket, count(*) AS requests, \
         count(*) FILTER (WHERE kind = 'admission.denied') AS denied, \
         LEAST(COALESCE(sum(cost_micro_usd), 0), 9223372036854775807)::bigint AS spent_micro_usd \
         FROM events WHERE ts >= ",
    );
    q.push_bind(since);
    q.push(" AND ts < ");
    q.push_bind(since + chrono::Duration::seconds(width_seconds * buckets));
    only_tenant(&mut q, "tenant_id", tenant);
    q.push(" GROUP BY 1 ORDER BY 1");
    q.build_query_as().fetch_all(conn).await
}

/// Admission refusals since `since`, by reason.
pub async fn count_denials(
    conn: &mut PgConnection,
    tenant: Option<TenantId>,
    since: DateTime<Utc>,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let mut q = QueryBuilder::new(
        "SELECT COALESCE(reason, 'unknown'), count(*) FROM events \
         WHERE kind = 'admission.denied' AND ts >= ",
    );
    q.push_bind(since);
    only_tenant(&mut q, "tenant_id", tenant);
    q.push(" GROUP BY 1 ORDER BY 2 DESC, 1");
    q.build_query_as().fetch_all(conn).await
}

/// An execution as the dashboard lists it.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, ToSchema)]
pub struct RecentExecution {
    /// The execution key (`Idempotency-Key`, `X-AEX-Execution-Id` or minted), as
    /// `/admin/replay?execution_id=` takes it.
    pub execution_id: String,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub agent: String,
    pub model: Option<String>,
    pub state: String,
    pub attempt: i32,
    /// What admission held for the execution.
    pub reserved_micro_usd: i64,
    /// What was charged (committed executions only).
    pub actual_micro_usd: Option<i64>,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// The newest executions.
pub async fn list_recent_executions(
    conn: &mut PgConnection,
    tenant: Option<TenantId>,
    limit: i64,
) -> Result<Vec<RecentExecution>, sqlx::Error> {
    let mut q = QueryBuilder::new(
        "SELECT e.execution_key AS execution_id, e.tenant_id, e.agent_id, a.name AS agent, \
         e.model_alias AS model, e.state, e.attempt, e.estimate_micro_usd AS reserved_micro_usd, \
         e.actual_micro_usd, \
         e.reason, e.created_at, e.completed_at \
         FROM executions e JOIN agents a ON a.id = e.agent_id WHERE true",
    );
    only_tenant(&mut q, "e.tenant_id", tenant);
    q.push(" ORDER BY e.created_at DESC LIMIT ");
    q.push_bind(limit);
    q.build_query_as().fetch_all(conn).await
}

/// A ledger event as the dashboard's feed shows it (the payload stays in the timeline).
#[derive(Debug, Clone, sqlx::FromRow, Serialize, ToSchema)]
pub struct FeedEvent {
    pub id: i64,
    pub event_type: String,
    pub tenant_id: Option<Uuid>,
    pub agent: Option<String>,
    pub execution_id: Option<String>,
    pub ts: DateTime<Utc>,
}

/// The newest ledger events.
pub async fn list_recent_ledger_events(
    conn: &mut PgConnection,
    tenant: Option<TenantId>,
    limit: i64,
) -> Result<Vec<FeedEvent>, sqlx::Error> {
    let mut q = QueryBuilder::new(
        "SELECT l.id, l.event_type, l.tenant_id, a.name AS agent, l.execution_id, l.ts \
         FROM event_log l LEFT JOIN agents a ON a.id = l.agent_id WHERE true",
    );
    only_tenant(&mut q, "l.tenant_id", tenant);
    q.push(" ORDER BY l.id DESC LIMIT ");
    q.push_bind(limit);
    q.build_query_as().fetch_all(conn).await
}
