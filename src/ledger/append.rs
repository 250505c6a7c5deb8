//! Appending an event to a chain, inside the caller's transaction.
//!
//! The chain's tail is serialised with a transaction-level advisory lock, so the append commits
//! or rolls back together with the state change it records. Callers take the chain lock last,
//! after every row lock they need, so lock order never cycles.

use std::fmt;
use std::time::Instant;

use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use super::encoding::canonical_json;
use crate::domain::{AgentId, TenantId};
use crate::store::chain_events;

/// Which chain an event belongs to. Money events live on their agent's chain: the agent row lock
/// already serialises them, so the chain adds no contention, and a busy tenant is spread over as
/// many chains as it has agents. Tenant-level admin events use the tenant chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainId {
    Agent(AgentId),
    Tenant(TenantId),
    System,
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainId::Agent(id) => write!(f, "agent:{id}"),
            ChainId::Tenant(id) => write!(f, "tenant:{id}"),
            ChainId::System => f.write_str("system"),
        }
    }
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub chain: ChainId,
    pub event_type: &'a str,
    pub tenant_id: Option<TenantId>,
    pub agent_id: Option<AgentId>,
    pub execution_id: Option<&'a str>,
    pub payload: serde_json::Value,
}

impl<'a> NewEvent<'a> {
    /// An event on an agent's chain.
    pub fn for_agent(
        tenant_id: TenantId,
        agent_id: AgentId,
        event_type: &'a str,
        execution_id: Option<&'a str>,
        payload: serde_json::Value,
    ) -> Self {
        NewEvent {
            chain: ChainId::Agent(agent_id),
            event_type,
            tenant_id: Some(tenant_id),
            agent_id: Some(agent_id),
            execution_id,
            payload,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AppendedEvent {
    pub id: i64,
    pub chain_id: String,
    pub seq: i64,
    pub event_hash: String,
}

/// The advisory-lock key of a chain's tail: the first 8 bytes of SHA-256 of the chain id.
pub fn chain_lock_key(chain_id: &str) -> i64 {
    let digest = Sha256::digest(chain_id.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// Appends `event` to its chain in the caller's transaction: one round trip to the
/// `aex_append_event` function, which takes the chain's advisory lock, reads the tail, hashes with
/// the canonical encoding and inserts (see the migration that defines it).
pub async fn append(
    conn: &mut PgConnection,
    event: NewEvent<'_>,
) -> Result<AppendedEvent, sqlx::Error> {
    let started = Instant::now();
    let chain_id = event.chain.to_string();
    let payload = canonical_json(&event.payload);
    let (id, seq, event_hash) = chain_events::append(
        &mut *conn,
        &chain_events::NewChainEvent {
            chain_id: &chain_id,
            lock_key: chain_lock_key(&chain_id),
            event_type: event.event_type,
            tenant_id: event.tenant_id,
            agent_id: event.agent_id,
            execution_id: event.execution_id,
            payload: &payload,
        },
    )
    .await?;
    crate::metrics::observe_ledger_append(started.elapsed());
    Ok(AppendedEvent {
        id,
        chain_id,
        seq,
        event_hash,
    })
}
