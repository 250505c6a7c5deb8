//! Appending an event to a chain, inside the caller's transaction.
//!
//! The chain's tail is serialised with a transaction-level advisory lock, so the append commits
//! or rolls back together with the state change it records. Callers take the chain lock last,
//! after every row lock they need, so lock order never cycles.

use std::fmt;
use std::time::Instant;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use super::encoding::{canonical_json, event_hash, EventHeader, ENCODING_VERSION, GENESIS_HASH};
use crate::domain::{AgentId, TenantId};

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

/// Now, truncated to the microsecond precision Postgres stores, so the hashed timestamp
/// round-trips exactly.
fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// Appends `event` to its chain in the caller's transaction.
pub async fn append(
    conn: &mut PgConnection,
    event: NewEvent<'_>,
) -> Result<AppendedEvent, sqlx::Error> {
    let started = Instant::now();
    let chain_id = event.chain.to_string();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(chain_lock_key(&chain_id))
        .execute(&mut *conn)
        .await?;
    let tail: Option<(i64, String)> = sqlx::query_as(
        "SELECT seq, event_hash FROM event_log WHERE chain_id = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(&chain_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (seq, prev_hash) = match tail {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS_HASH.to_owned()),
    };
    let ts = now_micros();
    let payload = canonical_json(&event.payload);
    let header = EventHeader {
        chain_id: &chain_id,
        seq,
        prev_hash: &prev_hash,
        event_type: event.event_type,
        tenant_id: event.tenant_id.map(|t| t.0),
        agent_id: event.agent_id.map(|a| a.0),
        execution_id: event.execution_id,
        ts,
    };
    let hash = event_hash(&header, &payload);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO event_log (chain_id, seq, prev_hash, event_hash, event_type, tenant_id, \
         agent_id, execution_id, ts, payload, encoding) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
    )
    .bind(&chain_id)
    .bind(seq)
    .bind(&prev_hash)
    .bind(&hash)
    .bind(event.event_type)
    .bind(header.tenant_id)
    .bind(header.agent_id)
    .bind(event.execution_id)
    .bind(ts)
    .bind(&payload)
    .bind(ENCODING_VERSION)
    .fetch_one(&mut *conn)
    .await?;
    crate::metrics::observe_ledger_append(started.elapsed());
    Ok(AppendedEvent {
        id,
        chain_id,
        seq,
        event_hash: hash,
    })
}
