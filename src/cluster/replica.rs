//! This instance's row in `replicas`, kept fresh by a heartbeat.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::ReplicaId;
use crate::gateway::Gateway;
use crate::store::replicas;

pub async fn register(gw: &Gateway) -> Result<(), sqlx::Error> {
    let hostname = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
        })
        .unwrap_or_else(|| "unknown".into());
    let mut conn = gw.pool.acquire().await?;
    replicas::register(&mut conn, gw.replica_id, &hostname, crate::VERSION).await
}

/// Heartbeats until cancelled. A failed beat is retried on the next tick; if beats keep failing
/// past `stale_after`, other replicas will reconcile this one's executions, which is correct:
/// a replica that cannot reach the database cannot settle them either.
pub async fn heartbeat_loop(gw: Arc<Gateway>, stop: CancellationToken) {
    let every = Duration::from_secs(gw.settings.cluster.heartbeat_seconds.max(1));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        if let Err(e) = beat(&gw.pool, gw.replica_id).await {
            tracing::warn!(error = %e, "heartbeat failed");
        }
    }
}

async fn beat(pool: &sqlx::PgPool, id: ReplicaId) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    replicas::heartbeat(&mut conn, id).await
}

pub async fn deregister(gw: &Gateway) -> Result<(), sqlx::Error> {
    let mut conn = gw.pool.acquire().await?;
    replicas::deregister(&mut conn, gw.replica_id).await
}
