//! `GET /admin/metrics`: the JSON summary behind the dashboard and the CLI — totals, per-agent
//! financials with burn rates and time to exhaustion, execution states, top models, the 24-hour
//! histogram, recent executions and the ledger's status.
//!
//! Every figure comes from an indexed query (see `store::stats`), all read in one snapshot; the
//! ledger's verification status is the last background verification, never a walk of the chains
//! per call.

use std::collections::BTreeMap;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::Serialize;
use sqlx::{Connection, PgPool};
use utoipa::ToSchema;

use super::agents::AgentResponse;
use crate::cluster::observed::{LedgerCheck, Observed};
use crate::domain::TenantId;
use crate::money::MicroUsdSum;
use crate::store::stats::{self, AgentSpend, BucketRow, FeedEvent, ModelUse, RecentExecution};

/// At most this many agents are listed (the biggest spenders); totals cover all of them.
const AGENT_LIMIT: i64 = 500;
const RECENT_EXECUTIONS: i64 = 25;
const RECENT_LEDGER_EVENTS: i64 = 15;
const TOP_MODELS: i64 = 5;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MetricsSummary {
    pub generated_at: DateTime<Utc>,
    /// The tenant summarised; `null` for an operator's view of every tenant.
    pub tenant_id: Option<TenantId>,
    pub totals: SummaryTotals,
    /// Admission refusals in the 24-hour window, by reason.
    pub denials: Vec<ReasonCount>,
    pub agents: Vec<AgentFinancials>,
    /// More agents exist than are listed (`totals.agents` counts them all).
    pub agents_truncated: bool,
    /// Executions created in the 24-hour window, by state.
    pub execution_states: BTreeMap<String, i64>,
    /// The most used models in the 24-hour window.
    pub top_models: Vec<ModelUse>,
    /// The 24-hour window: 24 buckets of one hour, oldest first; the last is the current
    /// (partial) hour.
    pub hourly: Vec<Bucket>,
    /// 60 buckets of one minute, oldest first; the last is the current (partial) minute.
    pub per_minute: Vec<Bucket>,
    /// The newest executions, newest first.
    pub recent_executions: Vec<RecentExecution>,
    pub ledger: LedgerStatus,
}

/// Sums of money over agents are exact integers that may exceed 64 bits (see
/// [`MicroUsdSum`]).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SummaryTotals {
    pub agents: i64,
    #[schema(value_type = i64)]
    pub budget_micro_usd: MicroUsdSum,
    #[schema(value_type = i64)]
    pub spent_micro_usd: MicroUsdSum,
    #[schema(value_type = i64)]
    pub reserved_micro_usd: MicroUsdSum,
    #[schema(value_type = i64)]
    pub remaining_micro_usd: MicroUsdSum,
    /// Governed requests admitted since the agents were created.
    pub requests_total: i64,
    /// Governed requests that ended in the 24-hour window (committed, released or denied):
    /// the sum of `hourly`.
    pub requests_24h: i64,
    pub denied_24h: i64,
    pub spent_24h_micro_usd: i64,
    /// Reservations held longer than `metrics.stale_reservation_seconds`.
    pub stale_reservations: i64,
    /// Agents (not decommissioned) with nothing left to spend.
    pub exhausted_agents: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReasonCount {
    pub reason: String,
    pub count: i64,
}

/// Spend per hour, extrapolated from what was committed over each window.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BurnRate {
    pub last_1m_micro_usd_per_hour: i64,
    pub last_15m_micro_usd_per_hour: i64,
    pub last_1h_micro_usd_per_hour: i64,
}

