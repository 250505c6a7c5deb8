//! Verification of every chain: recompute each hash, check that each event links to the one
//! before it, that sequence numbers have no gaps, and that no chain fell below the head recorded
//! by the latest signed checkpoint. Memory stays bounded: rows are streamed in (chain, seq) order
//! and only the previous event of the current chain is kept (plus one head per chain from the
//! checkpoint).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::checkpoint::{self, CheckpointRow, Head};
use super::encoding::{event_hash, EventHeader, GENESIS_HASH};
use crate::config::Secret;

/// The first event that failed verification.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BadEvent {
    /// The event's id (for a truncated chain: its last remaining event; 0 if none is left).
    pub id: i64,
    pub chain_id: String,
    pub seq: i64,
    pub problem: String,
}

/// What was checked against the latest checkpoint.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CheckpointCheck {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub chains: usize,
    pub signature_ok: bool,
    pub problem: Option<String>,
}

/// The outcome of a verification run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VerifyReport {
    pub ok: bool,
    pub chains: u64,
    pub events: u64,
    pub first_bad_event: Option<BadEvent>,
    pub checkpoint: Option<CheckpointCheck>,
    pub elapsed_ms: u64,
    pub events_per_second: u64,
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

/// The columns of [`EventRow`], for `concat!` so that the SQL stays a static string.
macro_rules! select_events {
    () => {
        "SELECT id, chain_id, seq, prev_hash, event_hash, event_type, tenant_id, agent_id, \
         execution_id, ts, payload FROM event_log"
    };
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
    check_contents(row)
}

