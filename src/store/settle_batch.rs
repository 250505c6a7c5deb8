//! The settlements of one replica, batched (issue 17, item 1): the settlements queued while this
//! replica's settlement writers were busy (`store::group_commit`) go in one transaction of two
//! pipelined round trips, whatever their number, with one set-based statement per table:
//!
//!   1. BEGIN + `aex_settle_batch` (migrations/20261208000001_settle_batch.sql says what it
//!      writes and in which lock order): the books of every member, and the tails of their agent
//!      chains read under the chains' locks;
//!   2. one INSERT of every member's event (hashed here by the caller's `link`; several members
//!      of one chain link to each other, seq + 1 and the previous member's hash) + COMMIT.
//!
//! Any error the server answers rolls the whole batch back and settles each member alone with
//! the single path (`settlements::settle`), so a member that fails (a constraint, a deadlock,
//! anything) cannot lose its neighbours' settlements; its own error is its own answer. A member
//! whose reservation was settled before writes nothing and answers `None`, as alone. When the
//! connection fails instead, the batch may have committed: every member answers the I/O error
//! and its caller retries.

use std::collections::HashMap;

use serde_json::Value;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::hot::{pg_error, HotPool, BEGIN, COMMIT};
use super::settlements::{
    settle, Charge, Predicted, SettledBooks, SettledHold, Settlement, SettlementEvent,
};
use crate::domain::{AgentId, TenantId};

/// A settlement that owns its data, as a batch writer (a spawned task) needs it:
/// [`Settlement`] with owned fields.
#[derive(Debug, Clone)]
pub struct SettlementJob {
    pub execution_id: Uuid,
    pub attempt: i32,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub execution_key: String,
    pub chain_id: String,
    pub chain_lock_key: i64,
    pub state: String,
    pub reason: Option<String>,
    pub charge: Option<ChargeJob>,
    pub result: Option<(u16, Vec<u8>, bool)>,
    pub event_type: String,
    pub payload: Value,
    pub model_alias: String,
    pub rate_subjects: [String; 2],
    pub predicted: Option<Predicted>,
}

/// [`Charge`] with owned fields.
#[derive(Debug, Clone)]
pub struct ChargeJob {
    pub actual_micro_usd: i64,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub usage_source: String,
    pub latency_ms: i64,
}

impl SettlementJob {
    pub fn of(s: &Settlement<'_>) -> Self {
        SettlementJob {
            execution_id: s.execution_id,
            attempt: s.attempt,
            tenant_id: s.tenant_id,
            agent_id: s.agent_id,
            execution_key: s.execution_key.to_owned(),
            chain_id: s.chain_id.to_owned(),
            chain_lock_key: s.chain_lock_key,
            state: s.state.to_owned(),
            reason: s.reason.map(str::to_owned),
            charge: s.charge.as_ref().map(|c| ChargeJob {
                actual_micro_usd: c.actual_micro_usd,
                prompt_tokens: c.prompt_tokens,
                completion_tokens: c.completion_tokens,
                usage_source: c.usage_source.to_owned(),
                latency_ms: c.latency_ms,
            }),
            result: s
                .result
                .map(|(status, body, sse)| (status, body.to_vec(), sse)),
            event_type: s.event_type.to_owned(),
            payload: s.payload.clone(),
            model_alias: s.model_alias.to_owned(),
            rate_subjects: s.rate_subjects.clone(),
            predicted: s.predicted.clone(),
        }
    }

    /// The settlement, borrowed from the job (the payload is copied).
    pub fn settlement(&self) -> Settlement<'_> {
        Settlement {
            execution_id: self.execution_id,
            attempt: self.attempt,
            tenant_id: self.tenant_id,
            agent_id: self.agent_id,
            execution_key: &self.execution_key,
            chain_id: &self.chain_id,
            chain_lock_key: self.chain_lock_key,
            state: &self.state,
            reason: self.reason.as_deref(),
            charge: self.charge.as_ref().map(|c| Charge {
                actual_micro_usd: c.actual_micro_usd,
                prompt_tokens: c.prompt_tokens,
                completion_tokens: c.completion_tokens,
                usage_source: &c.usage_source,
                latency_ms: c.latency_ms,
            }),
            result: self
                .result
                .as_ref()
                .map(|(status, body, sse)| (*status, body.as_slice(), *sse)),
            event_type: &self.event_type,
            payload: self.payload.clone(),
            model_alias: &self.model_alias,
            rate_subjects: self.rate_subjects.clone(),
            predicted: self.predicted.clone(),
        }
    }
}

