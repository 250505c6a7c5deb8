//! Executions: listed with filters (newest first), and one with its full ledger timeline.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::agents::find_agent;
use super::ledger::LedgerEvent;
use super::{check_time, page_limit, AdminError};
use crate::domain::{AgentId, ExecutionState, TenantId};
use crate::store::event_log::{self, EventFilter};
use crate::store::execution_search::{self as search, ExecutionFilter};
use crate::store::executions::ExecutionRow;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExecutionResponse {
    pub id: Uuid,
    /// The caller's Idempotency-Key / X-AEX-Execution-Id, or the minted one.
    pub execution_key: String,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub route: String,
    pub model_alias: Option<String>,
    pub state: String,
    pub attempt: i32,
    pub stream: bool,
    pub provider: Option<String>,
    pub estimate_micro_usd: i64,
    pub actual_micro_usd: Option<i64>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub usage_source: Option<String>,
    pub reason: Option<String>,
    pub response_status: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl From<ExecutionRow> for ExecutionResponse {
    fn from(e: ExecutionRow) -> Self {
        ExecutionResponse {
            id: e.id,
            execution_key: e.execution_key,
            tenant_id: e.tenant_id,
            agent_id: e.agent_id,
            route: e.route,
            model_alias: e.model_alias,
            state: e.state,
            attempt: e.attempt,
            stream: e.stream,
            provider: e.provider,
            estimate_micro_usd: e.estimate_micro_usd,
            actual_micro_usd: e.actual_micro_usd,
            prompt_tokens: e.prompt_tokens,
            completion_tokens: e.completion_tokens,
            usage_source: e.usage_source,
            reason: e.reason,
            response_status: e.response_status,
            created_at: e.created_at,
            dispatched_at: e.dispatched_at,
            completed_at: e.completed_at,
        }
    }
}

/// An execution and every ledger event recorded for it, in order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExecutionDetail {
    pub execution: ExecutionResponse,
    pub events: Vec<LedgerEvent>,
}

/// Filters of `GET /admin/executions`.
#[derive(Debug, Clone, Default)]
pub struct ExecutionQuery {
    pub agent: Option<String>,
    pub state: Option<ExecutionState>,
    pub model: Option<String>,
    pub route: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub before: Option<Uuid>,
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
    let rows = search::list_executions(&mut conn, tenant_id, &filter, limit).await?;
    Ok(rows.into_iter().map(Into::into).collect())
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
    Ok(ExecutionDetail {
        execution: execution.into(),
        events: events.into_iter().map(Into::into).collect(),
    })
}
