//! Budget periods (SPEC §5.2): when an agent's daily or monthly period has ended, admission
//! starts the next one lazily, under the agent's row lock; an operator's change of the period
//! starts it the same way (`admin::agent_changes`).

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde_json::json;
use sqlx::PgConnection;

use super::GatewayError;
use crate::domain::BudgetPeriod;
use crate::ledger::fold::types;
use crate::ledger::{self, AppendedEvent, ChainId, NewEvent};
use crate::store::agents::{self, AgentRow};
use crate::store::holds;

/// Starts the agent's next budget period when the current one has ended (checked lazily, at
/// admission); the period's ledger event when it did.
pub(super) async fn roll(
    conn: &mut PgConnection,
    agent: &mut AgentRow,
) -> Result<Option<AppendedEvent>, GatewayError> {
    match ended(agent) {
        Some(start) => Ok(Some(
            restart_budget_period(conn, agent, agent.budget_period, start).await?,
        )),
        None => Ok(None),
    }
}

/// The start of the agent's next budget period when its current one has ended.
pub(super) fn ended(agent: &AgentRow) -> Option<DateTime<Utc>> {
    period_start(agent.budget_period, Utc::now()).filter(|start| agent.period_started_at < *start)
}

/// Starts the agent's budget period `period` at `start`, in the caller's transaction: `spent`
/// becomes what was committed since `start` (everything, for a lifetime budget), recorded with
/// its ledger event (returned). Used when a period ends and when an operator changes the period.
pub async fn restart_budget_period(
    conn: &mut PgConnection,
    agent: &mut AgentRow,
    period: BudgetPeriod,
    start: DateTime<Utc>,
) -> Result<AppendedEvent, sqlx::Error> {
    // Commits booked since the boundary but before this (lazy) reset belong to the new period.
    let lifetime = period == BudgetPeriod::Lifetime;
    let spent_after = holds::committed_since(conn, agent.id, start, lifetime).await?;
    agents::reset_period(conn, agent.id, start, spent_after).await?;
    let event = ledger::append(
        conn,
        NewEvent {
            chain: ChainId::Agent(agent.id),
            event_type: types::PERIOD_RESET,
            tenant_id: Some(agent.tenant_id),
            agent_id: Some(agent.id),
            execution_id: None,
            payload: json!({
                "period": period.as_str(),
                "spent_before_micro_usd": agent.spent_micro_usd,
                "spent_after_micro_usd": spent_after,
                "period_started_at": start.to_rfc3339(),
                // Holds made before the reset are not spent yet and stay held.
                "holds_tenant": false,
            }),
        },
    )
    .await?;
    agent.spent_micro_usd = spent_after;
    agent.period_started_at = start;
    Ok(event)
}

/// The start of the period containing `now`; `None` for lifetime budgets.
pub fn period_start(period: BudgetPeriod, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match period {
        BudgetPeriod::Lifetime => None,
        BudgetPeriod::Daily => Utc
            .with_ymd_and_hms(now.year(), now.month(), now.day(), 0, 0, 0)
            .single(),
        BudgetPeriod::Monthly => Utc
            .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
            .single(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_at_midnight_utc_and_the_first_of_the_month() {
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 17, 5, 0).unwrap();
        assert_eq!(period_start(BudgetPeriod::Lifetime, now), None);
        assert_eq!(
            period_start(BudgetPeriod::Daily, now),
            Some(Utc.with_ymd_and_hms(2026, 11, 27, 0, 0, 0).unwrap())
        );
        assert_eq!(
            period_start(BudgetPeriod::Monthly, now),
            Some(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap())
        );
    }
}
