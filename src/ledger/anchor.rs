//! Anchoring outside the database (SPEC §10): a signed head archived elsewhere (the output of
//! `aex ledger checkpoint --json`) is checked against the chains as they are now. Every chain
//! it names must still hold the archived event at the archived sequence number, and every
//! chain must verify; so a removed tail is found even by someone who could delete the
//! checkpoint rows in the database.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::PgPool;

use super::checkpoint::{check_signature, CheckpointRow, Head};
use super::verify::{self, VerifyReport};
use crate::config::Secret;
use crate::store::chain_events;

/// The outcome of checking an archived head.
#[derive(Debug, Clone, Serialize)]
pub struct AnchorReport {
    pub ok: bool,
    /// The archived checkpoint's id.
    pub checkpoint_id: i64,
    /// Chains the archived head names.
    pub chains: usize,
    /// What does not hold: a bad signature, or the first chain that lost its archived head.
    pub problem: Option<String>,
    /// The verification of every chain, as `aex ledger verify` reports it.
    pub ledger: VerifyReport,
}

/// Checks `archived` (its signature with the configured keys, then each head) and the chains.
pub async fn verify_head(
    pool: &PgPool,
    keys: &BTreeMap<String, Secret>,
    archived: &CheckpointRow,
) -> Result<AnchorReport, sqlx::Error> {
    let ledger = verify::verify_all(pool, keys).await?;
    let checked = check_signature(keys, archived).and_then(|()| archived.parsed_heads());
    let (chains, problem) = match checked {
        Err(problem) => (0, Some(problem)),
        Ok(heads) => (heads.len(), first_missing_head(pool, &heads).await?),
    };
    Ok(AnchorReport {
        ok: ledger.ok && problem.is_none(),
        checkpoint_id: archived.id,
        chains,
        problem,
        ledger,
    })
}

async fn first_missing_head(
    pool: &PgPool,
    heads: &BTreeMap<String, Head>,
) -> Result<Option<String>, sqlx::Error> {
    for (chain, head) in heads {
        let found = chain_events::hash_at(pool, chain, head.seq).await?;
        match found {
            None => {
                return Ok(Some(format!(
                "chain {chain}: event {} of the archived head is gone (the chain was truncated)",
                head.seq
            )))
            }
            Some(hash) if hash != head.hash => {
                return Ok(Some(format!(
                    "chain {chain}: event {} differs from the archived head",
                    head.seq
                )))
            }
            Some(_) => {}
        }
    }
    Ok(None)
}
