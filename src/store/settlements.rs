//! The settlement of one attempt, in one transaction of two statements: `aex_settle_open`
//! (migrations/20261207520001_ledger_hash_in_replica.sql; what it writes, in which order, is
//! aex_settle's of migrations/20261206200001) settles the hold and reads the agent chain's tail
//! under its lock, the caller hashes the event (`gateway::settle_write`), and `aex_settle_record`
//! appends it with its projected fact.

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
    /// knows; the facts of the hold are added once it is settled (`gateway::settle_write`).
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

/// What `aex_settle_open` found and did: the settled hold, the agent's budget left after it, and
/// the agent chain's tail, read under the chain's advisory lock, for the settlement's event.
#[derive(Debug, Clone)]
pub struct Opened {
    pub hold: SettledHold,
    pub holds_tenant: bool,
    pub tail_seq: i64,
    pub tail_hash: String,
}

/// The settlement's ledger event, hashed by the caller after [`Opened`]'s tail.
pub struct SettledEvent<'a> {
    pub seq: i64,
    pub prev_hash: &'a str,
    pub event_hash: &'a str,
    pub ts: chrono::DateTime<chrono::Utc>,
    pub payload: &'a str,
}

/// The first half of a settlement, in the caller's transaction: compare-and-set the reservation,
/// move the money, finish the execution, lock the chain and read its tail. `None` when the
/// reservation was settled before (nothing is written).
pub async fn open(
    conn: &mut PgConnection,
    s: &Settlement<'_>,
) -> Result<Option<Opened>, sqlx::Error> {
    let result = s.result;
    let row: Option<(i64, bool, i64, i64, String)> = sqlx::query_as(
        "SELECT estimate_micro_usd, holds_tenant, remaining_micro_usd, tail_seq, tail_hash \
         FROM aex_settle_open($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(s.execution_id)
    .bind(s.attempt)
    .bind(s.tenant_id)
    .bind(s.agent_id)
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
    .bind(&s.rate_subjects[..])
    .fetch_optional(conn)
    .await?;
    Ok(row.map(
        |(estimate_micro_usd, holds_tenant, remaining_micro_usd, tail_seq, tail_hash)| Opened {
            hold: SettledHold {
                estimate_micro_usd,
                remaining_micro_usd,
            },
            holds_tenant,
            tail_seq,
            tail_hash,
        },
    ))
}

/// The second half: the settlement's ledger event and its projected fact.
pub async fn record(
    conn: &mut PgConnection,
    s: &Settlement<'_>,
    e: &SettledEvent<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT aex_settle_record($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
         $15, $16)",
    )
    .bind(s.chain_id)
    .bind(e.seq)
    .bind(e.prev_hash)
    .bind(e.event_hash)
    .bind(e.ts)
    .bind(s.event_type)
    .bind(s.tenant_id)
    .bind(s.agent_id)
    .bind(s.execution_key)
    .bind(e.payload)
    .bind(s.reason)
    .bind(s.model_alias)
    .bind(s.charge.as_ref().map(|c| c.actual_micro_usd))
    .bind(s.charge.as_ref().and_then(|c| c.prompt_tokens))
    .bind(s.charge.as_ref().and_then(|c| c.completion_tokens))
    .bind(s.charge.as_ref().map(|c| c.latency_ms))
    .execute(conn)
    .await?;
    Ok(())
}

/// The whole settlement in one autocommitted statement, `aex_settle`, which hashes its event in
/// SQL; `None` when the reservation was settled before (nothing is written).
pub async fn settle_hashed_in_sql(
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
