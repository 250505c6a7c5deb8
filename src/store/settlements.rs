//! The settlement of one attempt: one transaction of two pipelined round trips on the money
//! transactions' pool (`store::hot`). The first (BEGIN + `aex_settle_books`,
//! migrations/20261207900001_settle_hashed_in_replica.sql says what it writes, in which order)
//! moves the books and returns the agent chain's tail, read under the chain's lock; the caller
//! then links the ledger event to it (`ledger::link::settlement_event`: the Rust encoder) and the
//! second round trip inserts it and commits. Postgres runs no SHA-256 and no canonical encoder.
//!
//! When the caller can predict that tail ([`Settlement::predicted`]: the attempt's own
//! `execution.dispatched`, unless the agent's chain moved on since), the event is linked before
//! anything is sent and the settlement is ONE round trip — BEGIN, `aex_settle_linked`
//! (migrations/20261209000001_settle_linked.sql), COMMIT — whose function checks the prediction
//! under the chain's lock; a wrong one (SQLSTATE AX001) rolls back, having written nothing, and
//! the settlement goes the two-round-trip way.

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
    /// What the caller expects the transaction to read, when it can tell: the event is then
    /// linked beforehand and written in the same round trip.
    pub predicted: Option<Predicted>,
}

/// What a settlement expects to find under the chain's lock: its hold, and the chain's tail
/// (the hold's own `execution.dispatched` when nothing was appended to the chain since).
#[derive(Debug, Clone)]
pub struct Predicted {
    pub estimate_micro_usd: i64,
    pub holds_tenant: bool,
    pub tail_seq: i64,
    pub tail_hash: String,
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
const SETTLE_LINKED: &str = "SELECT estimate_micro_usd, holds_tenant, remaining_micro_usd \
     FROM aex_settle_linked($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
     $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)";
/// The SQLSTATE of `aex_settle_linked` when its prediction was wrong (nothing was written).
const STALE_PREDICTION: &str = "AX001";
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

/// Settles the attempt, its ledger event linked by `link` after the tail its transaction read
/// (or, first, after the predicted one); `None` when its reservation was settled before (nothing
/// is written).
pub async fn settle(
    pool: &HotPool,
    s: &Settlement<'_>,
    link: impl Fn(&Settlement<'_>, &SettledBooks) -> SettlementEvent,
) -> Result<Option<SettledHold>, sqlx::Error> {
    let started = std::time::Instant::now();
    if let Some(predicted) = &s.predicted {
        match settle_linked(pool, s, predicted, &link).await {
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(STALE_PREDICTION) => {
                crate::metrics::settlement_prediction(false);
            }
            settled => {
                if settled.is_ok() {
                    crate::metrics::settlement_prediction(true);
                    crate::metrics::observe_ledger_append(started.elapsed());
                }
                return settled;
            }
        }
    }
    let settled = settle_read_tail(pool, s, link).await?;
    crate::metrics::observe_ledger_append(started.elapsed());
    Ok(settled)
}

/// The statement's parameters that both ways share: the books' part of `aex_settle_books`.
fn books_params<'a>(
    s: &'a Settlement<'a>,
    charge: &'a ChargeParams<'a>,
) -> [&'a (dyn ToSql + Sync); 20] {
    [
        &s.execution_id,
        &s.attempt,
        &s.tenant_id.0,
        &s.agent_id.0,
        &s.execution_key,
        &s.chain_id,
        &s.chain_lock_key,
        &s.state,
        &charge.actual,
        &charge.prompt_tokens,
        &charge.completion_tokens,
        &charge.usage_source,
        &s.reason,
        &charge.result_status,
        &charge.result_body,
        &charge.result_is_stream,
        &s.event_type,
        &s.model_alias,
        &charge.latency_ms,
        &charge.rate_subjects,
    ]
}

