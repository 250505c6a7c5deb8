//! The admin's writes to an agent: limits and policy, lifecycle state, budget. The caller holds
//! the agent's row lock (`agents::get_agent` with `Lock::ForUpdate`) and appends the ledger event
//! in the same transaction.

use sqlx::types::Json;
use sqlx::PgConnection;

use super::agents::{agent_columns, AgentRow};
use super::StoreError;
use crate::domain::{AgentId, AgentState, BudgetPeriod, TenantId};

/// The settings of an agent an administrator chooses.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub rpm_limit: Option<i32>,
    pub tpm_limit: Option<i64>,
    pub budget_period: BudgetPeriod,
    pub policy: serde_json::Value,
}

pub async fn update_settings(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    id: AgentId,
    s: &AgentSettings,
) -> Result<AgentRow, StoreError> {
    sqlx::query_as(concat!(
        "UPDATE agents SET rpm_limit = $3, tpm_limit = $4, budget_period = $5, policy = $6, \
         updated_at = now() WHERE tenant_id = $1 AND id = $2",
        " RETURNING ",
        agent_columns!()
    ))
    .bind(tenant_id)
    .bind(id)
    .bind(s.rpm_limit)
    .bind(s.tpm_limit)
    .bind(s.budget_period)
    .bind(Json(&s.policy))
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)
}

pub async fn set_state(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    id: AgentId,
    state: AgentState,
) -> Result<AgentRow, StoreError> {
    sqlx::query_as(concat!(
        "UPDATE agents SET state = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2",
        " RETURNING ",
        agent_columns!()
    ))
    .bind(tenant_id)
    .bind(id)
    .bind(state)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)
}

pub async fn set_budget(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    id: AgentId,
    budget_micro_usd: i64,
) -> Result<AgentRow, StoreError> {
    sqlx::query_as(concat!(
        "UPDATE agents SET budget_micro_usd = $3, updated_at = now() \
         WHERE tenant_id = $1 AND id = $2",
        " RETURNING ",
        agent_columns!()
    ))
    .bind(tenant_id)
    .bind(id)
    .bind(budget_micro_usd)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)
}
