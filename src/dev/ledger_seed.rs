//! `aex dev seed-ledger`: fills a (scratch) database with valid hash-chained events fast, to
//! measure verification at scale. Each event is a realistic `usage.commit` of its own agent chain,
//! encoded and hashed with the real canonical encoding and linked to the one before it; rows go
//! in with one multi-row `INSERT … SELECT FROM unnest(…)` per batch.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::ledger::encoding::{
    canonical_json, event_hash, EventHeader, ENCODING_VERSION, GENESIS_HASH,
};
use crate::store::chain_events::EventColumns;

/// Rows per INSERT: large enough to amortise the round trip, small enough to bound memory.
const BATCH: usize = 5_000;

#[derive(Debug, Serialize)]
pub struct SeedReport {
    pub events: u64,
    pub chains: u64,
    pub elapsed_ms: u64,
    pub events_per_second: u64,
}

/// One new chain: its ids and its head so far.
struct Chain {
    id: String,
    agent: Uuid,
    seq: i64,
    head: String,
}

/// Appends `events` events spread round-robin over `chains` new agent chains.
pub async fn seed(pool: &PgPool, events: u64, chains: u64) -> Result<SeedReport, sqlx::Error> {
    let started = Instant::now();
    let tenant = Uuid::new_v4();
    let mut all: Vec<Chain> = (0..chains.max(1))
        .map(|_| {
            let agent = Uuid::new_v4();
            Chain {
                id: format!("agent:{agent}"),
                agent,
                seq: 0,
                head: GENESIS_HASH.to_owned(),
            }
        })
        .collect();
    let count = all.len();
    // Microsecond timestamps, as Postgres stores them, one microsecond apart.
    let base = Utc::now().timestamp_micros() - i64::try_from(events).unwrap_or(0);
    let mut batch = EventColumns::default();
    for i in 0..events {
        let chain = &mut all[usize::try_from(i).unwrap_or(0) % count];
        chain.seq += 1;
        let micros = base + i64::try_from(i).unwrap_or(0);
        let ts = DateTime::from_timestamp_micros(micros).unwrap_or_else(Utc::now);
        let execution = format!("seed-{i}");
        let payload = canonical_json(&json!({
            "actual_micro_usd": 1_234 + i % 1_000,
            "attempt": 1,
            "budget_overrun": false,
            "completion_tokens": 120,
            "estimate_micro_usd": 4_096,
            "holds_tenant": false,
            "model": "gpt-4o-mini",
            "overrun_micro_usd": 0,
            "prompt_tokens": 850,
            "provider": "openai",
            "stream_end": null,
            "stream_events": null,
            "usage": "reported",
        }));
        let header = EventHeader {
            chain_id: &chain.id,
            seq: chain.seq,
            prev_hash: &chain.head,
            event_type: "usage.commit",
            tenant_id: Some(tenant),
            agent_id: Some(chain.agent),
            execution_id: Some(&execution),
            ts,
        };
        let hash = event_hash(&header, &payload);
        batch.chain_id.push(chain.id.clone());
        batch.seq.push(chain.seq);
        batch
            .prev_hash
            .push(std::mem::replace(&mut chain.head, hash.clone()));
        batch.event_hash.push(hash);
        batch.agent_id.push(chain.agent);
        batch.execution_id.push(execution);
        batch.ts.push(ts);
        batch.payload.push(payload);
        if batch.len() == BATCH {
            batch
                .insert(pool, "usage.commit", tenant, ENCODING_VERSION)
                .await?;
        }
    }
    if !batch.is_empty() {
        batch
            .insert(pool, "usage.commit", tenant, ENCODING_VERSION)
            .await?;
    }
    let elapsed = started.elapsed();
    Ok(SeedReport {
        events,
        chains: count as u64,
        elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        events_per_second: (events as f64 / elapsed.as_secs_f64().max(1e-9)) as u64,
    })
}
