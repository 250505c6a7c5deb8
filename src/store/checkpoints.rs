//! Signed checkpoints (`ledger_checkpoints`): the head of every chain at one moment. Signing and
//! checking them is `ledger::checkpoint`'s.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

/// One chain's head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
}

/// A stored checkpoint; also the archived head `aex ledger checkpoint --json` prints and
/// `aex ledger verify --head` reads (`heads` is the exact text that was signed).
#[derive(Debug, Clone, sqlx::FromRow, Serialize, Deserialize)]
pub struct CheckpointRow {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub kid: String,
    pub heads: String,
    pub chain_count: i32,
    pub event_count: i64,
    pub signature: String,
}

impl CheckpointRow {
    pub fn parsed_heads(&self) -> Result<BTreeMap<String, Head>, String> {
        serde_json::from_str(&self.heads)
            .map_err(|e| format!("checkpoint {} is unreadable: {e}", self.id))
    }
}

/// A checkpoint to write: the signed heads text and what it covers.
#[derive(Debug, Clone)]
pub struct NewCheckpoint<'a> {
    pub replica: Option<uuid::Uuid>,
    pub kid: &'a str,
    pub heads: &'a str,
    pub chain_count: i32,
    pub event_count: i64,
    pub signature: &'a str,
}

pub async fn latest(pool: &PgPool) -> Result<Option<CheckpointRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, created_at, kid, heads, chain_count, event_count, signature FROM ledger_checkpoints \
         ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await
}

/// The heads text of the latest checkpoint.
pub async fn latest_heads(conn: &mut PgConnection) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT heads FROM ledger_checkpoints ORDER BY id DESC LIMIT 1")
        .fetch_optional(conn)
        .await
}

/// Writes a checkpoint; returns its id.
pub async fn insert(conn: &mut PgConnection, c: &NewCheckpoint<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO ledger_checkpoints (replica_id, kid, heads, chain_count, event_count, signature) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(c.replica)
    .bind(c.kid)
    .bind(c.heads)
    .bind(c.chain_count)
    .bind(c.event_count)
    .bind(c.signature)
    .fetch_one(conn)
    .await
}
