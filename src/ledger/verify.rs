//! Verification of the ledger: every chain in full ([`verify_all`]), one tenant's chains in full
//! ([`verify_tenant`], what a tenant admin may see), or only what was appended since the latest
//! signed checkpoint ([`verify_since_checkpoint`], the startup gate), each
//! event checked by [`ChainCheck`] and the first bad one named. Memory is bounded by the number
//! of chains: one last event per chain (plus one head per chain from the checkpoint), however
//! many events there are.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use sqlx::PgPool;

use super::append::ChainId;
pub use super::chain_check::BadEvent;
use super::chain_check::{missing_chain, ChainCheck};
use super::checkpoint::{self, CheckpointRow, Head};
use crate::config::Secret;
use crate::domain::{AgentId, TenantId};
use crate::store::chain_events::{self, EventRef};
use crate::store::checkpoints;
use crate::store::tenants;

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
    /// Whether a removed chain tail would have been found: only against a valid signed
    /// checkpoint (or an archived head, `aex ledger verify --head`).
    pub truncation_detectable: bool,
    /// What this result cannot vouch for, e.g. no checkpoint yet.
    pub warning: Option<String>,
    pub elapsed_ms: u64,
    pub events_per_second: u64,
}

/// Said when there is no checkpoint to hold the chains against.
pub const NO_CHECKPOINT: &str = "no signed checkpoint exists: the chains are intact as far \
     as they go, but a removed tail is undetectable (write one with `aex ledger checkpoint`)";

