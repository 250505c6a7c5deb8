//! Executions: listed with filters (newest first), and one with its full ledger timeline.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::ledger::LedgerEvent;
use super::{check_time, find_agent, page_limit, AdminError};
use crate::domain::{ExecutionState, TenantId};
use crate::store::event_log::{self, EventFilter};
use crate::store::execution_search::{self as search, ExecutionFilter};
pub use crate::store::executions::ExecutionRow as ExecutionResponse;

/// An execution and every ledger event recorded for it, in order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExecutionDetail {
    pub execution: ExecutionResponse,
    pub events: Vec<LedgerEvent>,
}

/// Filters of `GET /admin/executions`.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExecutionQuery {
    /// Tenant (operator tokens only; an admin token lists its own).
    pub tenant_id: Option<TenantId>,
    /// Only this agent's (id or name).
    pub agent: Option<String>,
    pub state: Option<ExecutionState>,
    /// Only this model alias.
    pub model: Option<String>,
    /// Only this route, e.g. `/v1/chat/completions`.
    pub route: Option<String>,
    /// Created at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Keyset paging: executions older than this id (the last id of the previous page).
    pub before: Option<Uuid>,
    /// At most this many (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

pub async fn list_executions(
    pool: &sqlx::PgPool,
    tenant_id: TenantId,
    q: ExecutionQuery,
) -> Result<Vec<ExecutionResponse>, AdminError> {
    let limit = page_limit(q.limit, 100, 1000)?;
    check_time("since", q.since)?;
    check_time("until", q.until)?;
    let mut conn = pool.acquire().await?;
    let agent_id = match &q.agent {
        Some(a) => Some(find_agent(&mut conn, tenant_id, a, false).await?.id),
        None => None,
    };
    let filter = ExecutionFilter {
        agent_id,
        state: q.state.map(|s| s.as_str().to_owned()),
        model_alias: q.model,
        route: q.route,
        since: q.since,
        until: q.until,
        before: q.before,
    };
    Ok(search::list_executions(&mut conn, tenant_id, &filter, limit).await?)
}

/// One execution by its id, or by its caller key when that names exactly one in the tenant.
pub async fn get_execution(
    pool: &sqlx::PgPool,
    tenant_id: TenantId,
    id_or_key: &str,
) -> Result<ExecutionDetail, AdminError> {
    let mut conn = pool.acquire().await?;
    let by_id = match id_or_key.parse::<Uuid>() {
        Ok(id) => crate::store::executions::get_execution(&mut conn, tenant_id, id).await?,
        Err(_) => None,
    };
    let execution = match by_id {
        Some(e) => e,
        None => {
            let mut found = search::find_by_key_in_tenant(&mut conn, tenant_id, id_or_key).await?;
            match found.len() {
                0 => return Err(AdminError::NotFound("execution")),
                1 => found.remove(0),
                _ => {
                    return Err(AdminError::Conflict(
                        "several agents used this execution key: ask by execution id".into(),
                    ))
                }
            }
        }
    };
    let filter = EventFilter {
        tenant_id: Some(tenant_id),
        agent_id: Some(execution.agent_id),
        execution_id: Some(execution.execution_key.clone()),
        ..EventFilter::default()
    };
    let events = event_log::list_events(&mut conn, &filter, 10_000).await?;
    Ok(ExecutionDetail { execution, events })
}
