//! `GET /admin/activity` (the seed's route): the newest facts of the `events` projection —
//! admissions refused, usage committed, reservations released — newest first.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{page_limit, visible_tenant, AdminError};
use crate::auth::Principal;
use crate::domain::{AgentId, TenantId};
use crate::store::projection::{self, FactRow};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActivityItem {
    pub id: i64,
    pub ts: DateTime<Utc>,
    pub tenant_id: Option<TenantId>,
    pub agent_id: Option<AgentId>,
    pub agent_name: Option<String>,
    pub execution_id: Option<String>,
    /// `usage.commit`, `reservation.released`, `admission.denied`, …
    pub kind: String,
    pub reason: Option<String>,
    pub model: Option<String>,
    pub cost_micro_usd: Option<i64>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub latency_ms: Option<i64>,
}

impl From<FactRow> for ActivityItem {
    fn from(f: FactRow) -> Self {
        ActivityItem {
            id: f.id,
            ts: f.ts,
            tenant_id: f.tenant_id,
            agent_id: f.agent_id,
            agent_name: f.agent_name,
            execution_id: f.execution_id,
            kind: f.kind,
            reason: f.reason,
            model: f.model_alias,
            cost_micro_usd: f.cost_micro_usd,
            prompt_tokens: f.prompt_tokens,
            completion_tokens: f.completion_tokens,
            latency_ms: f.latency_ms,
        }
    }
}

pub async fn recent(
    pool: &sqlx::PgPool,
    by: &Principal,
    tenant: Option<TenantId>,
    before_id: Option<i64>,
    limit: Option<i64>,
) -> Result<Vec<ActivityItem>, AdminError> {
    let limit = page_limit(limit, 50, 500)?;
    let tenant = visible_tenant(by, tenant)?;
    let mut conn = pool.acquire().await?;
    let rows = projection::list_recent(&mut conn, tenant, before_id, limit).await?;
    Ok(rows.into_iter().map(Into::into).collect())
}
