//! The settlement of one attempt: one transaction of two pipelined round trips on the money
//! transactions' pool (`store::hot`). The first (BEGIN + `aex_settle_books`,
//! migrations/20261207900001_settle_hashed_in_replica.sql says what it writes, in which order)
//! moves the books and returns the agent chain's tail, read under the chain's lock; the ledger
//! event is then hashed here (`ledger::link`) and the second round trip inserts it and commits.
//! Postgres runs no SHA-256 and no canonical encoder for it.

use serde_json::{json, Map, Value};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::hot::{pg_error, HotPool, BEGIN, COMMIT};
use crate::domain::{AgentId, TenantId};
use crate::ledger::encoding::canonical_json;
use crate::ledger::link::{self, AgentChainFacts, ChainTail};

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

/// Settles the attempt; `None` when its reservation was settled before (nothing is written).
pub async fn settle(pool: &HotPool, s: &Settlement<'_>) -> Result<Option<SettledHold>, sqlx::Error> {
    let started = std::time::Instant::now();
    let mut conn = pool.get().await?;
    let begin = conn.prepare(BEGIN).await?;
    let books = conn.prepare(SETTLE_BOOKS).await?;
    let insert = conn.prepare(INSERT_EVENT).await?;
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
    let held = SettledHold {
        estimate_micro_usd: row.try_get(0).map_err(pg_error)?,
        remaining_micro_usd: row.try_get(2).map_err(pg_error)?,
    };
    let holds_tenant: bool = row.try_get(1).map_err(pg_error)?;
    let mut tail = ChainTail {
        seq: row.try_get(3).map_err(pg_error)?,
        hash: row.try_get(4).map_err(pg_error)?,
    };
    let facts = AgentChainFacts {
        chain_id: s.chain_id,
        tenant_id: s.tenant_id,
        agent_id: s.agent_id,
        execution_id: Some(s.execution_key),
        ts: link::now_micros(),
    };
    let payload = with_hold_facts(&s.payload, charge.map(|c| c.actual_micro_usd), held, holds_tenant);
    let event = tail.link(&facts, s.event_type, canonical_json(&payload));
    let event_row: [&(dyn ToSql + Sync); 10] = [
        &s.chain_id,
        &event.seq,
        &event.prev_hash,
        &event.event_hash,
        &s.event_type,
        &s.tenant_id.0,
        &s.agent_id.0,
        &s.execution_key,
        &facts.ts,
        &event.payload,
    ];
    tokio::try_join!(
        client.execute(&insert, &event_row),
        client.execute(&commit, &[])
    )
    .map_err(pg_error)?;
    conn.ended();
    crate::metrics::observe_ledger_append(started.elapsed());
    Ok(Some(held))
}

/// The event's payload: the caller's fields and the facts of the hold (which win), as
/// `aex_settle` merged them — the hold, whether it held the tenant and, for a charge, the overrun
/// over the hold and whether the agent's budget is now overrun.
fn with_hold_facts(
    payload: &Value,
    actual: Option<i64>,
    held: SettledHold,
    holds_tenant: bool,
) -> Value {
    let mut merged: Map<String, Value> = payload.as_object().cloned().unwrap_or_default();
    merged.insert("estimate_micro_usd".into(), json!(held.estimate_micro_usd));
    merged.insert("holds_tenant".into(), json!(holds_tenant));
    if let Some(actual) = actual {
        let overrun = actual.saturating_sub(held.estimate_micro_usd).max(0);
        merged.insert("overrun_micro_usd".into(), json!(overrun));
        merged.insert("budget_overrun".into(), json!(held.remaining_micro_usd < 0));
    }
    Value::Object(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_facts_of_the_hold_win_and_a_release_has_no_overrun() {
        let held = SettledHold {
            estimate_micro_usd: 10,
            remaining_micro_usd: -3,
        };
        let payload = json!({"attempt": 1, "holds_tenant": "caller", "usage": "reported"});
        assert_eq!(
            canonical_json(&with_hold_facts(&payload, Some(14), held, true)),
            r#"{"attempt":1,"budget_overrun":true,"estimate_micro_usd":10,"holds_tenant":true,"overrun_micro_usd":4,"usage":"reported"}"#
        );
        assert_eq!(
            canonical_json(&with_hold_facts(&payload, None, held, false)),
            r#"{"attempt":1,"estimate_micro_usd":10,"holds_tenant":false,"usage":"reported"}"#
        );
        let under = with_hold_facts(&payload, Some(4), held, false);
        assert_eq!(under["overrun_micro_usd"], 0);
    }
}
