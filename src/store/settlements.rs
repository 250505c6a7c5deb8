//! The settlement of one attempt in one round trip: the `aex_settle` function
//! (migrations/20261206200001_settle_always_ends.sql says what it writes, in which order). Called as
//! a single statement it is its own transaction, so a settlement needs no BEGIN and COMMIT of its
//! own.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{AgentId, TenantId};

/// Everything a settlement writes that the caller knows.
pub struct Settlement<'a> {
    pub execution_id: Uuid,
    pub attempt: i32,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub execution_key: &'a str,
    /// The agent's chain and its advisory-lock key (see `ledger::append`).
    pub chain_id: &'a str,
    pub chain_lock_key: i64,
    /// The execution's terminal state, and why when it is not a commit.
    pub state: &'a str,
    pub reason: Option<&'a str>,
    /// What to charge; `None` releases the hold.
    pub charge: Option<Charge<'a>>,
    /// The answer cached on the execution (status, body, whether it is an SSE transcript): for
    /// replay after a commit, for the requests that waited for the attempt after a release.
    pub result: Option<(u16, &'a [u8], bool)>,
    /// The ledger event's type (also the projected fact's kind) and the payload fields the caller
    /// knows; the function adds the facts of the hold.
    pub event_type: &'a str,
    pub payload: serde_json::Value,
    pub model_alias: &'a str,
    /// The rate-limit windows the estimate was charged to.
    pub rate_subjects: [String; 2],
}

/// What a commit charges and records.
pub struct Charge<'a> {
    pub actual_micro_usd: i64,
    /// `None` when the usage is not known (an ambiguous outcome charged at the hold).
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub usage_source: &'a str,
    pub latency_ms: i64,
}

/// What the settled hold was, and the agent's budget left after it.
#[derive(Debug, Clone, Copy)]
pub struct SettledHold {
    pub estimate_micro_usd: i64,
    pub remaining_micro_usd: i64,
}

/// Settles the attempt; `None` when its reservation was settled before (nothing is written).
pub async fn settle(
    conn: &mut PgConnection,
    s: &Settlement<'_>,
) -> Result<Option<SettledHold>, sqlx::Error> {
    let started = std::time::Instant::now();
    let result = s.result;
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT estimate_micro_usd, remaining_micro_usd FROM aex_settle(\
         $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
         $20, $21)",
    )
    .bind(s.execution_id)
    .bind(s.attempt)
    .bind(s.tenant_id)
    .bind(s.agent_id)
    .bind(s.execution_key)
    .bind(s.chain_id)
    .bind(s.chain_lock_key)
    .bind(s.state)
    .bind(s.charge.as_ref().map(|c| c.actual_micro_usd))
    .bind(s.charge.as_ref().and_then(|c| c.prompt_tokens))
    .bind(s.charge.as_ref().and_then(|c| c.completion_tokens))
    .bind(s.charge.as_ref().map(|c| c.usage_source))
    .bind(s.reason)
    .bind(result.map(|r| i32::from(r.0)))
    .bind(result.map(|r| r.1))
    .bind(result.map(|r| r.2))
    .bind(s.event_type)
    .bind(sqlx::types::Json(&s.payload))
    .bind(s.model_alias)
    .bind(s.charge.as_ref().map(|c| c.latency_ms))
    .bind(&s.rate_subjects[..])
    .fetch_optional(conn)
    .await?;
    if row.is_some() {
        crate::metrics::observe_ledger_append(started.elapsed());
    }
    Ok(
        row.map(|(estimate_micro_usd, remaining_micro_usd)| SettledHold {
            estimate_micro_usd,
            remaining_micro_usd,
        }),
    )
}
