//! Exporting the ledger as JSON lines that an independent program can re-verify
//! (`deploy/verify-ledger-export.py`): a header line with the latest checkpoint, then every event
//! in (chain, seq) order with the exact fields that are hashed.

use std::io::Write;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::checkpoint;
use super::encoding::format_ts;

/// Writes the export; returns the number of events written. Memory stays bounded: rows are
/// streamed straight to `out`.
pub async fn export(pool: &PgPool, out: &mut dyn Write) -> anyhow::Result<u64> {
    let cp = checkpoint::latest(pool).await?;
    let header = json!({
        "format": "aex-ledger-export-v1",
        "encoding": 1,
        "checkpoint": cp.map(|c| json!({"id": c.id, "kid": c.kid, "heads": c.heads, "signature": c.signature})),
    });
    writeln!(out, "{header}")?;
    type Row = (
        i64,
        String,
        i64,
        String,
        String,
        String,
        Option<Uuid>,
        Option<Uuid>,
        Option<String>,
        DateTime<Utc>,
        String,
    );
    let mut rows = sqlx::query_as::<_, Row>(
        "SELECT id, chain_id, seq, prev_hash, event_hash, event_type, tenant_id, agent_id, execution_id, ts, payload \
         FROM event_log ORDER BY chain_id, seq",
    )
    .fetch(pool);
    let mut count = 0;
    while let Some((
        id,
        chain_id,
        seq,
        prev_hash,
        event_hash,
        event_type,
        tenant_id,
        agent_id,
        execution_id,
        ts,
        payload,
    )) = rows.try_next().await?
    {
        let line = json!({
            "id": id, "chain_id": chain_id, "seq": seq, "prev_hash": prev_hash, "event_hash": event_hash,
            "event_type": event_type, "tenant_id": tenant_id, "agent_id": agent_id, "execution_id": execution_id,
            "ts": format_ts(ts), "payload": payload,
        });
        writeln!(out, "{line}")?;
        count += 1;
    }
    out.flush()?;
    Ok(count)
}
