//! Signed checkpoints: the head (sequence number and hash) of every chain at one moment,
//! HMAC-SHA256'd with the server key, written periodically by one replica at a time. A chain whose
//! tail was cut below a checkpointed head, or that vanished, is then detectable.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::PgPool;

use crate::config::Secret;
use crate::store::chain_events;
use crate::store::checkpoints::{self, NewCheckpoint};
pub use crate::store::checkpoints::{CheckpointRow, Head};
use crate::store::locks;

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
    let heads = chain_events::current_heads(&mut tx).await?;
    let text = serde_json::to_string(&heads).unwrap_or_default();
    let last = checkpoints::latest_heads(&mut tx).await?;
    if heads.is_empty() || last.as_deref() == Some(text.as_str()) {
        return Ok(None);
    }
    let events: i64 = heads.values().map(|h| h.seq).sum();
    let signature = sign(key, &text);
    let id = checkpoints::insert(
        &mut tx,
        &NewCheckpoint {
            replica,
            kid,
            heads: &text,
            chain_count: i32::try_from(heads.len()).unwrap_or(i32::MAX),
            event_count: events,
            signature: &signature,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

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