/// Whether the stored hash is the hash of the event's contents.
fn check_contents(row: &EventRow) -> Option<String> {
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

/// The walk's state: the chain being read and what the checkpoint says of the chains.
struct Walker {
    chains: u64,
    events: u64,
    chain: Option<String>,
    last_id: i64,
    last_seq: i64,
    last_hash: String,
    /// Checkpointed heads of chains not yet reached.
    pending: BTreeMap<String, Head>,
    /// The checkpointed head of the current chain.
    head: Option<Head>,
    checkpoint_id: i64,
    bad: Option<BadEvent>,
}

impl Walker {
    fn new(heads: BTreeMap<String, Head>, checkpoint_id: i64) -> Self {
        Walker {
            chains: 0,
            events: 0,
            chain: None,
            last_id: 0,
            last_seq: 0,
            last_hash: String::new(),
            pending: heads,
            head: None,
            checkpoint_id,
            bad: None,
        }
    }

    /// Chains the checkpoint knows that sort before `upto` were never seen: they vanished.
    fn missing_before(&mut self, upto: Option<&str>) {
        let gone: Vec<String> = self
            .pending
            .keys()
            .take_while(|c| upto.is_none_or(|u| c.as_str() < u))
            .cloned()
            .collect();
        for chain in gone {
            let head = self.pending.remove(&chain);
            if self.bad.is_none() {
                self.bad = Some(BadEvent {
                    id: 0,
                    chain_id: chain,
                    seq: 0,
                    problem: format!(
                        "the whole chain is missing; checkpoint {} recorded it at seq {}",
                        self.checkpoint_id,
                        head.map_or(0, |h| h.seq)
                    ),
                });
            }
        }
    }

    /// Ends the current chain: it must reach its checkpointed head.
    fn finish_chain(&mut self) {
        if let (Some(chain), Some(head)) = (self.chain.take(), self.head.take()) {
            if self.last_seq < head.seq && self.bad.is_none() {
                self.bad = Some(BadEvent {
                    id: self.last_id,
                    chain_id: chain,
                    seq: self.last_seq,
                    problem: format!(
                        "the chain ends at seq {} but checkpoint {} recorded seq {}: its tail was removed",
                        self.last_seq, self.checkpoint_id, head.seq
                    ),
                });
            }
        }
    }

    /// Starts a chain at `anchor` (genesis, or a checkpointed head for a partial walk).
    fn start_chain(&mut self, chain: &str, anchor: Option<&Head>) {
        self.finish_chain();
        self.missing_before(Some(chain));
        self.chains += 1;
        self.chain = Some(chain.to_owned());
        self.head = self.pending.remove(chain);
        match anchor {
            Some(h) => {
                self.last_seq = h.seq - 1;
                self.last_hash = String::new();
            }
            None => {
                self.last_seq = 0;
                self.last_hash = GENESIS_HASH.to_owned();
            }
        }
    }

    /// Checks one event; false once something is wrong.
    fn event(&mut self, row: EventRow, anchored_at: Option<&Head>) -> bool {
        self.events += 1;
        let problem = match anchored_at {
            // The first event of a partial walk is the checkpointed head itself: only its hash is
            // compared (its predecessor is not read).
            Some(h) if row.seq == h.seq && self.last_hash.is_empty() => {
                if row.event_hash != h.hash {
                    Some(format!("differs from checkpoint {}", self.checkpoint_id))
                } else {
                    check_contents(&row)
                }
            }
            _ => check(&row, self.last_seq, &self.last_hash),
        };
        let problem = problem.or_else(|| match &self.head {
            Some(h) if h.seq == row.seq && h.hash != row.event_hash => Some(format!(
                "differs from the hash recorded by checkpoint {}",
                self.checkpoint_id
            )),
            _ => None,
        });
        if let Some(problem) = problem {
            self.bad = Some(BadEvent {
                id: row.id,
                chain_id: row.chain_id,
                seq: row.seq,
                problem,
            });
            return false;
        }
        self.last_id = row.id;
        self.last_seq = row.seq;
        self.last_hash = row.event_hash;
        true
    }

    fn report(
        mut self,
        checkpoint: Option<CheckpointCheck>,
        started: std::time::Instant,
    ) -> VerifyReport {
        if self.bad.is_none() {
            self.finish_chain();
            self.missing_before(None);
        }
        let elapsed = started.elapsed();
        let checkpoint_ok = checkpoint.as_ref().is_none_or(|c| c.problem.is_none());
        VerifyReport {
            ok: self.bad.is_none() && checkpoint_ok,
            chains: self.chains,
            events: self.events,
            first_bad_event: self.bad,
            checkpoint,
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            events_per_second: (self.events as f64 / elapsed.as_secs_f64().max(1e-9)) as u64,
        }
    }
}

/// The latest checkpoint, its signature checked; heads are empty when there is none or it is bad.
async fn load_checkpoint(
    pool: &PgPool,
    keys: &BTreeMap<String, Secret>,
) -> Result<(BTreeMap<String, Head>, i64, Option<CheckpointCheck>), sqlx::Error> {
    let Some(row): Option<CheckpointRow> = checkpoint::latest(pool).await? else {
        return Ok((BTreeMap::new(), 0, None));
    };
    let checked = checkpoint::check_signature(keys, &row).and_then(|()| row.parsed_heads());
    let (heads, problem) = match checked {
        Ok(h) => (h, None),
        Err(p) => (BTreeMap::new(), Some(p)),
    };
    let check = CheckpointCheck {
        id: row.id,
        created_at: row.created_at,
        chains: heads.len(),
        signature_ok: problem.is_none(),
        problem,
    };
    Ok((heads, row.id, Some(check)))
}

/// Walks every event of every chain and stops at the first bad one.
pub async fn verify_all(
    pool: &PgPool,
    keys: &BTreeMap<String, Secret>,
) -> Result<VerifyReport, sqlx::Error> {
    let started = std::time::Instant::now();
    let (heads, checkpoint_id, check) = load_checkpoint(pool, keys).await?;
    let mut walker = Walker::new(heads, checkpoint_id);
    let mut rows =
        sqlx::query_as::<_, EventRow>(concat!(select_events!(), " ORDER BY chain_id, seq"))
            .fetch(pool);
    while let Some(row) = rows.try_next().await? {
        if walker.chain.as_deref() != Some(row.chain_id.as_str()) {
            walker.start_chain(&row.chain_id.clone(), None);
            if walker.bad.is_some() {
                break;
            }
        }
        if !walker.event(row, None) {
            break;
        }
    }
    Ok(walker.report(check, started))
}

/// Verifies only what was appended since the latest checkpoint: each chain from its checkpointed
/// head (whose hash must still be there), new chains from genesis. The startup gate uses this.
pub async fn verify_since_checkpoint(
    pool: &PgPool,
    keys: &BTreeMap<String, Secret>,
) -> Result<VerifyReport, sqlx::Error> {
    let started = std::time::Instant::now();
    let (heads, checkpoint_id, check) = load_checkpoint(pool, keys).await?;
    let mut conn = pool.acquire().await?;
    let chains: Vec<String> = checkpoint::current_heads(&mut conn)
        .await?
        .into_keys()
        .collect();
    drop(conn);
    let anchors = heads.clone();
    let mut walker = Walker::new(heads, checkpoint_id);
    'chains: for chain in chains {
        let anchor = anchors.get(&chain);
        walker.start_chain(&chain, anchor);
        if walker.bad.is_some() {
            break;
        }
        let mut rows = sqlx::query_as::<_, EventRow>(concat!(
            select_events!(),
            " WHERE chain_id = $1 AND seq >= $2 ORDER BY seq"
        ))
        .bind(&chain)
        .bind(anchor.map_or(1, |h| h.seq))
        .fetch(pool);
        while let Some(row) = rows.try_next().await? {
            if !walker.event(row, anchor) {
                break 'chains;
            }
        }
    }
    Ok(walker.report(check, started))
}
