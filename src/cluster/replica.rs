//! This instance's row in `replicas`, kept fresh by a heartbeat, and what the heartbeat learns
//! about this instance's own contact with the database.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::domain::ReplicaId;
use crate::store::replicas;

pub async fn register(pool: &PgPool, id: ReplicaId) -> Result<(), sqlx::Error> {
    let hostname = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
        })
        .unwrap_or_else(|| "unknown".into());
    let mut conn = pool.acquire().await?;
    replicas::register(&mut conn, id, &hostname, crate::VERSION).await
}

/// Since when this replica has reached the database without a failed heartbeat.
///
/// Heartbeats only say who is alive while the database is reachable: after an outage every
/// replica's heartbeat is stale, the living ones' included, until they beat again. A replica
/// therefore judges others lost only once its own contact has lasted `stale_after` — long
/// enough for every live replica to have beaten since.
#[derive(Debug, Default)]
pub struct DbContact {
    since: Mutex<Option<Instant>>,
}

impl DbContact {
    pub fn reached(&self) {
        if let Ok(mut since) = self.since.lock() {
            since.get_or_insert_with(Instant::now);
        }
    }

    pub fn lost(&self) {
        if let Ok(mut since) = self.since.lock() {
            *since = None;
        }
    }

    /// Whether contact has been unbroken for at least `span`.
    pub fn held_for(&self, span: Duration) -> bool {
        self.since
            .lock()
            .ok()
            .and_then(|since| *since)
            .is_some_and(|since| since.elapsed() >= span)
    }
}

/// Heartbeats until cancelled, recording each beat's outcome in `contact`. A failed beat is
/// retried on the next tick; if beats keep failing past `stale_after`, other replicas will
/// reconcile this one's executions, which is correct: a replica that cannot reach the database
/// cannot settle them either.
pub async fn heartbeat_loop(
    pool: PgPool,
    id: ReplicaId,
    every: Duration,
    contact: Arc<DbContact>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match beat(&pool, id).await {
            Ok(()) => contact.reached(),
            Err(e) => {
                contact.lost();
                tracing::warn!(error = %e, "heartbeat failed");
            }
        }
    }
}

async fn beat(pool: &PgPool, id: ReplicaId) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    replicas::heartbeat(&mut conn, id).await
}

pub async fn deregister(pool: &PgPool, id: ReplicaId) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    replicas::deregister(&mut conn, id).await
}
