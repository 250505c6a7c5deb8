//! Usage summaries: executions, spend and tokens over a time range, in total and per tenant,
//! agent and model.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::agents::find_agent;
use super::{acting_tenant, check_time, visible_tenant, AdminError};
use crate::auth::Principal;
use crate::domain::TenantId;
use crate::store::usage::{self as store, GroupBy, UsageRow};

/// Counts and sums over one group of executions.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageLine {
    /// The tenant id, agent id or model alias of the group (empty for the total).
    pub key: String,
    /// The agent's name, for lines per agent.
    pub name: Option<String>,
    pub executions: i64,
    pub committed: i64,
    pub denied: i64,
    pub failed: i64,
    pub spent_micro_usd: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

impl From<UsageRow> for UsageLine {
    fn from(r: UsageRow) -> Self {
        UsageLine {
            key: r.key,
            name: r.label,
            executions: r.executions,
            committed: r.committed,
            denied: r.denied,
            failed: r.failed,
            spent_micro_usd: r.spent_micro_usd,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
        }
    }
}

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
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    pub tenant_id: Option<TenantId>,
    pub agent: Option<String>,
    /// Default: 30 days before `until`.
    pub since: Option<DateTime<Utc>>,
    /// Default: now.
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
        lines.push(rows.into_iter().map(UsageLine::from).collect::<Vec<_>>());
    }
    let by_model = lines.pop().unwrap_or_default();
    let by_agent = lines.pop().unwrap_or_default();
    let by_tenant = lines.pop().unwrap_or_default();
    let total = lines
        .pop()
        .and_then(|mut t| t.pop())
        .unwrap_or_else(|| UsageRow::default().into());
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
