//! Reading the ledger through the admin API: events in append order, filtered and keyset paged.
//! (Verification is `ledger::verify`, shared with the CLI and the startup gate.)

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::agents::find_agent;
use super::{acting_tenant, page_limit, visible_tenant, AdminError};
use crate::auth::Principal;
use crate::domain::{AgentId, TenantId};
use crate::store::event_log::{self, EventFilter, EventRow};

/// One ledger event, with its hash-chain links.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LedgerEvent {
    pub id: i64,
    pub chain_id: String,
    pub seq: i64,
    pub prev_hash: String,
    pub event_hash: String,
    pub event_type: String,
    pub tenant_id: Option<TenantId>,
    pub agent_id: Option<AgentId>,
    pub execution_id: Option<String>,
    pub ts: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

impl From<EventRow> for LedgerEvent {
    fn from(e: EventRow) -> Self {
        LedgerEvent {
            id: e.id,
            chain_id: e.chain_id,
            seq: e.seq,
            prev_hash: e.prev_hash,
            event_hash: e.event_hash,
            event_type: e.event_type,
            tenant_id: e.tenant_id,
            agent_id: e.agent_id,
            execution_id: e.execution_id,
            ts: e.ts,
            payload: e.payload.0,
        }
    }
}

/// Filters of `GET /admin/ledger/events`.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub tenant_id: Option<TenantId>,
    pub agent: Option<String>,
    pub execution_id: Option<String>,
    pub event_type: Option<String>,
    pub chain_id: Option<String>,
    pub after_id: Option<i64>,
    pub limit: Option<i64>,
}

/// An admin reads its tenant's events; an operator any tenant's, or all with the system chain.
pub async fn list_events(
    pool: &sqlx::PgPool,
    by: &Principal,
    q: EventQuery,
) -> Result<Vec<LedgerEvent>, AdminError> {
    let limit = page_limit(q.limit, 100, 1000)?;
    let mut conn = pool.acquire().await?;
    let mut filter = EventFilter {
        tenant_id: visible_tenant(by, q.tenant_id)?,
        agent_id: None,
        execution_id: q.execution_id,
        event_type: q.event_type,
        chain_id: q.chain_id,
        after_id: q.after_id,
    };
    if let Some(agent) = &q.agent {
        let tenant = acting_tenant(by, q.tenant_id)?;
        filter.agent_id = Some(find_agent(&mut conn, tenant, agent, false).await?.id);
        filter.tenant_id = Some(tenant);
    }
    let rows = event_log::list_events(&mut conn, &filter, limit).await?;
    Ok(rows.into_iter().map(Into::into).collect())
}
