//! `GET /admin/replay` (the seed's route): verify the chains and rebuild every agent's and
//! tenant's books from the ledger, compared with the live counters; or one execution's event
//! timeline.

use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use super::audit::{self, BooksComparison, TenantBooksComparison};
use crate::domain::TenantId;
use crate::ledger::verify::{self, VerifyReport};
use crate::store::event_log;
pub use crate::store::event_log::TimelineEvent;
use crate::store::tenants;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayReport {
    pub ok: bool,
    pub ledger: VerifyReport,
    pub agents: Vec<BooksComparison>,
    pub tenants: Vec<TenantBooksComparison>,
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
        let ids = tenants::agent_ids(pool, tenant).await?;
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
    let mut conn = pool.acquire().await?;
    event_log::timeline(&mut conn, tenant, execution_id).await
}
