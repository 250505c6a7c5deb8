//! Changing an agent: its limits, period and policy, and its lifecycle state (only the seed's
//! transitions). Decommissioning revokes every token of the agent in the same transaction; an
//! agent is never deleted, since its ledger chain must stay whole.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::agents::{check_limits, AgentResponse};
use super::{find_agent, nullable, patch_policy, validate_text, AdminError};
use crate::auth::{Principal, RevocationSet};
use crate::domain::{AgentState, BudgetPeriod, TenantId};
use crate::gateway::budget_period::{period_start, restart_budget_period};
use crate::ledger::{self, NewEvent};
use crate::store::agent_settings::{self, AgentSettings};
use crate::store::agents::AgentRow;
use crate::store::tokens;

/// `PATCH /admin/agents/{agent}`: fields left out are kept; `null` clears a limit.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgentRequest {
    /// Requests per minute; `null` removes the limit.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i32>, minimum = 1)]
    pub rpm: Option<Option<i32>>,
    /// Tokens per minute; `null` removes the limit.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub tpm: Option<Option<i64>>,
    #[serde(default)]
    pub period: Option<BudgetPeriod>,
    /// A merge patch of the policy (fields as in `Policy`): a field set to `null` returns to
    /// inheriting the tenant's default, a field left out is kept.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub policy: Option<serde_json::Map<String, serde_json::Value>>,
}

fn settings_of(a: &AgentRow) -> serde_json::Value {
    json!({
        "rpm_limit": a.rpm_limit,
        "tpm_limit": a.tpm_limit,
        "budget_period": a.budget_period,
        "policy": a.policy.0,
    })
}

#[tracing::instrument(skip_all, fields(%tenant_id, agent = id_or_name))]
pub async fn update_agent(
    pool: &sqlx::PgPool,
    by: &Principal,
    tenant_id: TenantId,
    id_or_name: &str,
    req: UpdateAgentRequest,
) -> Result<AgentResponse, AdminError> {
    check_limits(req.rpm.flatten(), req.tpm.flatten())?;
    let mut tx = pool.begin().await?;
    let before = find_agent(&mut tx, tenant_id, id_or_name, true).await?;
    let policy = match &req.policy {
        Some(patch) => patch_policy("policy", &before.policy.0, patch)?,
        None => before.policy.0.clone(),
    };
    let settings = AgentSettings {
        rpm_limit: req.rpm.unwrap_or(before.rpm_limit),
        tpm_limit: req.tpm.unwrap_or(before.tpm_limit),
        budget_period: req.period.unwrap_or(before.budget_period),
        policy,
    };
    let mut after = agent_settings::update_settings(&mut tx, tenant_id, before.id, &settings)
        .await
        .map_err(AdminError::from_store("agent"))?;
    let payload =
        json!({"by": by.subject, "before": settings_of(&before), "after": settings_of(&after)});
    ledger::append(
        &mut tx,
        NewEvent::for_agent(tenant_id, after.id, "agent.updated", None, payload),
    )
    .await?;
    if let Some(period) = req.period.filter(|p| *p != before.budget_period) {
        // `spent` counts the new period from now on: what was committed since its start (all of
        // it, for a lifetime budget), a money change recorded like a period's end.
        let start = period_start(period, Utc::now()).unwrap_or(after.period_started_at);
        restart_budget_period(&mut tx, &mut after, period, start).await?;
    }
    tx.commit().await?;
    Ok(after.into())
}

/// `POST /admin/agents/{agent}/state`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStateRequest {
    pub state: AgentState,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /admin/agents/{agent}/decommission`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecommissionRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

/// The agent after a lifecycle change, and the tokens the change revoked.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StateChangeResponse {
    pub agent: AgentResponse,
    pub revoked_tokens: Vec<Uuid>,
}

/// Moves an agent to `next` if the seed's transitions allow it.
#[tracing::instrument(skip_all, fields(%tenant_id, agent = id_or_name, next = next.as_str()))]
pub async fn change_state(
    pool: &sqlx::PgPool,
    revocations: &RevocationSet,
    by: &Principal,
    tenant_id: TenantId,
    id_or_name: &str,
    next: AgentState,
    reason: Option<String>,
) -> Result<StateChangeResponse, AdminError> {
    if let Some(r) = &reason {
        validate_text("reason", r)?;
    }
    let mut tx = pool.begin().await?;
    let before = find_agent(&mut tx, tenant_id, id_or_name, true).await?;
    let current = before.state;
    if !current.can_become(next) {
        let allowed: Vec<&str> = AgentState::ALL
            .into_iter()
            .filter(|s| current.can_become(*s))
            .map(AgentState::as_str)
            .collect();
        return Err(AdminError::Conflict(format!(
            "an agent cannot go from {} to {}; from {} it can go to: {}",
            current.as_str(),
            next.as_str(),
            current.as_str(),
            if allowed.is_empty() {
                "nothing".to_owned()
            } else {
                allowed.join(", ")
            }
        )));
    }
    let after = agent_settings::set_state(&mut tx, tenant_id, before.id, next)
        .await
        .map_err(AdminError::from_store("agent"))?;
    let decommissioned = next == AgentState::Decommissioned;
    let revoked = match decommissioned {
        true => tokens::revoke_agent_tokens(&mut tx, after.id, "agent decommissioned").await?,
        false => Vec::new(),
    };
    let event_type = match decommissioned {
        true => "agent.decommissioned",
        false => "agent.state_changed",
    };
    let payload = json!({
        "by": by.subject,
        "before": before.state,
        "after": after.state,
        "reason": reason,
        "revoked_tokens": revoked,
    });
    ledger::append(
        &mut tx,
        NewEvent::for_agent(tenant_id, after.id, event_type, None, payload),
    )
    .await?;
    tx.commit().await?;
    for jti in &revoked {
        revocations.insert(*jti);
    }
    Ok(StateChangeResponse {
        agent: after.into(),
        revoked_tokens: revoked,
    })
}