/// Links a settlement's event after the tail in its books (`ledger::link::settlement_event`).
pub type Link = fn(&Settlement<'_>, &SettledBooks) -> SettlementEvent;

/// What one member's settlement answers: `None` when its reservation was settled before.
pub type Settled = Result<Option<SettledHold>, sqlx::Error>;

const SETTLE_BATCH: &str = "SELECT member, estimate_micro_usd, holds_tenant, \
     remaining_micro_usd, tail_seq, tail_hash FROM aex_settle_batch($1, $2, $3, $4, $5, $6, $7, \
     $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)";
const INSERT_EVENTS: &str = "INSERT INTO event_log (chain_id, seq, prev_hash, event_hash, \
     event_type, tenant_id, agent_id, execution_id, ts, payload, encoding) \
     SELECT e.c, e.s, e.p, e.h, e.t, e.tn, e.a, e.x, e.ts, e.pl, 1 \
     FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::uuid[], \
     $7::uuid[], $8::text[], $9::timestamptz[], $10::text[]) \
     WITH ORDINALITY AS e(c, s, p, h, t, tn, a, x, ts, pl, n) ORDER BY e.n";

/// Settles `jobs` together (one result per job, in their order); see the module's doc.
pub async fn settle_batch(pool: &HotPool, jobs: Vec<SettlementJob>, link: Link) -> Vec<Settled> {
    crate::metrics::settlement_batch(jobs.len());
    if jobs.len() == 1 {
        // Alone, the single path is the same transaction with fewer statements.
        return vec![settle(pool, &jobs[0].settlement(), link).await];
    }
    let started = std::time::Instant::now();
    match write(pool, &jobs, link).await {
        Ok(settled) => {
            crate::metrics::observe_ledger_append(started.elapsed());
            settled.into_iter().map(Ok).collect()
        }
        Err(e @ sqlx::Error::Io(_)) => {
            // The connection failed, perhaps with COMMIT sent: the batch may have committed.
            // (Any other error, the server's or a bug of ours, wrote nothing: alone, below.)
            // Every caller retries its own settlement, as it retries a lone one's (the
            // compare-and-set makes that safe, and one that finds its hold settled reads back
            // what it charged, `gateway::settlement`).
            tracing::warn!(members = jobs.len(), error = %e,
                "settlement batch's connection failed; its members retry");
            let why = e.to_string();
            jobs.iter()
                .map(|_| Err(sqlx::Error::Io(std::io::Error::other(why.clone()))))
                .collect()
        }
        Err(e) => {
            tracing::warn!(members = jobs.len(), error = %e,
                "settlement batch rolled back; settling each member alone");
            alone(pool, &jobs, link).await
        }
    }
}

/// Each member on the single path, one after the other. When the database cannot be reached
/// (an error that is not the server's answer), the members left are not tried: each gets an
/// I/O error, which their callers retry as they retry a lone settlement's.
async fn alone(pool: &HotPool, jobs: &[SettlementJob], link: Link) -> Vec<Settled> {
    let mut settled = Vec::with_capacity(jobs.len());
    let mut unreachable: Option<String> = None;
    for job in jobs {
        if let Some(why) = &unreachable {
            settled.push(Err(sqlx::Error::Io(std::io::Error::other(why.clone()))));
            continue;
        }
        let result = settle(pool, &job.settlement(), link).await;
        if let Err(e) = &result {
            if !matches!(e, sqlx::Error::Database(_)) {
                unreachable = Some(e.to_string());
            }
        }
        settled.push(result);
    }
    settled
}

/// The batch's transaction. Rolled back on any error (or, when even that fails, the connection
/// is closed, which rolls it back on the server).
async fn write(
    pool: &HotPool,
    jobs: &[SettlementJob],
    link: Link,
) -> Result<Vec<Option<SettledHold>>, sqlx::Error> {
    let mut conn = pool.get().await?;
    let begin = conn.prepare(BEGIN).await?;
    let books = conn.prepare(SETTLE_BATCH).await?;
    let insert = conn.prepare(INSERT_EVENTS).await?;
    let commit = conn.prepare(COMMIT).await?;
    conn.begun();
    let result = async {
        let client = conn.client()?;
        let columns = Columns::of(jobs);
        let params = columns.params();
        let (_, rows) =
            tokio::try_join!(client.execute(&begin, &[]), client.query(&books, &params))
                .map_err(pg_error)?;
        let mut settled = vec![None; jobs.len()];
        let mut events = Events::default();
        let mut tails: HashMap<&str, (i64, String)> = HashMap::new();
        for row in rows {
            let member: i32 = row.try_get(0).map_err(pg_error)?;
            let job = usize::try_from(member - 1)
                .ok()
                .and_then(|i| jobs.get(i).map(|job| (i, job)));
            let Some((i, job)) = job else {
                return Err(sqlx::Error::Protocol(format!("no batch member {member}")));
            };
            let held = SettledHold {
                estimate_micro_usd: row.try_get(1).map_err(pg_error)?,
                remaining_micro_usd: row.try_get(3).map_err(pg_error)?,
            };
            // A chain's first member links to the tail read from the table; the next ones to
            // the member before them (rows come in member order).
            let (tail_seq, tail_hash) = match tails.remove(job.chain_id.as_str()) {
                Some(tail) => tail,
                None => (
                    row.try_get(4).map_err(pg_error)?,
                    row.try_get(5).map_err(pg_error)?,
                ),
            };
            let linked = SettledBooks {
                held,
                holds_tenant: row.try_get(2).map_err(pg_error)?,
                tail_seq,
                tail_hash,
            };
            let event = link(&job.settlement(), &linked);
            tails.insert(&job.chain_id, (event.seq, event.event_hash.clone()));
            events.push(job, event);
            settled[i] = Some(held);
        }
        let params = events.params();
        tokio::try_join!(
            client.execute(&insert, &params),
            client.execute(&commit, &[])
        )
        .map_err(pg_error)?;
        Ok(settled)
    }
    .await;
    match result {
        Ok(settled) => {
            conn.ended();
            Ok(settled)
        }
        Err(e) => {
            // If the rollback fails too, dropping the connection mid-transaction closes it.
            let _ = conn.rollback().await;
            Err(e)
        }
    }
}

/// The members as the batch function's arrays, one element per member.
struct Columns<'a> {
    execution_ids: Vec<Uuid>,
    attempts: Vec<i32>,
    tenant_ids: Vec<Uuid>,
    agent_ids: Vec<Uuid>,
    execution_keys: Vec<&'a str>,
    chain_ids: Vec<&'a str>,
    lock_keys: Vec<i64>,
    states: Vec<&'a str>,
    actuals: Vec<Option<i64>>,
    prompt_tokens: Vec<Option<i64>>,
    completion_tokens: Vec<Option<i64>>,
    usage_sources: Vec<Option<&'a str>>,
    reasons: Vec<Option<&'a str>>,
    result_statuses: Vec<Option<i32>>,
    result_bodies: Vec<Option<&'a [u8]>>,
    result_is_streams: Vec<Option<bool>>,
    event_types: Vec<&'a str>,
    model_aliases: Vec<&'a str>,
    latency_ms: Vec<Option<i64>>,
    agent_subjects: Vec<&'a str>,
    tenant_subjects: Vec<&'a str>,
}

