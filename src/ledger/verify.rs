//! Streaming verification of every chain: recompute each hash, check that each event links to
//! the one before it and that sequence numbers have no gaps. Memory stays bounded: rows are
//! streamed in (chain, seq) order and only the previous event of the current chain is kept.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::encoding::{event_hash, EventHeader, GENESIS_HASH};

/// The first event that failed verification.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BadEvent {
    pub id: i64,
    pub chain_id: String,
    pub seq: i64,
    pub problem: String,
}

/// The outcome of a verification run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VerifyReport {
    pub ok: bool,
    pub chains: u64,
    pub events: u64,
    pub first_bad_event: Option<BadEvent>,
    pub elapsed_ms: u64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    pub(crate) id: i64,
    pub(crate) chain_id: String,
    pub(crate) seq: i64,
    pub(crate) prev_hash: String,
    pub(crate) event_hash: String,
    pub(crate) event_type: String,
    pub(crate) tenant_id: Option<Uuid>,
    pub(crate) agent_id: Option<Uuid>,
    pub(crate) execution_id: Option<String>,
    pub(crate) ts: DateTime<Utc>,
    pub(crate) payload: String,
}

/// Walks every chain and stops at the first bad event.
pub async fn verify_all(pool: &PgPool) -> Result<VerifyReport, sqlx::Error> {
    let started = std::time::Instant::now();
    let mut rows = sqlx::query_as::<_, EventRow>(
        "SELECT id, chain_id, seq, prev_hash, event_hash, event_type, tenant_id, agent_id, \
         execution_id, ts, payload FROM event_log ORDER BY chain_id, seq",
    )
    .fetch(pool);

    let mut chains = 0u64;
    let mut events = 0u64;
    let mut current_chain: Option<String> = None;
    let mut last_seq = 0i64;
    let mut last_hash = String::new();
    let mut first_bad = None;

    while let Some(row) = rows.try_next().await? {
        if current_chain.as_deref() != Some(row.chain_id.as_str()) {
            chains += 1;
            current_chain = Some(row.chain_id.clone());
            last_seq = 0;
            last_hash = GENESIS_HASH.to_owned();
        }
        events += 1;
        if let Some(problem) = check(&row, last_seq, &last_hash) {
            first_bad = Some(BadEvent {
                id: row.id,
                chain_id: row.chain_id,
                seq: row.seq,
                problem,
            });
            break;
        }
        last_seq = row.seq;
        last_hash = row.event_hash;
    }
    Ok(VerifyReport {
        ok: first_bad.is_none(),
        chains,
        events,
        first_bad_event: first_bad,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// What is wrong with `row` given the event before it in its chain, if anything.
pub(crate) fn check(row: &EventRow, last_seq: i64, last_hash: &str) -> Option<String> {
    if row.seq != last_seq + 1 {
        return Some(format!(
            "sequence gap: expected seq {} after {}, found {}",
            last_seq + 1,
            last_seq,
            row.seq
        ));
    }
    if row.prev_hash != last_hash {
        return Some("prev_hash does not match the hash of the previous event".to_owned());
    }
    let header = EventHeader {
        chain_id: &row.chain_id,
        seq: row.seq,
        prev_hash: &row.prev_hash,
        event_type: &row.event_type,
        tenant_id: row.tenant_id,
        agent_id: row.agent_id,
        execution_id: row.execution_id.as_deref(),
        ts: row.ts,
    };
    if event_hash(&header, &row.payload) != row.event_hash {
        return Some("event_hash does not match the event's contents (edited)".to_owned());
    }
    None
}