/// The optional parts of a settlement, as statement parameters.
struct ChargeParams<'a> {
    actual: Option<i64>,
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    usage_source: Option<&'a str>,
    latency_ms: Option<i64>,
    result_status: Option<i32>,
    result_body: Option<&'a [u8]>,
    result_is_stream: Option<bool>,
    rate_subjects: &'a [String],
}

impl<'a> ChargeParams<'a> {
    fn of(s: &'a Settlement<'a>) -> Self {
        let charge = s.charge.as_ref();
        ChargeParams {
            actual: charge.map(|c| c.actual_micro_usd),
            prompt_tokens: charge.and_then(|c| c.prompt_tokens),
            completion_tokens: charge.and_then(|c| c.completion_tokens),
            usage_source: charge.map(|c| c.usage_source),
            latency_ms: charge.map(|c| c.latency_ms),
            result_status: s.result.map(|r| i32::from(r.0)),
            result_body: s.result.map(|r| r.1),
            result_is_stream: s.result.map(|r| r.2),
            rate_subjects: &s.rate_subjects[..],
        }
    }
}

/// The one-round-trip way: the event linked after `predicted`'s tail, checked and written by
/// `aex_settle_linked`, in a transaction of one round trip. The payload says the
/// budget is not overrun; when it is, the prediction fails and the other way writes it.
async fn settle_linked(
    pool: &HotPool,
    s: &Settlement<'_>,
    predicted: &Predicted,
    link: &impl Fn(&Settlement<'_>, &SettledBooks) -> SettlementEvent,
) -> Result<Option<SettledHold>, sqlx::Error> {
    let books = SettledBooks {
        held: SettledHold {
            estimate_micro_usd: predicted.estimate_micro_usd,
            remaining_micro_usd: 0,
        },
        holds_tenant: predicted.holds_tenant,
        tail_seq: predicted.tail_seq,
        tail_hash: predicted.tail_hash.clone(),
    };
    let event = link(s, &books);
    let budget_overrun = s.charge.as_ref().map(|_| false);
    let mut conn = pool.get().await?;
    let begin = conn.prepare(BEGIN).await?;
    let statement = conn.prepare(SETTLE_LINKED).await?;
    let commit = conn.prepare(COMMIT).await?;
    let charge = ChargeParams::of(s);
    let mut params: Vec<&(dyn ToSql + Sync)> = books_params(s, &charge).to_vec();
    params.extend_from_slice(&[
        &predicted.estimate_micro_usd,
        &predicted.holds_tenant,
        &budget_overrun,
        &event.seq,
        &event.prev_hash,
        &event.event_hash,
        &event.ts,
        &event.payload,
    ]);
    conn.begun();
    let client = conn.client()?;
    // One round trip. Not `try_join`: after a wrong prediction the COMMIT's answer (ROLLBACK) is
    // awaited too, so that the connection goes back to the pool rather than being closed.
    let (begun, row, committed) = tokio::join!(
        client.execute(&begin, &[]),
        client.query_opt(&statement, &params),
        client.execute(&commit, &[])
    );
    begun.map_err(pg_error)?;
    committed.map_err(pg_error)?;
    conn.ended();
    row.map_err(pg_error)?
        .map(|row| {
            Ok(SettledHold {
                estimate_micro_usd: row.try_get(0).map_err(pg_error)?,
                remaining_micro_usd: row.try_get(2).map_err(pg_error)?,
            })
        })
        .transpose()
}

/// The two-round-trip way: the books moved and the tail read, then the event linked to it,
/// inserted, and committed.
async fn settle_read_tail(
    pool: &HotPool,
    s: &Settlement<'_>,
    link: impl Fn(&Settlement<'_>, &SettledBooks) -> SettlementEvent,
) -> Result<Option<SettledHold>, sqlx::Error> {
    let mut conn = pool.get().await?;
    let begin = conn.prepare(BEGIN).await?;
    let books = conn.prepare(SETTLE_BOOKS).await?;
    let commit = conn.prepare(COMMIT).await?;
    conn.begun();
    let client = conn.client()?;
    let charge = ChargeParams::of(s);
    let params = books_params(s, &charge);
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
