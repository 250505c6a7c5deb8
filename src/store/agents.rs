//! Agents and their money counters.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgConnection;

use super::{violated_constraint, StoreError};
use crate::domain::{AgentId, AgentState, BudgetPeriod, TenantId};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AgentRow {
    pub id: AgentId,
    pub tenant_id: TenantId,
    pub name: String,
    pub budget_micro_usd: i64,
    pub spent_micro_usd: i64,
    pub reserved_micro_usd: i64,
    pub budget_period: BudgetPeriod,
    pub period_started_at: DateTime<Utc>,
    pub rpm_limit: Option<i32>,
    pub tpm_limit: Option<i64>,
    pub policy: Json<serde_json::Value>,
    pub state: AgentState,
    pub prompt_tokens_total: i64,
    pub completion_tokens_total: i64,
    pub requests_total: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl AgentRow {
    /// `budget - spent - reserved`; negative after a recorded overrun (saturating: `spent` may
    /// sit at a ceiling after absurd reported usage).
    pub fn remaining_micro_usd(&self) -> i64 {
        self.budget_micro_usd
            .saturating_sub(self.spent_micro_usd)
            .saturating_sub(self.reserved_micro_usd)
    }
}

/// The columns of [`AgentRow`], for `concat!` so that the SQL stays a static string.
macro_rules! agent_columns {
    () => {
        "id, tenant_id, name, budget_micro_usd, spent_micro_usd, reserved_micro_usd, \
         budget_period, period_started_at, rpm_limit, tpm_limit, policy, state, \
         prompt_tokens_total, completion_tokens_total, requests_total, created_at, updated_at"
    };
}
pub(crate) use agent_columns;

/// The fields of a new agent.
#[derive(Debug, Clone)]
pub struct NewAgent {
    pub id: AgentId,
    pub name: String,
    pub budget_micro_usd: i64,
    pub budget_period: BudgetPeriod,
    pub rpm_limit: Option<i32>,
    pub tpm_limit: Option<i64>,
    pub policy: serde_json::Value,
    pub state: AgentState,
}

pub async fn insert_agent(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    agent: &NewAgent,
) -> Result<AgentRow, StoreError> {
    sqlx::query_as(concat!(
        "INSERT INTO agents (id, tenant_id, name, budget_micro_usd, budget_period, rpm_limit, \
         tpm_limit, policy, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ",
        agent_columns!()
    ))
    .bind(agent.id)
    .bind(tenant_id)
    .bind(&agent.name)
    .bind(agent.budget_micro_usd)
    .bind(agent.budget_period)
    .bind(agent.rpm_limit)
    .bind(agent.tpm_limit)
    .bind(Json(&agent.policy))
    .bind(agent.state)
    .fetch_one(conn)
    .await
    .map_err(|e| match violated_constraint(&e) {
        Some("agents_tenant_name_key") => StoreError::Conflict("an agent with this name"),
        _ => StoreError::Db(e),
    })
}

/// Whether reading an agent row also locks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// A plain read.
    No,
    /// `FOR UPDATE`: locked for the rest of the transaction (after the tenant row, if that is
    /// locked).
    ForUpdate,
}

/// The agent `id` of the tenant, read plainly or locked (`lock`).
pub async fn get_agent(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    id: AgentId,
    lock: Lock,
) -> Result<AgentRow, StoreError> {
    let sql = match lock {
        Lock::No => concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE tenant_id = $1 AND id = $2"
        ),
        Lock::ForUpdate => concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
        ),
    };
    sqlx::query_as(sql)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or(StoreError::NotFound)
}

pub async fn get_agent_by_name(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    name: &str,
) -> Result<AgentRow, StoreError> {
    sqlx::query_as(concat!(
        "SELECT ",
        agent_columns!(),
        " FROM agents WHERE tenant_id = $1 AND name = $2"
    ))
    .bind(tenant_id)
    .bind(name)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)
}

/// Which of a tenant's agents to list.
#[derive(Debug, Clone, Default)]
pub struct AgentFilter<'a> {
    pub state: Option<&'a str>,
    /// Only names containing this text.
    pub name_contains: Option<&'a str>,
    /// Keyset paging: agents after this id.
    pub after: Option<AgentId>,
}

/// Lists a tenant's agents, oldest first, `limit` at a time after `after` (keyset paging).
pub async fn list_agents(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    filter: &AgentFilter<'_>,
    limit: i64,
) -> Result<Vec<AgentRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        agent_columns!(),
        " FROM agents WHERE tenant_id = $1 AND ($2::text IS NULL OR state = $2) \
          AND ($3::text IS NULL OR strpos(name, $3) > 0) \
          AND ($4::uuid IS NULL OR id > $4) ORDER BY id LIMIT $5"
    ))
    .bind(tenant_id)
    .bind(filter.state)
    .bind(filter.name_contains)
    .bind(filter.after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// An agent row and its chain's tail (seq, hash).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LockedAgent {
    #[sqlx(flatten)]
    pub agent: AgentRow,
    pub tail_seq: i64,
    pub tail_hash: String,
}

/// The statement of [`lock_agent_chain`] (also run on the money pool, `store::holds::lock_hot`).
pub(super) const LOCK_AGENT_CHAIN: &str = concat!(
    "SELECT ",
    agent_columns!(),
    ", tail_seq, tail_hash FROM aex_lock_agent_chain($1, $2, $3, $4)"
);

/// Locks the agent's row (`FOR UPDATE`), then its chain's advisory lock (`lock_key`), then reads
/// the chain's tail, in one round trip (`aex_lock_agent_chain`): what the hold's events link to.
pub async fn lock_agent_chain(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    id: AgentId,
    chain: (&str, i64),
) -> Result<LockedAgent, StoreError> {
    sqlx::query_as(LOCK_AGENT_CHAIN)
        .bind(tenant_id)
        .bind(id)
        .bind(chain.0)
        .bind(chain.1)
        .fetch_optional(conn)
        .await?
        .ok_or(StoreError::NotFound)
}

/// Starts a new budget period: `spent` becomes what was committed since its start.
pub async fn reset_period(
    conn: &mut PgConnection,
    id: AgentId,
    started_at: DateTime<Utc>,
    spent_after: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE agents SET spent_micro_usd = $3, period_started_at = $2, updated_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .bind(started_at)
    .bind(spent_after)
    .execute(conn)
    .await?;
    Ok(())
}

/// An agent's stored policy and its tenant's default policy, as stored (decoded by
/// `gateway::policy`); `None`: no such agent in the tenant.
pub async fn policies_of_agent(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    agent_id: AgentId,
) -> Result<Option<(Json<serde_json::Value>, Json<serde_json::Value>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.policy, t.default_policy FROM agents a JOIN tenants t ON t.id = a.tenant_id \
         WHERE a.tenant_id = $1 AND a.id = $2",
    )
    .bind(tenant_id)
    .bind(agent_id)
    .fetch_optional(conn)
    .await
}

/// The stored policy of every agent of the tenant that is not decommissioned, each with the
/// tenant's default policy.
pub async fn policies_of_tenant(
    conn: &mut PgConnection,
    tenant_id: TenantId,
) -> Result<Vec<(Json<serde_json::Value>, Json<serde_json::Value>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.policy, t.default_policy FROM agents a JOIN tenants t ON t.id = a.tenant_id \
         WHERE a.tenant_id = $1 AND a.state <> 'DECOMMISSIONED'",
    )
    .bind(tenant_id)
    .fetch_all(conn)
    .await
}
