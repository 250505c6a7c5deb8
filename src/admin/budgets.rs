//! An agent's budget: top up (add) or set, each a ledger event with the budget before and after.
//! Only the agent row is locked (a tenant's own budget is changed through the tenant).

use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::agents::AgentResponse;
use super::{find_agent, usd, AdminError};
use crate::auth::Principal;
use crate::domain::{AgentState, TenantId};
use crate::ledger::{self, NewEvent};
use crate::store::agent_settings;

/// `POST /admin/agents/{agent}/topup`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUpRequest {
    /// Decimal USD to add to the budget, e.g. "2.50".
    #[schema(pattern = r"^([0-9]+(\.[0-9]{0,6})?|\.[0-9]{1,6})$", example = "5.00")]
    pub amount_usd: String,
}

/// `PUT /admin/agents/{agent}/budget`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetBudgetRequest {
    /// The new budget in decimal USD, e.g. "10.00".
    #[schema(pattern = r"^([0-9]+(\.[0-9]{0,6})?|\.[0-9]{1,6})$", example = "5.00")]
    pub budget_usd: String,
}

/// How the budget changes.
#[derive(Debug, Clone, Copy)]
pub enum BudgetChange {
    TopUp(i64),
    Set(i64),
}

impl BudgetChange {
    pub fn top_up(req: &TopUpRequest) -> Result<Self, AdminError> {
        match usd("amount_usd", &req.amount_usd)? {
            0 => Err(AdminError::invalid("amount_usd", "must be more than zero")),
            n => Ok(BudgetChange::TopUp(n)),
        }
    }

    pub fn set(req: &SetBudgetRequest) -> Result<Self, AdminError> {
        usd("budget_usd", &req.budget_usd).map(BudgetChange::Set)
    }
}

#[tracing::instrument(skip_all, fields(%tenant_id, agent = id_or_name))]
pub async fn change_budget(
    pool: &sqlx::PgPool,
    by: &Principal,
    tenant_id: TenantId,
    id_or_name: &str,
    change: BudgetChange,
) -> Result<AgentResponse, AdminError> {
    let mut tx = pool.begin().await?;
    let before = find_agent(&mut tx, tenant_id, id_or_name, true).await?;
    if before.state == AgentState::Decommissioned {
        return Err(AdminError::Conflict(
            "the agent is decommissioned: its budget is closed".into(),
        ));
    }
    let (budget, event_type, amount) = match change {
        BudgetChange::TopUp(n) => {
            let sum = before.budget_micro_usd.checked_add(n).ok_or_else(|| {
                AdminError::invalid("amount_usd", "the budget would become too large")
            })?;
            (sum, "budget.topped_up", Some(n))
        }
        BudgetChange::Set(n) => (n, "budget.set", None),
    };
    let after = agent_settings::set_budget(&mut tx, tenant_id, before.id, budget)
        .await
        .map_err(AdminError::from_store("agent"))?;
    let payload = json!({
        "by": by.subject,
        "amount_micro_usd": amount,
        "before": before.budget_micro_usd,
        "after": after.budget_micro_usd,
    });
    ledger::append(
        &mut tx,
        NewEvent::for_agent(tenant_id, after.id, event_type, None, payload),
    )
    .await?;
    tx.commit().await?;
    Ok(after.into())
}
