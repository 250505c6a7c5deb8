//! Creating, listing and reading agents (changes to an existing agent are in `agent_changes`).

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::tokens::{self, TokenSpec};
use super::{find_agent, page_limit, token_ttl, usd, validate_name, AdminError};
use crate::auth::{Principal, TokenSigner};
use crate::domain::{AgentId, AgentState, BudgetPeriod, Scope, TenantId};
use crate::gateway::policy::Policy;
use crate::ledger::{self, NewEvent};
use crate::store::agents::{self, AgentRow, NewAgent};

/// `POST /admin/agents`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgentRequest {
    /// Unique within the tenant.
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    /// Budget in decimal USD, e.g. "5.00" (parsed exactly).
    #[schema(pattern = r"^([0-9]+(\.[0-9]{0,6})?|\.[0-9]{1,6})$", example = "5.00")]
    pub budget_usd: String,
    /// Requests per minute.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub rpm: Option<i32>,
    /// Tokens per minute.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub tpm: Option<i64>,
    #[serde(default)]
    pub period: Option<BudgetPeriod>,
    #[serde(default)]
    pub policy: Option<Policy>,
    /// Scope of the token issued with the agent (`execution` or `read-only`).
    #[serde(default)]
    pub token_scope: Option<Scope>,
    /// Token lifetime in hours; none means it does not expire.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 87840)]
    pub token_ttl_hours: Option<u32>,
    /// Initial lifecycle state (`READY` or `REGISTERED`).
    #[serde(default)]
    pub state: Option<AgentState>,
}

