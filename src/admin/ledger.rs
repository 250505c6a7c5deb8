//! Reading the ledger through the admin API: events in append order, filtered and keyset paged.
//! (Verification is `ledger::verify`, shared with the CLI and the startup gate.)

use super::{acting_tenant, find_agent, page_limit, require_operator, visible_tenant, AdminError};
use crate::auth::Principal;
use crate::domain::TenantId;
pub use crate::store::event_log::EventRow as LedgerEvent;
use crate::store::event_log::{self, EventFilter};

/// Filters of `GET /admin/ledger/events`.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// An operator without it reads every tenant's events and the system chain.
    pub tenant_id: Option<TenantId>,
    /// Only this agent's events (id or name).
    pub agent: Option<String>,
    /// Only this execution key's events.
    pub execution_id: Option<String>,
    /// Only events of this type, e.g. `usage.commit`.
    pub event_type: Option<String>,
    /// Only this chain, e.g. `agent:<id>`, `tenant:<id>`, `system`.
    pub chain_id: Option<String>,
    /// Keyset paging: events after this id (the last id of the previous page).
    pub after_id: Option<i64>,
    /// At most this many (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
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
    Ok(event_log::list_events(&mut conn, &filter, limit).await?)
}

/// A signed checkpoint of every chain's head (the heads themselves name every tenant's agents,
/// so only operators read or write checkpoints).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct CheckpointResponse {
    pub id: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The key that signed it.
    pub kid: String,
    pub chain_count: i32,
    pub event_count: i64,
    /// `{chain_id: {"seq", "hash"}}` as the exact text that was signed: archive the whole
    /// object elsewhere and check it later with `aex ledger verify --head FILE`.
    pub heads: String,
    /// HMAC-SHA256 (hex) of the heads with the key `kid`.
    pub signature: String,
}

/// The outcome of `POST /admin/ledger/checkpoints`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct CheckpointWritten {
    /// The new checkpoint; none when nothing was appended since the last one (or another
    /// replica was writing one at that moment).
    pub checkpoint_id: Option<i64>,
}

/// Writes a signed checkpoint of every chain's head now.
pub async fn write_checkpoint(
    pool: &sqlx::PgPool,
    auth: &crate::config::AuthSettings,
    replica_id: crate::domain::ReplicaId,
    by: &Principal,
) -> Result<CheckpointWritten, AdminError> {
    require_operator(by, "writing a ledger checkpoint")?;
    let id = crate::cluster::checkpointer::checkpoint_now(pool, auth, replica_id).await?;
    Ok(CheckpointWritten { checkpoint_id: id })
}

/// The latest checkpoint.
pub async fn latest_checkpoint(
    pool: &sqlx::PgPool,
    by: &Principal,
) -> Result<CheckpointResponse, AdminError> {
    require_operator(by, "reading ledger checkpoints")?;
    let row = crate::store::checkpoints::latest(pool)
        .await?
        .ok_or(AdminError::NotFound("checkpoint"))?;
    Ok(CheckpointResponse {
        id: row.id,
        created_at: row.created_at,
        kid: row.kid,
        chain_count: row.chain_count,
        event_count: row.event_count,
        heads: row.heads,
        signature: row.signature,
    })
}
