//! Usage summaries: executions, spend and tokens over a time range, in total and per tenant,
//! agent and model.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{acting_tenant, check_time, find_agent, visible_tenant, AdminError};
use crate::auth::Principal;
use crate::domain::TenantId;
pub use crate::store::usage::UsageRow as UsageLine;
use crate::store::usage::{self as store, GroupBy};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageSummary {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// The tenant summarised; none: every tenant (operator).
    pub tenant_id: Option<TenantId>,
    pub total: UsageLine,
    pub by_tenant: Vec<UsageLine>,
    pub by_agent: Vec<UsageLine>,
    pub by_model: Vec<UsageLine>,
}

/// Filters of `GET /admin/usage`.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// An operator without it summarises every tenant.
    pub tenant_id: Option<TenantId>,
    /// Only this agent (id or name).
    pub agent: Option<String>,
    /// Start of the range (RFC 3339; default: 30 days before `until`).
    pub since: Option<DateTime<Utc>>,
    /// End of the range, exclusive (RFC 3339; default: now).
    pub until: Option<DateTime<Utc>>,
}

pub async fn summarise(
    pool: &sqlx::PgPool,
    by: &Principal,
    q: UsageQuery,
) -> Result<UsageSummary, AdminError> {
    check_time("since", q.since)?;
    check_time("until", q.until)?;
    let until = q.until.unwrap_or_else(Utc::now);
    let since = q.since.unwrap_or(until - Duration::days(30));
    let mut tenant_id = visible_tenant(by, q.tenant_id)?;
    let mut conn = pool.acquire().await?;
    let agent_id = match &q.agent {
        Some(a) => {
            let tenant = acting_tenant(by, q.tenant_id)?;
            tenant_id = Some(tenant);
            Some(find_agent(&mut conn, tenant, a, false).await?.id)
        }
        None => None,
    };
    let mut lines = Vec::with_capacity(4);
    for group in [
        GroupBy::Total,
        GroupBy::Tenant,
        GroupBy::Agent,
        GroupBy::Model,
    ] {
        let rows = store::summarise(&mut conn, tenant_id, agent_id, since, until, group).await?;
        lines.push(rows);
    }
    let by_model = lines.pop().unwrap_or_default();
    let by_agent = lines.pop().unwrap_or_default();
    let by_tenant = lines.pop().unwrap_or_default();
    let total = lines.pop().and_then(|mut t| t.pop()).unwrap_or_default();
    Ok(UsageSummary {
        since,
        until,
        tenant_id,
        total,
        by_tenant,
        by_agent,
        by_model,
    })
}
