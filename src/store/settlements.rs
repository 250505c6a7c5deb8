//! The settlement of one attempt: one transaction of two pipelined round trips on the money
//! transactions' pool (`store::hot`). The first (BEGIN + `aex_settle_books`,
//! migrations/20261207900001_settle_hashed_in_replica.sql says what it writes, in which order)
//! moves the books and returns the agent chain's tail, read under the chain's lock; the caller
//! then links the ledger event to it (`ledger::link::settlement_event`: the Rust encoder) and the
//! second round trip inserts it and commits. Postgres runs no SHA-256 and no canonical encoder.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::hot::{pg_error, HotPool, BEGIN, COMMIT};
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
    /// knows (an object); the facts of the hold are added to it here.
    pub event_type: &'a str,
    pub payload: Value,
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

const SETTLE_BOOKS: &str = "SELECT estimate_micro_usd, holds_tenant, remaining_micro_usd, \
     tail_seq, tail_hash FROM aex_settle_books($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
     $13, $14, $15, $16, $17, $18, $19, $20)";
const INSERT_EVENT: &str = "INSERT INTO event_log (chain_id, seq, prev_hash, event_hash, \
     event_type, tenant_id, agent_id, execution_id, ts, payload, encoding) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1)";

/// The books after the settlement's writes, and the agent chain's tail read under the chain's
/// lock: what the settlement's event says and links to.
#[derive(Debug, Clone)]
pub struct SettledBooks {
    pub held: SettledHold,
    /// Whether the hold also counted against the tenant's budget.
    pub holds_tenant: bool,
    pub tail_seq: i64,
    pub tail_hash: String,
}

/// The settlement's event as the caller linked it to the tail.
#[derive(Debug, Clone)]
pub struct SettlementEvent {
    pub seq: i64,
    pub prev_hash: String,
    pub event_hash: String,
    /// The canonical payload text, as hashed.
    pub payload: String,
    pub ts: DateTime<Utc>,
}

/// Settles the attempt, its ledger event linked by `link` after the tail the transaction read;
/// `None` when its reservation was settled before (nothing is written).
pub async fn settle(
    pool: &HotPool,
    s: &Settlement<'_>,
    link: impl FnOnce(&Settlement<'_>, &SettledBooks) -> SettlementEvent,
) -> Result<Option<SettledHold>, sqlx::Error> {
    let started = std::time::Instant::now();
    let mut conn = pool.get().await?;
    let begin = conn.prepare(BEGIN).await?;
    let books = conn.prepare(SETTLE_BOOKS).await?;
    let commit = conn.prepare(COMMIT).await?;
    conn.begun();
    let client = conn.client()?;
    let charge = s.charge.as_ref();
    let result = s.result;
    let params: [&(dyn ToSql + Sync); 20] = [
        &s.execution_id,
        &s.attempt,
        &s.tenant_id.0,
        &s.agent_id.0,
        &s.execution_key,
        &s.chain_id,
        &s.chain_lock_key,
        &s.state,
        &charge.map(|c| c.actual_micro_usd),
        &charge.and_then(|c| c.prompt_tokens),
        &charge.and_then(|c| c.completion_tokens),
        &charge.map(|c| c.usage_source),
        &s.reason,
        &result.map(|r| i32::from(r.0)),
        &result.map(|r| r.1),
        &result.map(|r| r.2),
        &s.event_type,
        &s.model_alias,
        &charge.map(|c| c.latency_ms),
        &&s.rate_subjects[..],
    ];
    let (_, row) = tokio::try_join!(
        client.execute(&begin, &[]),
        client.query_opt(&books, &params)
    )
    .map_err(pg_error)?;
    let Some(row) = row else {
        client.execute(&commit, &[]).await.map_err(pg_error)?;
        conn.ended();
        return Ok(None);
    };
    let settled = SettledBooks {
        held: SettledHold {
            estimate_micro_usd: row.try_get(0).map_err(pg_error)?,
            remaining_micro_usd: row.try_get(2).map_err(pg_error)?,
        },
        holds_tenant: row.try_get(1).map_err(pg_error)?,
        tail_seq: row.try_get(3).map_err(pg_error)?,
        tail_hash: row.try_get(4).map_err(pg_error)?,
    };
    let event = link(s, &settled);
    let event_row: [&(dyn ToSql + Sync); 10] = [
        &s.chain_id,
        &event.seq,
        &event.prev_hash,
        &event.event_hash,
        &s.event_type,
        &s.tenant_id.0,
        &s.agent_id.0,
        &s.execution_key,
        &event.ts,
        &event.payload,
    ];
    conn.execute_and_commit(INSERT_EVENT, &event_row).await?;
    crate::metrics::observe_ledger_append(started.elapsed());
    Ok(Some(settled.held))
}

/// How attempt `attempt` of execution `execution_id` was settled — what its reservation charged
/// (`None` when it was released) — and its agent's budget left now (as
/// `AgentRow::remaining_micro_usd` counts it); `None` while it is still held.
pub async fn settled_as(
    pool: &sqlx::PgPool,
    execution_id: Uuid,
    attempt: i32,
) -> Result<Option<(Option<i64>, i64)>, sqlx::Error> {
    let row: Option<(Option<i64>, i64, i64, i64)> = sqlx::query_as(
        "SELECT r.actual_micro_usd, a.budget_micro_usd, a.spent_micro_usd, a.reserved_micro_usd \
         FROM reservations r JOIN agents a ON a.id = r.agent_id \
         WHERE r.execution_id = $1 AND r.attempt = $2 AND r.state <> 'RESERVED'",
    )
    .bind(execution_id)
    .bind(attempt)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(actual, budget, spent, reserved)| {
        (
            actual,
            budget.saturating_sub(spent).saturating_sub(reserved),
        )
    }))
}
