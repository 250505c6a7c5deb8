//! The common admissions of one replica, written as one batch (issue 17, item 1) on the money
//! transactions' pool: BEGIN, `aex_lock_agent_chains` (every distinct agent's row, chain lock
//! and tail, and its tenant's admission view) and then the agents' rate windows in the first
//! round trip; the admissions counted in their windows, `aex_hold_batch` (all the holds, one
//! statement per table) and COMMIT in the second (migrations/20261208000002_admission_batch.sql,
//! 20261208200001_admission_batch_rate_limits.sql). The holds are decided and their events
//! hashed by the caller between the two, against the rows read here.
//!
//! Only holds that do not count against the tenant go here (the tenant's row would have to be
//! locked before the agents'): unkeyed first attempts, written DISPATCHED.

use std::collections::HashMap;

use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::agents::agent_columns;
use super::executions::NewExecution;
use super::holds::{HoldEvents, HotLocked, NewReservation};
use super::hot::{pg_error, HotConn, HotPool, BEGIN};
use super::hot_rows::agent_row;
use super::rate_windows::{use_of_row, Charges, WindowUse, USE_OF_SUBJECTS};
use crate::domain::{AgentId, ReplicaId, TenantId};

const LOCK: &str = concat!(
    "SELECT ",
    agent_columns!(),
    ", tail_seq, tail_hash, tenant_limited, tenant_policy \
     FROM aex_lock_agent_chains($1, $2, $3, $4)"
);

const HOLD: &str = "SELECT aex_hold_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
     $13, $14, $15, $16, $17, $18, $19, $20, $21)";

/// One agent of a batch to lock: its tenant, its chain's id and advisory lock key, and its
/// rate-limit subject (whose windows are read).
#[derive(Debug, Clone)]
pub struct AgentToLock {
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub chain_id: String,
    pub lock_key: i64,
    pub subject: String,
}

/// A batch's transaction, its agents' rows and chains locked. Dropped without
/// [`BatchLock::hold`] or [`BatchLock::abandon`], its connection is closed (the server rolls
/// back).
pub struct BatchLock {
    conn: Box<HotConn>,
}