/// An agent with its financials.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentResponse {
    pub id: AgentId,
    pub tenant_id: TenantId,
    pub name: String,
    pub state: String,
    pub budget_micro_usd: i64,
    pub spent_micro_usd: i64,
    pub reserved_micro_usd: i64,
    /// `budget - spent - reserved`; negative after a recorded overrun.
    pub remaining_micro_usd: i64,
    pub budget_period: String,
    pub rpm_limit: Option<i32>,
    pub tpm_limit: Option<i64>,
    #[schema(value_type = Object)]
    pub policy: serde_json::Value,
    pub prompt_tokens_total: i64,
    pub completion_tokens_total: i64,
    pub requests_total: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<AgentRow> for AgentResponse {
    fn from(a: AgentRow) -> Self {
        AgentResponse {
            remaining_micro_usd: a.remaining_micro_usd(),
            id: a.id,
            tenant_id: a.tenant_id,
            name: a.name,
            state: a.state.as_str().to_owned(),
            budget_micro_usd: a.budget_micro_usd,
            spent_micro_usd: a.spent_micro_usd,
            reserved_micro_usd: a.reserved_micro_usd,
            budget_period: a.budget_period.as_str().to_owned(),
            rpm_limit: a.rpm_limit,
            tpm_limit: a.tpm_limit,
            policy: a.policy.0,
            prompt_tokens_total: a.prompt_tokens_total,
            completion_tokens_total: a.completion_tokens_total,
            requests_total: a.requests_total,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

/// The agent and its token, shown once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedAgentResponse {
    pub agent: AgentResponse,
    pub token: String,
    pub token_id: uuid::Uuid,
    pub token_expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// What a valid `CreateAgentRequest` asks for, with the defaults filled in.
struct CheckedAgent {
    new: NewAgent,
    scope: Scope,
    ttl: Option<chrono::Duration>,
}

/// Checks a request field by field (nothing is read or written before it passes).
fn check_request(req: &CreateAgentRequest) -> Result<CheckedAgent, AdminError> {
    validate_name("name", &req.name)?;
    let budget = usd("budget_usd", &req.budget_usd)?;
    check_limits(req.rpm, req.tpm)?;
    let scope = req.token_scope.unwrap_or(Scope::Execution);
    if !scope.is_agent_scope() {
        return Err(AdminError::invalid(
            "token_scope",
            "must be `execution` or `read-only`",
        ));
    }
    let ttl = token_ttl("token_ttl_hours", req.token_ttl_hours)?;
    let state = req.state.unwrap_or(AgentState::Ready);
    if !matches!(state, AgentState::Ready | AgentState::Registered) {
        return Err(AdminError::invalid(
            "state",
            "a new agent is READY or REGISTERED",
        ));
    }
    let policy = serde_json::to_value(req.policy.clone().unwrap_or_default())
        .map_err(anyhow::Error::from)?;
    let new = NewAgent {
        id: AgentId(uuid::Uuid::now_v7()),
        name: req.name.clone(),
        budget_micro_usd: budget,
        budget_period: req.period.unwrap_or(BudgetPeriod::Lifetime),
        rpm_limit: req.rpm,
        tpm_limit: req.tpm,
        policy,
        state,
    };
    Ok(CheckedAgent { new, scope, ttl })
}

/// The `agent.created` event of a new agent.
fn created_event(
    by: &Principal,
    agent: &AgentRow,
    policy: &serde_json::Value,
) -> NewEvent<'static> {
    NewEvent::for_agent(
        agent.tenant_id,
        agent.id,
        "agent.created",
        None,
        json!({
            "by": by.subject,
            "name": agent.name,
            "budget_micro_usd": agent.budget_micro_usd,
            "budget_period": agent.budget_period,
            "rpm_limit": agent.rpm_limit,
            "tpm_limit": agent.tpm_limit,
            "policy": policy,
            "state": agent.state,
        }),
    )
}

/// Creates an agent and its first token in one transaction, with ledger events for both, unless
/// the tenant already has `max_agents` agents.
pub async fn create_agent(
    pool: &sqlx::PgPool,
    signer: &TokenSigner,
    by: &Principal,
    tenant_id: TenantId,
    max_agents: u32,
    req: CreateAgentRequest,
) -> Result<CreatedAgentResponse, AdminError> {
    let CheckedAgent { new, scope, ttl } = check_request(&req)?;
    let mut tx = pool.begin().await?;
    // The tenant must exist (an operator may name any id); its row lock makes the count and the
    // insert one step for concurrent creations. Decommissioned agents count: their lifetime
    // spend stays in the tenant's `spent`, whose sum reads every agent row of the tenant.
    let agents_now = crate::store::tenants::lock_agent_count(&mut tx, tenant_id)
        .await
        .map_err(AdminError::from_store("tenant"))?;
    if agents_now >= i64::from(max_agents) {
        return Err(AdminError::AgentLimitReached(max_agents));
    }
    let agent = agents::insert_agent(&mut tx, tenant_id, &new).await?;
    ledger::append(&mut tx, created_event(by, &agent, &new.policy)).await?;
    let issued = tokens::issue_in_tx(
        &mut tx,
        signer,
        by,
        TokenSpec {
            tenant_id: Some(tenant_id),
            agent: Some((agent.id, agent.name.clone())),
            scope,
            subject: agent.name.clone(),
            ttl,
            description: Some("issued at agent creation".into()),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(CreatedAgentResponse {
        token_expires_at: issued.expires_at,
        token_id: issued.token_id,
        token: issued.token,
        agent: agent.into(),
    })
}

/// Rejects non-positive rate limits.
pub(crate) fn check_limits(rpm: Option<i32>, tpm: Option<i64>) -> Result<(), AdminError> {
    if rpm.is_some_and(|r| r <= 0) {
        return Err(AdminError::invalid("rpm", "must be a positive integer"));
    }
    if tpm.is_some_and(|t| t <= 0) {
        return Err(AdminError::invalid("tpm", "must be a positive integer"));
    }
    Ok(())
}

/// Finds an agent by id or, failing that, by name, within the tenant.
pub async fn get_agent(
    pool: &sqlx::PgPool,
    tenant_id: TenantId,
    id_or_name: &str,
) -> Result<AgentResponse, AdminError> {
    let mut conn = pool.acquire().await?;
    Ok(find_agent(&mut conn, tenant_id, id_or_name, false)
        .await?
        .into())
}

/// Filters of `GET /admin/agents`.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AgentQuery {
    /// Tenant (operator tokens only; an admin token lists its own).
    pub tenant_id: Option<TenantId>,
    /// Only agents in this lifecycle state.
    pub state: Option<AgentState>,
    /// Only agents whose name contains this text.
    pub name_contains: Option<String>,
    /// Keyset paging: agents after this id (the last id of the previous page).
    pub after: Option<AgentId>,
    /// At most this many (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

pub async fn list_agents(
    pool: &sqlx::PgPool,
    tenant_id: TenantId,
    q: &AgentQuery,
) -> Result<Vec<AgentResponse>, AdminError> {
    let limit = page_limit(q.limit, 100, 1000)?;
    let mut conn = pool.acquire().await?;
    let filter = agents::AgentFilter {
        state: q.state.map(AgentState::as_str),
        name_contains: q.name_contains.as_deref(),
        after: q.after,
    };
    let rows = agents::list_agents(&mut conn, tenant_id, &filter, limit).await?;
    Ok(rows.into_iter().map(Into::into).collect())
}