impl<'a> Columns<'a> {
    fn of(jobs: &'a [SettlementJob]) -> Self {
        let charge = |f: fn(&ChargeJob) -> Option<i64>| -> Vec<Option<i64>> {
            jobs.iter().map(|j| j.charge.as_ref().and_then(f)).collect()
        };
        let result = jobs.iter().map(|j| j.result.as_ref());
        Columns {
            execution_ids: jobs.iter().map(|j| j.execution_id).collect(),
            attempts: jobs.iter().map(|j| j.attempt).collect(),
            tenant_ids: jobs.iter().map(|j| j.tenant_id.0).collect(),
            agent_ids: jobs.iter().map(|j| j.agent_id.0).collect(),
            execution_keys: jobs.iter().map(|j| j.execution_key.as_str()).collect(),
            chain_ids: jobs.iter().map(|j| j.chain_id.as_str()).collect(),
            lock_keys: jobs.iter().map(|j| j.chain_lock_key).collect(),
            states: jobs.iter().map(|j| j.state.as_str()).collect(),
            actuals: charge(|c| Some(c.actual_micro_usd)),
            prompt_tokens: charge(|c| c.prompt_tokens),
            completion_tokens: charge(|c| c.completion_tokens),
            usage_sources: jobs
                .iter()
                .map(|j| j.charge.as_ref().map(|c| c.usage_source.as_str()))
                .collect(),
            reasons: jobs.iter().map(|j| j.reason.as_deref()).collect(),
            result_statuses: result.clone().map(|r| r.map(|r| i32::from(r.0))).collect(),
            result_bodies: result.clone().map(|r| r.map(|r| r.1.as_slice())).collect(),
            result_is_streams: result.map(|r| r.map(|r| r.2)).collect(),
            event_types: jobs.iter().map(|j| j.event_type.as_str()).collect(),
            model_aliases: jobs.iter().map(|j| j.model_alias.as_str()).collect(),
            latency_ms: charge(|c| Some(c.latency_ms)),
            agent_subjects: jobs.iter().map(|j| j.rate_subjects[0].as_str()).collect(),
            tenant_subjects: jobs.iter().map(|j| j.rate_subjects[1].as_str()).collect(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 21] {
        [
            &self.execution_ids,
            &self.attempts,
            &self.tenant_ids,
            &self.agent_ids,
            &self.execution_keys,
            &self.chain_ids,
            &self.lock_keys,
            &self.states,
            &self.actuals,
            &self.prompt_tokens,
            &self.completion_tokens,
            &self.usage_sources,
            &self.reasons,
            &self.result_statuses,
            &self.result_bodies,
            &self.result_is_streams,
            &self.event_types,
            &self.model_aliases,
            &self.latency_ms,
            &self.agent_subjects,
            &self.tenant_subjects,
        ]
    }
}

/// The members' events as the INSERT's arrays.
#[derive(Default)]
struct Events<'a> {
    chain_ids: Vec<&'a str>,
    seqs: Vec<i64>,
    prev_hashes: Vec<String>,
    event_hashes: Vec<String>,
    event_types: Vec<&'a str>,
    tenant_ids: Vec<Uuid>,
    agent_ids: Vec<Uuid>,
    execution_ids: Vec<&'a str>,
    ts: Vec<chrono::DateTime<chrono::Utc>>,
    payloads: Vec<String>,
}

impl<'a> Events<'a> {
    fn push(&mut self, job: &'a SettlementJob, event: SettlementEvent) {
        self.chain_ids.push(&job.chain_id);
        self.seqs.push(event.seq);
        self.prev_hashes.push(event.prev_hash);
        self.event_hashes.push(event.event_hash);
        self.event_types.push(&job.event_type);
        self.tenant_ids.push(job.tenant_id.0);
        self.agent_ids.push(job.agent_id.0);
        self.execution_ids.push(&job.execution_key);
        self.ts.push(event.ts);
        self.payloads.push(event.payload);
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 10] {
        [
            &self.chain_ids,
            &self.seqs,
            &self.prev_hashes,
            &self.event_hashes,
            &self.event_types,
            &self.tenant_ids,
            &self.agent_ids,
            &self.execution_ids,
            &self.ts,
            &self.payloads,
        ]
    }
}
