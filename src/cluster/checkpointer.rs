//! Writes a signed ledger checkpoint every `ledger.checkpoint_interval_seconds`; replicas race
//! for an advisory lock, so one writes and the others skip.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{AuthSettings, Settings};
use crate::domain::ReplicaId;
use crate::ledger::checkpoint;

/// Writes one checkpoint now (if this replica wins the lock and anything changed).
pub async fn checkpoint_now(
    pool: &PgPool,
    auth: &AuthSettings,
    replica_id: ReplicaId,
) -> Result<Option<i64>, sqlx::Error> {
    let Some(key) = auth.keys.get(&auth.active_kid) else {
        return Ok(None);
    };
    checkpoint::write(pool, &auth.active_kid, key, Some(replica_id.0)).await
}

pub async fn checkpoint_loop(
    pool: PgPool,
    settings: Arc<Settings>,
    replica_id: ReplicaId,
    stop: CancellationToken,
) {
    let every = Duration::from_secs(settings.ledger.checkpoint_interval_seconds.max(1));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match checkpoint_now(&pool, &settings.auth, replica_id).await {
            Ok(Some(id)) => tracing::debug!(checkpoint = id, "ledger checkpoint written"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "writing a ledger checkpoint failed"),
        }
    }
}
