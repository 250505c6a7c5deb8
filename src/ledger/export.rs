//! Exporting the ledger as JSON lines that an independent program can re-verify
//! (`deploy/verify-ledger-export.py`): a header line with the latest checkpoint, then every event
//! in (chain, seq) order with the exact fields that are hashed.

use std::io::Write;

use futures::TryStreamExt;
use serde_json::json;
use sqlx::PgPool;

use super::encoding::format_ts;
use crate::store::chain_events;
use crate::store::checkpoints;

/// Writes the export; returns the number of events written. Memory stays bounded: rows are
/// streamed straight to `out`.
pub async fn export(pool: &PgPool, out: &mut dyn Write) -> anyhow::Result<u64> {
    let cp = checkpoints::latest(pool).await?;
    let header = json!({
        "format": "aex-ledger-export-v1",
        "encoding": 1,
        "checkpoint": cp.map(|c| json!({"id": c.id, "kid": c.kid, "heads": c.heads, "signature": c.signature})),
    });
    writeln!(out, "{header}")?;
    let mut rows = chain_events::all_by_chain(pool);
    let mut count = 0;
    while let Some(e) = rows.try_next().await? {
        let line = json!({
            "id": e.id, "chain_id": e.chain_id, "seq": e.seq, "prev_hash": e.prev_hash,
            "event_hash": e.event_hash, "event_type": e.event_type, "tenant_id": e.tenant_id,
            "agent_id": e.agent_id, "execution_id": e.execution_id, "ts": format_ts(e.ts),
            "payload": e.payload,
        });
        writeln!(out, "{line}")?;
        count += 1;
    }
    out.flush()?;
    Ok(count)
}
