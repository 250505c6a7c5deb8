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