/// BEGIN, then the agents' rows (ascending id), their chains' locks and tails, and their tenants'
/// admission views, then their rate windows, in one round trip. `agents` should be distinct; an
/// agent that does not exist under its tenant is missing from the answer.
pub async fn lock_batch(
    pool: &HotPool,
    agents: &[AgentToLock],
) -> Result<(BatchLock, Vec<HotLocked>), sqlx::Error> {
    let mut conn = Box::new(pool.get().await?);
    let begin = conn.prepare(BEGIN).await?;
    let lock = conn.prepare(LOCK).await?;
    let windows = conn.prepare(USE_OF_SUBJECTS).await?;
    conn.begun();
    let tenants: Vec<Uuid> = agents.iter().map(|a| a.tenant_id.0).collect();
    let ids: Vec<Uuid> = agents.iter().map(|a| a.agent_id.0).collect();
    let chains: Vec<&str> = agents.iter().map(|a| a.chain_id.as_str()).collect();
    let keys: Vec<i64> = agents.iter().map(|a| a.lock_key).collect();
    let params: [&(dyn ToSql + Sync); 4] = [&tenants, &ids, &chains, &keys];
    let subjects: Vec<&str> = agents.iter().map(|a| a.subject.as_str()).collect();
    let window_params: [&(dyn ToSql + Sync); 1] = [&subjects];
    let client = conn.client()?;
    let (_, rows, window_rows) = tokio::try_join!(
        client.execute(&begin, &[]),
        client.query(&lock, &params),
        client.query(&windows, &window_params),
    )
    .map_err(pg_error)?;
    let mut used: HashMap<String, WindowUse> = HashMap::new();
    for row in &window_rows {
        used.insert(row.try_get(0).map_err(pg_error)?, use_of_row(row)?);
    }
    let window_of: HashMap<AgentId, WindowUse> = agents
        .iter()
        .map(|a| {
            (
                a.agent_id,
                used.get(&a.subject).copied().unwrap_or_default(),
            )
        })
        .collect();
    let locked = rows
        .iter()
        .map(|row| {
            let agent = agent_row(row)?;
            Ok(HotLocked {
                tenant_limited: row.try_get("tenant_limited").map_err(pg_error)?,
                tenant_policy: sqlx::types::Json(row.try_get("tenant_policy").map_err(pg_error)?),
                tail_seq: row.try_get("tail_seq").map_err(pg_error)?,
                tail_hash: row.try_get("tail_hash").map_err(pg_error)?,
                window: window_of.get(&agent.id).copied().unwrap_or_default(),
                agent,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok((BatchLock { conn }, locked))
}

/// The holds of a batch, column by column, as `aex_hold_batch` takes them.
#[derive(Default)]
pub struct HoldBatch {
    ids: Vec<Uuid>,
    tenant_ids: Vec<Uuid>,
    agent_ids: Vec<Uuid>,
    keys: Vec<String>,
    routes: Vec<String>,
    fingerprints: Vec<String>,
    model_aliases: Vec<Option<String>>,
    streams: Vec<bool>,
    replica_id: Option<Uuid>,
    estimates: Vec<i64>,
    providers: Vec<Option<String>>,
    reservation_ids: Vec<Uuid>,
    rate_tokens: Vec<i64>,
    chain_ids: Vec<String>,
    ts: Vec<chrono::DateTime<chrono::Utc>>,
    seqs: Vec<i64>,
    prev_hashes: Vec<String>,
    reserved_hashes: Vec<String>,
    reserved_payloads: Vec<String>,
    dispatched_hashes: Vec<String>,
    dispatched_payloads: Vec<String>,
    /// The admissions to count in rate windows.
    charges: Charges,
}

/// A hold the batch cannot write: it is not an unkeyed first attempt written DISPATCHED by this
/// replica, or it counts against the tenant.
#[derive(Debug, thiserror::Error)]
#[error("this hold cannot be written in a batch")]
pub struct NotBatchable;

impl HoldBatch {
    pub fn new(replica_id: ReplicaId) -> Self {
        HoldBatch {
            replica_id: Some(replica_id.0),
            ..HoldBatch::default()
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Adds a hold, as `store::holds::hold` takes it.
    pub fn push(
        &mut self,
        e: &NewExecution<'_>,
        r: &NewReservation,
        events: &HoldEvents<'_>,
    ) -> Result<(), NotBatchable> {
        let plain = !e.keyed && e.attempt == 1 && e.state == "DISPATCHED" && e.reason.is_none();
        let own = e.replica_id.map(|r| r.0) == self.replica_id;
        if !plain || !own || r.holds_tenant {
            return Err(NotBatchable);
        }
        self.ids.push(e.id);
        self.tenant_ids.push(e.tenant_id.0);
        self.agent_ids.push(e.agent_id.0);
        self.keys.push(e.execution_key.to_owned());
        self.routes.push(e.route.to_owned());
        self.fingerprints.push(e.fingerprint.to_owned());
        self.model_aliases.push(e.model_alias.map(str::to_owned));
        self.streams.push(e.stream);
        self.estimates.push(e.estimate_micro_usd);
        self.providers.push(e.provider.map(str::to_owned));
        self.reservation_ids.push(r.id);
        self.rate_tokens.push(r.rate_tokens);
        self.chain_ids.push(events.chain_id.to_owned());
        self.ts.push(events.ts);
        self.seqs.push(events.seq);
        self.prev_hashes.push(events.prev_hash.to_owned());
        self.reserved_hashes.push(events.reserved.0.to_owned());
        self.reserved_payloads.push(events.reserved.1.to_owned());
        self.dispatched_hashes.push(events.dispatched.0.to_owned());
        self.dispatched_payloads
            .push(events.dispatched.1.to_owned());
        Ok(())
    }

    /// Counts an admission of the batch in its rate-limit `subject`'s window, with its estimated
    /// `tokens` (the hold's `rate_tokens`).
    pub fn charge(&mut self, subject: &str, tokens: i64) {
        self.charges.add(subject, tokens);
    }
}

impl BatchLock {
    /// The batch's holds and COMMIT, in one round trip; only ROLLBACK when there is none.
    pub async fn hold(mut self, b: &HoldBatch) -> Result<(), sqlx::Error> {
        if b.is_empty() {
            return self.abandon().await;
        }
        let started = std::time::Instant::now();
        let params: [&(dyn ToSql + Sync); 21] = [
            &b.ids,
            &b.tenant_ids,
            &b.agent_ids,
            &b.keys,
            &b.routes,
            &b.fingerprints,
            &b.model_aliases,
            &b.streams,
            &b.replica_id,
            &b.estimates,
            &b.providers,
            &b.reservation_ids,
            &b.chain_ids,
            &b.ts,
            &b.seqs,
            &b.prev_hashes,
            &b.reserved_hashes,
            &b.reserved_payloads,
            &b.dispatched_hashes,
            &b.dispatched_payloads,
            &b.rate_tokens,
        ];
        b.charges.commit_with(&mut self.conn, HOLD, &params).await?;
        crate::metrics::observe_ledger_append(started.elapsed());
        Ok(())
    }

    /// Rolls the transaction back (nothing was written) and gives the connection back.
    pub async fn abandon(mut self) -> Result<(), sqlx::Error> {
        self.conn.rollback().await
    }
}

/// The distinct agents of `agents`, in ascending id order (the order they are locked in).
pub fn distinct_agents(mut agents: Vec<AgentToLock>) -> Vec<AgentToLock> {
    agents.sort_by_key(|a| a.agent_id.0);
    agents.dedup_by_key(|a| a.agent_id.0);
    agents
}
