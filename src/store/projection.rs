//! The `events` projection: one row per fact that metrics and the dashboard count.

use sqlx::PgConnection;

use crate::domain::{AgentId, TenantId};

/// One projected fact.
#[derive(Debug, Clone, Default)]
pub struct Fact<'a> {
    pub tenant_id: Option<TenantId>,
    pub agent_id: Option<AgentId>,
    pub execution_id: Option<&'a str>,
    pub kind: &'a str,
    pub reason: Option<&'a str>,
    pub model_alias: Option<&'a str>,
    pub cost_micro_usd: Option<i64>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub latency_ms: Option<i64>,
}

pub async fn record(conn: &mut PgConnection, f: &Fact<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO events (tenant_id, agent_id, execution_id, kind, reason, model_alias, \
         cost_micro_usd, prompt_tokens, completion_tokens, latency_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(f.tenant_id)
    .bind(f.agent_id)
    .bind(f.execution_id)
    .bind(f.kind)
    .bind(f.reason)
    .bind(f.model_alias)
    .bind(f.cost_micro_usd)
    .bind(f.prompt_tokens)
    .bind(f.completion_tokens)
    .bind(f.latency_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// One projected fact as read back: an item of the activity feed.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema, sqlx::FromRow)]
#[schema(as = ActivityItem)]
pub struct FactRow {
    pub id: i64,
    pub ts: chrono::DateTime<chrono::Utc>,
    pub tenant_id: Option<TenantId>,
    pub agent_id: Option<AgentId>,
    pub agent_name: Option<String>,
    pub execution_id: Option<String>,
    /// `usage.commit`, `reservation.released`, `admission.denied`, …
    pub kind: String,
    pub reason: Option<String>,
    pub model_alias: Option<String>,
    pub cost_micro_usd: Option<i64>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub latency_ms: Option<i64>,
}

/// The newest facts of one tenant or (`None`) all, newest first, older than `before_id`.
pub async fn list_recent(
    conn: &mut PgConnection,
    tenant_id: Option<TenantId>,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<FactRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.id, e.ts, e.tenant_id, e.agent_id, a.name AS agent_name, e.execution_id, e.kind, \
         e.reason, e.model_alias, e.cost_micro_usd, e.prompt_tokens, e.completion_tokens, \
         e.latency_ms FROM events e LEFT JOIN agents a ON a.id = e.agent_id \
         WHERE ($1::uuid IS NULL OR e.tenant_id = $1) AND ($2::bigint IS NULL OR e.id < $2) \
         ORDER BY e.id DESC LIMIT $3",
    )
    .bind(tenant_id)
    .bind(before_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}
