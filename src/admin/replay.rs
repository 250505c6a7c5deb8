//! `GET /admin/replay` (the seed's route): verify the chains and rebuild every agent's and
//! tenant's books from the ledger, compared with the live counters; or one execution's event
//! timeline.

use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use super::audit::{self, BooksComparison, TenantBooksComparison};
use crate::domain::TenantId;
use crate::ledger::verify::{self, VerifyReport};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayReport {
    pub ok: bool,
    pub ledger: VerifyReport,
    pub agents: Vec<BooksComparison>,
    pub tenants: Vec<TenantBooksComparison>,
}

/// One ledger event as shown in a timeline.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct TimelineEvent {
    pub id: i64,
    pub chain_id: String,
    pub seq: i64,
    pub event_type: String,
    pub ts: chrono::DateTime<chrono::Utc>,
    pub event_hash: String,
    #[schema(value_type = Object)]
    #[sqlx(json)]
    pub payload: serde_json::Value,
}

/// Verifies and folds: for one tenant (what an admin sees) only its chains and agents, or the
/// whole ledger (an operator's view without a tenant).
pub async fn replay(
    pool: &PgPool,
    tenant: Option<TenantId>,
    keys: &std::collections::BTreeMap<String, crate::config::Secret>,
) -> Result<ReplayReport, sqlx::Error> {
    let ledger = match tenant {
        Some(tenant) => verify::verify_tenant(pool, keys, tenant).await?,
        None => verify::verify_all(pool, keys).await?,
    };
    let audit::FoldComparison {
        mut agents,
        mut tenants,
    } = audit::fold_mismatches(pool).await?;
    if let Some(tenant) = tenant {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM agents WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_all(pool)
            .await?;
        agents.retain(|a| ids.contains(&a.agent_id));
        tenants.retain(|t| t.tenant_id == tenant.0);
    }
    Ok(ReplayReport {
        ok: ledger.ok && agents.iter().all(|a| a.matches) && tenants.iter().all(|t| t.matches),
        ledger,
        agents,
        tenants,
    })
}

/// Every ledger event of an execution key within a tenant, in order.
pub async fn timeline(
    pool: &PgPool,
    tenant: TenantId,
    execution_id: &str,
) -> Result<Vec<TimelineEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, chain_id, seq, event_type, ts, event_hash, payload::json AS payload FROM event_log \
         WHERE tenant_id = $1 AND execution_id = $2 ORDER BY id",
    )
    .bind(tenant)
    .bind(execution_id)
    .fetch_all(pool)
    .await
}