/// The latest checkpoint, its signature checked; heads are empty when there is none or it is bad.
async fn load_checkpoint(
    pool: &PgPool,
    keys: &BTreeMap<String, Secret>,
) -> Result<(BTreeMap<String, Head>, i64, Option<CheckpointCheck>), sqlx::Error> {
    let Some(row): Option<CheckpointRow> = checkpoints::latest(pool).await? else {
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

/// Verifies every event of every chain. Rows are read in id (append) order, the order they sit
/// in on disk, so a million events are one sequential pass instead of an index walk that jumps
/// across the heap for every row; each chain keeps only its last good event. Within a chain, id
/// order is sequence order: an append takes its id under the chain's tail lock, after the chain's
/// previous append committed. A chain that does not verify in id order (tampered with, or its
/// ids out of order for any other reason) is read again in sequence order, and that walk alone
/// decides what is wrong with it: the report names what a walk of every chain in (chain, seq)
/// order would have named first.
pub async fn verify_all(
    pool: &PgPool,
    keys: &BTreeMap<String, Secret>,
) -> Result<VerifyReport, sqlx::Error> {
    walk(pool, keys, None).await
}

/// Verifies every chain of one tenant (its tenant chain and its agents' chains) as
/// [`verify_all`] does, against what the latest checkpoint recorded of them. Nothing in the
/// report is about another tenant: not its chains, not its counts.
pub async fn verify_tenant(
    pool: &PgPool,
    keys: &BTreeMap<String, Secret>,
    tenant: TenantId,
) -> Result<VerifyReport, sqlx::Error> {
    let agents = tenants::agent_ids(pool, tenant).await?;
    let chains = std::iter::once(ChainId::Tenant(tenant))
        .chain(agents.into_iter().map(|a| ChainId::Agent(AgentId(a))))
        .map(|c| c.to_string())
        .collect();
    walk(pool, keys, Some(chains)).await
}

/// The walk in id order, of every chain or (`Some`) of the chains named.
async fn walk(
    pool: &PgPool,
    keys: &BTreeMap<String, Secret>,
    only: Option<Vec<String>>,
) -> Result<VerifyReport, sqlx::Error> {
    let started = std::time::Instant::now();
    let (mut heads, checkpoint_id, mut check) = load_checkpoint(pool, keys).await?;
    let mut rows = match &only {
        None => chain_events::all_by_id(pool),
        Some(names) => {
            heads.retain(|name, _| names.contains(name));
            if let Some(check) = &mut check {
                check.chains = heads.len();
            }
            chain_events::chains_by_id(pool, names)
        }
    };
    let mut chains: HashMap<String, (ChainCheck, Health)> = HashMap::new();
    let mut events = 0;
    while let Some(row) = rows.try_next().await? {
        let event = EventRef::from_row(&row)?;
        events += 1;
        match chains.get_mut(event.chain_id) {
            Some((chain, health)) => health.record(chain, &event),
            None => {
                let head = heads.get(event.chain_id).cloned();
                let mut chain = ChainCheck::from_genesis(head, checkpoint_id);
                let mut health = Health::Good;
                health.record(&mut chain, &event);
                chains.insert(event.chain_id.to_owned(), (chain, health));
            }
        }
    }
    drop(rows);

    // Every chain either table or checkpoint knows, in the order a (chain, seq) walk meets them.
    let mut names: Vec<&String> = chains.keys().chain(heads.keys()).collect();
    names.sort_unstable();
    names.dedup();
    let mut bad = None;
    for name in names {
        bad = match (chains.get(name), heads.get(name)) {
            (Some((chain, Health::Good)), _) => chain.finish(name),
            (Some((_, Health::Broken)), head) => {
                reread_chain(pool, name, head.cloned(), checkpoint_id).await?
            }
            (None, head) => head.map(|h| missing_chain(name, h, checkpoint_id)),
        };
        if bad.is_some() {
            break;
        }
    }
    Ok(report(chains.len(), events, bad, check, started))
}

/// How a chain fared in the pass in id order.
enum Health {
    Good,
    /// Something did not verify; the rest of the chain's events are skipped.
    Broken,
}

impl Health {
    fn record(&mut self, chain: &mut ChainCheck, event: &EventRef<'_>) {
        if matches!(self, Health::Good) && chain.event(event).is_some() {
            *self = Health::Broken;
        }
    }
}

/// Walks one chain in sequence order; its first problem (a bad event or a removed tail).
async fn reread_chain(
    pool: &PgPool,
    name: &str,
    head: Option<Head>,
    checkpoint_id: i64,
) -> Result<Option<BadEvent>, sqlx::Error> {
    let mut chain = ChainCheck::from_genesis(head, checkpoint_id);
    let mut rows = chain_events::chain_by_seq(pool, name);
    while let Some(row) = rows.try_next().await? {
        let event = EventRef::from_row(&row)?;
        if let Some(problem) = chain.event(&event) {
            return Ok(Some(bad_event(&event, problem)));
        }
    }
    Ok(chain.finish(name))
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
    let current = chain_events::current_heads(&mut conn).await?;
    drop(conn);
    let mut names: Vec<&String> = current.keys().chain(heads.keys()).collect();
    names.sort_unstable();
    names.dedup();
    let (mut chains, mut events, mut bad) = (0, 0, None);
    'chains: for name in names {
        let head = heads.get(name);
        if !current.contains_key(name) {
            bad = head.map(|h| missing_chain(name, h, checkpoint_id));
            break;
        }
        chains += 1;
        let mut chain = match head {
            Some(h) => ChainCheck::from_anchor(h.clone(), checkpoint_id),
            None => ChainCheck::from_genesis(None, checkpoint_id),
        };
        let mut rows = chain_events::chain_from_seq(pool, name, head.map_or(1, |h| h.seq));
        while let Some(row) = rows.try_next().await? {
            let event = EventRef::from_row(&row)?;
            events += 1;
            if let Some(problem) = chain.event(&event) {
                bad = Some(bad_event(&event, problem));
                break 'chains;
            }
        }
        bad = chain.finish(name);
        if bad.is_some() {
            break;
        }
    }
    Ok(report(chains, events, bad, check, started))
}

fn bad_event(event: &EventRef<'_>, problem: String) -> BadEvent {
    BadEvent {
        id: event.id,
        chain_id: event.chain_id.to_owned(),
        seq: event.seq,
        problem,
    }
}

fn report(
    chains: usize,
    events: u64,
    bad: Option<BadEvent>,
    checkpoint: Option<CheckpointCheck>,
    started: std::time::Instant,
) -> VerifyReport {
    let elapsed = started.elapsed();
    let checkpoint_ok = checkpoint.as_ref().is_none_or(|c| c.problem.is_none());
    VerifyReport {
        ok: bad.is_none() && checkpoint_ok,
        chains: u64::try_from(chains).unwrap_or(u64::MAX),
        events,
        first_bad_event: bad,
        truncation_detectable: checkpoint.is_some() && checkpoint_ok,
        warning: checkpoint.is_none().then(|| NO_CHECKPOINT.to_owned()),
        checkpoint,
        elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        events_per_second: (events as f64 / elapsed.as_secs_f64().max(1e-9)) as u64,
    }
}