/// An agent, as `/admin/agents` shows it, with its burn rate.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentFinancials {
    #[serde(flatten)]
    pub agent: AgentResponse,
    pub burn_rate: BurnRate,
    /// At the 15-minute burn rate (the 1-hour one when nothing was spent in the last 15
    /// minutes): 0 when exhausted, `null` when the agent is not spending.
    pub seconds_to_exhaustion: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Bucket {
    pub start: DateTime<Utc>,
    pub requests: i64,
    pub denied: i64,
    pub spent_micro_usd: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LedgerStatus {
    /// The last verification of every chain by this server; `null` before the first, and
    /// always in one tenant's view (it covers other tenants' chains).
    pub last_verification: Option<LedgerCheck>,
    /// The newest ledger events, newest first.
    pub recent_events: Vec<FeedEvent>,
}

/// Builds the summary for one tenant (`Some`) or every tenant (`None`).
#[tracing::instrument(skip_all, fields(tenant = ?tenant))]
pub async fn summary(
    pool: &PgPool,
    observed: &Observed,
    stale_reservation_seconds: u64,
    tenant: Option<TenantId>,
) -> Result<MetricsSummary, sqlx::Error> {
    let now = Utc::now();
    let stale_after = i64::try_from(stale_reservation_seconds).unwrap_or(i64::MAX);
    let hour_start = now.duration_trunc(TimeDelta::hours(1)).unwrap_or(now);
    let minute_start = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
    // The 24-hour window: the current hour and the 23 before it, so that every figure below
    // is the sum of the histogram's buckets.
    let hourly_since = hour_start - TimeDelta::hours(23);
    let minute_since = minute_start - TimeDelta::minutes(59);

    let mut conn = pool.acquire().await?;
    // One snapshot, so that the totals, the agents and the histogram agree with each other.
    let mut tx = conn.begin().await?;
    stats::snapshot(&mut tx).await?;
    let totals = stats::totals(&mut tx, tenant).await?;
    let stale_reservations =
        stats::count_stale_reservations(&mut tx, tenant, now - TimeDelta::seconds(stale_after))
            .await?;
    let exhausted_agents = stats::count_exhausted_agents(&mut tx, tenant).await?;
    let denials = stats::count_denials(&mut tx, tenant, hourly_since).await?;
    let agents = stats::list_agent_spend(&mut tx, tenant, now, AGENT_LIMIT).await?;
    let states = stats::count_execution_states(&mut tx, tenant, hourly_since).await?;
    let top_models = stats::list_top_models(&mut tx, tenant, hourly_since, TOP_MODELS).await?;
    let hourly_rows = stats::list_buckets(&mut tx, tenant, hourly_since, 3600, 24).await?;
    let minute_rows = stats::list_buckets(&mut tx, tenant, minute_since, 60, 60).await?;
    let recent = stats::list_recent_executions(&mut tx, tenant, RECENT_EXECUTIONS).await?;
    let feed = stats::list_recent_ledger_events(&mut tx, tenant, RECENT_LEDGER_EVENTS).await?;
    tx.commit().await?;

    let hourly = fill_buckets(hourly_since, TimeDelta::hours(1), 24, &hourly_rows);
    let per_minute = fill_buckets(minute_since, TimeDelta::minutes(1), 60, &minute_rows);
    let (requests_24h, denied_24h, spent_24h) = hourly.iter().fold((0, 0, 0i64), |(r, d, s), b| {
        (
            r + b.requests,
            d + b.denied,
            s.saturating_add(b.spent_micro_usd),
        )
    });
    Ok(MetricsSummary {
        generated_at: now,
        tenant_id: tenant,
        totals: SummaryTotals {
            agents: totals.agents,
            budget_micro_usd: totals.budget_micro_usd,
            spent_micro_usd: totals.spent_micro_usd,
            reserved_micro_usd: totals.reserved_micro_usd,
            remaining_micro_usd: MicroUsdSum(
                totals.budget_micro_usd.0 - totals.spent_micro_usd.0 - totals.reserved_micro_usd.0,
            ),
            requests_total: totals.requests,
            requests_24h,
            denied_24h,
            spent_24h_micro_usd: spent_24h,
            stale_reservations,
            exhausted_agents,
        },
        denials: denials
            .into_iter()
            .map(|(reason, count)| ReasonCount { reason, count })
            .collect(),
        agents_truncated: totals.agents > i64::try_from(agents.len()).unwrap_or(i64::MAX),
        agents: agents.into_iter().map(financials).collect(),
        execution_states: states.into_iter().collect(),
        top_models,
        hourly,
        per_minute,
        recent_executions: recent,
        ledger: LedgerStatus {
            // The background check covers every chain: a tenant's view gets its own with
            // `/admin/ledger/verify`, never a word about other tenants' chains.
            last_verification: tenant.is_none().then(|| observed.ledger()).flatten(),
            recent_events: feed,
        },
    })
}

fn financials(a: AgentSpend) -> AgentFinancials {
    let burn_rate = BurnRate {
        last_1m_micro_usd_per_hour: a.spent_1m_micro_usd.saturating_mul(60),
        last_15m_micro_usd_per_hour: a.spent_15m_micro_usd.saturating_mul(4),
        last_1h_micro_usd_per_hour: a.spent_1h_micro_usd,
    };
    let per_hour = if burn_rate.last_15m_micro_usd_per_hour > 0 {
        burn_rate.last_15m_micro_usd_per_hour
    } else {
        burn_rate.last_1h_micro_usd_per_hour
    };
    let agent = AgentResponse::from(a.agent);
    AgentFinancials {
        seconds_to_exhaustion: seconds_to_exhaustion(agent.remaining_micro_usd, per_hour),
        agent,
        burn_rate,
    }
}

/// How long `remaining` lasts at `per_hour`: 0 when nothing is left, `None` when not spending.
fn seconds_to_exhaustion(remaining: i64, per_hour: i64) -> Option<i64> {
    if remaining <= 0 {
        return Some(0);
    }
    if per_hour <= 0 {
        return None;
    }
    let seconds = i128::from(remaining) * 3600 / i128::from(per_hour);
    Some(i64::try_from(seconds).unwrap_or(i64::MAX))
}

/// Every bucket of `[since, since + width × n)`, oldest first, zero where nothing happened.
fn fill_buckets(since: DateTime<Utc>, width: TimeDelta, n: i64, rows: &[BucketRow]) -> Vec<Bucket> {
    let mut buckets: Vec<Bucket> = (0..n)
        .map(|i| Bucket {
            start: since + width * i32::try_from(i).unwrap_or(0),
            requests: 0,
            denied: 0,
            spent_micro_usd: 0,
        })
        .collect();
    for row in rows {
        if let Some(b) = usize::try_from(row.bucket)
            .ok()
            .and_then(|i| buckets.get_mut(i))
        {
            b.requests = row.requests;
            b.denied = row.denied;
            b.spent_micro_usd = row.spent_micro_usd;
        }
    }
    buckets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AgentId, AgentState, BudgetPeriod};
    use crate::store::agents::AgentRow;

    #[test]
    fn time_to_exhaustion_is_remaining_over_the_burn_rate() {
        assert_eq!(seconds_to_exhaustion(1_000, 3_600), Some(1_000));
        assert_eq!(seconds_to_exhaustion(0, 3_600), Some(0));
        assert_eq!(seconds_to_exhaustion(-5, 0), Some(0));
        assert_eq!(seconds_to_exhaustion(1_000, 0), None);
        assert_eq!(seconds_to_exhaustion(i64::MAX, 1), Some(i64::MAX));
    }

    #[test]
    fn buckets_are_filled_in_order_and_rows_land_in_their_slot() {
        let since = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let rows = [
            BucketRow {
                bucket: 2,
                requests: 3,
                denied: 1,
                spent_micro_usd: 40,
            },
            BucketRow {
                bucket: 99,
                requests: 7,
                denied: 0,
                spent_micro_usd: 0,
            },
        ];
        let b = fill_buckets(since, TimeDelta::hours(1), 4, &rows);
        assert_eq!(b.len(), 4);
        assert_eq!(b[0].start, since);
        assert_eq!(b[3].start, since + TimeDelta::hours(3));
        assert_eq!(
            (b[2].requests, b[2].denied, b[2].spent_micro_usd),
            (3, 1, 40)
        );
        assert_eq!(b.iter().map(|x| x.requests).sum::<i64>(), 3);
    }

    #[test]
    fn burn_rate_extrapolates_each_window_to_an_hour() {
        let now = Utc::now();
        let row = AgentSpend {
            agent: AgentRow {
                id: AgentId(uuid::Uuid::nil()),
                tenant_id: TenantId(uuid::Uuid::nil()),
                name: "a".into(),
                budget_micro_usd: 10_000,
                spent_micro_usd: 1_000,
                reserved_micro_usd: 1_000,
                budget_period: BudgetPeriod::Lifetime,
                period_started_at: now,
                rpm_limit: None,
                tpm_limit: None,
                policy: sqlx::types::Json(serde_json::json!({})),
                state: AgentState::Ready,
                prompt_tokens_total: 0,
                completion_tokens_total: 0,
                requests_total: 3,
                created_at: now,
                updated_at: now,
            },
            spent_1m_micro_usd: 10,
            spent_15m_micro_usd: 100,
            spent_1h_micro_usd: 1_000,
        };
        let f = financials(row);
        assert_eq!(f.agent.remaining_micro_usd, 8_000);
        assert_eq!(f.agent.state, "READY");
        assert_eq!(f.burn_rate.last_1m_micro_usd_per_hour, 600);
        assert_eq!(f.burn_rate.last_15m_micro_usd_per_hour, 400);
        assert_eq!(f.burn_rate.last_1h_micro_usd_per_hour, 1_000);
        assert_eq!(f.seconds_to_exhaustion, Some(8_000 * 3600 / 400));
    }
}
