//! Creating, listing and reading agents.

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::AdminError;
use crate::auth::{Principal, TokenSigner};
use crate::domain::{AgentId, AgentState, BudgetPeriod, Scope, TenantId};
use crate::gateway::policy::Policy;
use crate::ledger::{self, NewEvent};
use crate::money::parse_usd;
use crate::store::agents::{self, AgentRow, NewAgent};
use crate::store::tokens::{self, TokenRow};

/// `POST /admin/agents`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgentRequest {
    /// Unique within the tenant.
    pub name: String,
    /// Budget in decimal USD, e.g. "5.00" (parsed exactly).
    pub budget_usd: String,
    /// Requests per minute.
    #[serde(default)]
    pub rpm: Option<i32>,
    /// Tokens per minute.
    #[serde(default)]
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
            state: a.state,
            budget_micro_usd: a.budget_micro_usd,
            spent_micro_usd: a.spent_micro_usd,
            reserved_micro_usd: a.reserved_micro_usd,
            budget_period: a.budget_period,
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

fn validate_name(name: &str) -> Result<(), AdminError> {
    let ok = !name.trim().is_empty()
        && name.len() <= 128
        && name == name.trim()
        && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(AdminError::invalid(
            "name",
            "must be 1 to 128 characters, without control characters or surrounding spaces",
        ))
    }
}

/// Creates an agent and its first token in one transaction, with ledger events for both.
pub async fn create_agent(
    pool: &sqlx::PgPool,
    signer: &TokenSigner,
    by: &Principal,
    tenant_id: TenantId,
    req: CreateAgentRequest,
) -> Result<CreatedAgentResponse, AdminError> {
    validate_name(&req.name)?;
    let budget =
        parse_usd(&req.budget_usd).map_err(|e| AdminError::invalid("budget_usd", e.to_string()))?;
    if req.rpm.is_some_and(|r| r <= 0) {
        return Err(AdminError::invalid("rpm", "must be a positive integer"));
    }
    if req.tpm.is_some_and(|t| t <= 0) {
        return Err(AdminError::invalid("tpm", "must be a positive integer"));
    }
    let scope = req.token_scope.unwrap_or(Scope::Execution);
    if !scope.is_agent_scope() {
        return Err(AdminError::invalid(
            "token_scope",
            "must be `execution` or `read-only`",
        ));
    }
    let state = req.state.unwrap_or(AgentState::Ready);
    if !matches!(state, AgentState::Ready | AgentState::Registered) {
        return Err(AdminError::invalid(
            "state",
            "a new agent is READY or REGISTERED",
        ));
    }
    let policy =
        serde_json::to_value(req.policy.unwrap_or_default()).map_err(anyhow::Error::from)?;
    let period = req.period.unwrap_or(BudgetPeriod::Lifetime);

    let mut tx = pool.begin().await?;
    // The tenant must exist (a stale operator request could name a removed one).
    crate::store::tenants::get_tenant(&mut tx, tenant_id)
        .await
        .map_err(|_| AdminError::NotFound("tenant"))?;
    let agent = agents::insert_agent(
        &mut tx,
        tenant_id,
        &NewAgent {
            id: AgentId(uuid::Uuid::now_v7()),
            name: req.name.clone(),
            budget_micro_usd: budget.0,
            budget_period: period.as_str().to_owned(),
            rpm_limit: req.rpm,
            tpm_limit: req.tpm,
            policy: policy.clone(),
            state: state.as_str().to_owned(),
        },
    )
    .await?;
    let ttl = req
        .token_ttl_hours
        .map(|h| chrono::Duration::hours(i64::from(h)));
    let issued = signer
        .issue(&agent.name, scope, Some(tenant_id), Some(agent.id), ttl)
        .map_err(|e| AdminError::Internal(e.into()))?;
    tokens::insert_token(
        &mut tx,
        &TokenRow {
            jti: issued.claims.jti,
            tenant_id: Some(tenant_id),
            agent_id: Some(agent.id),
            subject: agent.name.clone(),
            scope: scope.as_str().to_owned(),
            kid: issued.kid.clone(),
            description: Some("issued at agent creation".into()),
            issued_at: chrono::Utc::now(),
            expires_at: issued.expires_at(),
            revoked_at: None,
        },
    )
    .await?;
    ledger::append(
        &mut tx,
        NewEvent::for_agent(
            tenant_id,
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
        ),
    )
    .await?;
    ledger::append(
        &mut tx,
        NewEvent::for_agent(
            tenant_id,
            agent.id,
            "token.issued",
            None,
            json!({"by": by.subject, "jti": issued.claims.jti, "scope": scope.as_str(), "expires_at": issued.claims.exp}),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(CreatedAgentResponse {
        token_expires_at: issued.expires_at(),
        token_id: issued.claims.jti,
        token: issued.token,
        agent: agent.into(),
    })
}

/// Finds an agent by id or, failing that, by name, within the tenant.
pub async fn get_agent(
    pool: &sqlx::PgPool,
    tenant_id: TenantId,
    id_or_name: &str,
) -> Result<AgentResponse, AdminError> {
    let mut conn = pool.acquire().await?;
    let found = match id_or_name.parse::<AgentId>() {
        Ok(id) => agents::get_agent(&mut conn, tenant_id, id).await,
        Err(_) => agents::get_agent_by_name(&mut conn, tenant_id, id_or_name).await,
    };
    found.map(Into::into).map_err(|e| match e {
        crate::store::StoreError::NotFound => AdminError::NotFound("agent"),
        other => other.into(),
    })
}

pub async fn list_agents(
    pool: &sqlx::PgPool,
    tenant_id: TenantId,
    state: Option<AgentState>,
    after: Option<AgentId>,
    limit: Option<i64>,
) -> Result<Vec<AgentResponse>, AdminError> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AdminError::invalid("limit", "must be between 1 and 1000"));
    }
    let mut conn = pool.acquire().await?;
    let rows = agents::list_agents(
        &mut conn,
        tenant_id,
        state.map(AgentState::as_str),
        after,
        limit,
    )
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}
