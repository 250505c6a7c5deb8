//! Signed checkpoints: the head (sequence number and hash) of every chain at one moment,
//! HMAC-SHA256'd with the server key, written periodically by one replica at a time. A chain whose
//! tail was cut below a checkpointed head, or that vanished, is then detectable.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::{PgConnection, PgPool};

use crate::config::Secret;
use crate::store::locks;

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

/// HMAC-SHA256 (hex) of the canonical heads text, versioned.
pub fn sign(key: &Secret, heads: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this arm cannot be reached.
        Err(_) => return String::new(),
    };
    mac.update(b"aex-checkpoint-v1\n");
    mac.update(heads.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a checkpoint's signature with the key its `kid` names.
pub fn check_signature(keys: &BTreeMap<String, Secret>, row: &CheckpointRow) -> Result<(), String> {
    let key = keys.get(&row.kid).ok_or_else(|| {
        format!(
            "checkpoint {} is signed with key `{}`, which is not configured",
            row.id, row.kid
        )
    })?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()).map_err(|e| e.to_string())?;
    mac.update(b"aex-checkpoint-v1\n");
    mac.update(row.heads.as_bytes());
    let expected = hex::decode(&row.signature)
        .map_err(|_| format!("checkpoint {} has a malformed signature", row.id))?;
    mac.verify_slice(&expected).map_err(|_| {
        format!(
            "checkpoint {} has an invalid signature (forged or edited)",
            row.id
        )
    })
}

/// The head of every chain: a skip scan over the (chain_id, seq) index, one probe per chain.
pub async fn current_heads(conn: &mut PgConnection) -> Result<BTreeMap<String, Head>, sqlx::Error> {
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "WITH RECURSIVE chains(chain_id) AS ( \
           (SELECT chain_id FROM event_log ORDER BY chain_id LIMIT 1) \
           UNION ALL \
           SELECT (SELECT e.chain_id FROM event_log e WHERE e.chain_id > c.chain_id ORDER BY e.chain_id LIMIT 1) \
           FROM chains c WHERE c.chain_id IS NOT NULL) \
         SELECT c.chain_id, t.seq, t.event_hash FROM chains c \
         CROSS JOIN LATERAL (SELECT seq, event_hash FROM event_log e WHERE e.chain_id = c.chain_id \
                             ORDER BY seq DESC LIMIT 1) t \
         WHERE c.chain_id IS NOT NULL",
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(chain, seq, hash)| (chain, Head { seq, hash }))
        .collect())
}

pub async fn latest(pool: &PgPool) -> Result<Option<CheckpointRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, created_at, kid, heads, chain_count, event_count, signature FROM ledger_checkpoints \
         ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await
}

/// Writes a checkpoint of the current heads unless another replica is writing one or nothing was
/// appended since the last. Returns the new checkpoint's id.
pub async fn write(
    pool: &PgPool,
    kid: &str,
    key: &Secret,
    replica: Option<uuid::Uuid>,
) -> Result<Option<i64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !locks::try_lock(&mut tx, locks::CHECKPOINT).await? {
        return Ok(None);
    }
    let heads = current_heads(&mut tx).await?;
    let text = serde_json::to_string(&heads).unwrap_or_default();
    let last: Option<String> =
        sqlx::query_scalar("SELECT heads FROM ledger_checkpoints ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
    if heads.is_empty() || last.as_deref() == Some(text.as_str()) {
        return Ok(None);
    }
    let events: i64 = heads.values().map(|h| h.seq).sum();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO ledger_checkpoints (replica_id, kid, heads, chain_count, event_count, signature) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(replica)
    .bind(kid)
    .bind(&text)
    .bind(i32::try_from(heads.len()).unwrap_or(i32::MAX))
    .bind(events)
    .bind(sign(key, &text))
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_checks_with_its_key_and_fails_when_edited() {
        let key = Secret::new("0123456789abcdef0123456789abcdef");
        let keys: BTreeMap<String, Secret> = [("k1".to_owned(), key.clone())].into_iter().collect();
        let heads = r#"{"agent:x":{"hash":"ab","seq":3}}"#;
        let mut row = CheckpointRow {
            id: 1,
            created_at: Utc::now(),
            kid: "k1".into(),
            heads: heads.into(),
            chain_count: 1,
            event_count: 3,
            signature: sign(&key, heads),
        };
        assert_eq!(check_signature(&keys, &row), Ok(()));
        row.heads = heads.replace("\"seq\":3", "\"seq\":2");
        assert!(check_signature(&keys, &row)
            .unwrap_err()
            .contains("invalid signature"));
        row.kid = "k9".into();
        assert!(check_signature(&keys, &row)
            .unwrap_err()
            .contains("not configured"));
        assert_eq!(row.parsed_heads().unwrap()["agent:x"].seq, 2);
    }
}
