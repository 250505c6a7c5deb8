//! LISTEN/NOTIFY: every replica follows new config versions and token revocations within a
//! second, and resyncs both in full whenever its listening connection was lost (a notification
//! sent meanwhile is not redelivered) and periodically.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::config_sync;
use crate::auth::RevocationSet;
use crate::config::LiveRouting;
use crate::store::config_versions::CONFIG_CHANNEL;
use crate::store::tokens::{self, REVOCATION_CHANNEL};

/// What the listener keeps current on this replica.
#[derive(Clone)]
pub struct Followed {
    pub pool: PgPool,
    pub revocations: Arc<RevocationSet>,
    pub routing: Arc<LiveRouting>,
}

/// Reloads the revocation set and the active routing table from the database.
pub async fn resync(followed: &Followed) -> Result<(), anyhow::Error> {
    let mut conn = followed.pool.acquire().await?;
    let revoked = tokens::list_revoked(&mut conn).await?;
    drop(conn);
    followed.revocations.replace(revoked);
    let table = config_sync::load_active(&followed.pool).await?;
    let version = table.version;
    if followed.routing.install(table) {
        tracing::info!(config_version = version, "routing table loaded");
    }
    crate::metrics::set_config_version(followed.routing.current().version);
    Ok(())
}

/// Listens until cancelled.
pub async fn listen_loop(followed: Followed, resync_every: Duration, stop: CancellationToken) {
    loop {
        let mut listener = match connect(&followed).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listener cannot connect; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if let Err(e) = resync(&followed).await {
            tracing::warn!(error = %e, "resync failed");
        }
        let mut next_resync = tokio::time::Instant::now() + resync_every;
        loop {
            let received = tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(next_resync) => {
                    if let Err(e) = resync(&followed).await {
                        tracing::warn!(error = %e, "periodic resync failed");
                    }
                    next_resync = tokio::time::Instant::now() + resync_every;
                    continue;
                }
                r = listener.try_recv() => r,
            };
            match received {
                Ok(Some(n)) => handle(&followed, n.channel(), n.payload()).await,
                // The connection was lost: anything announced meanwhile is missed. Listen again
                // on a fresh connection first and only then resync in full (the outer loop), so
                // nothing falls between the resync and the new LISTEN.
                Ok(None) => {
                    tracing::warn!("listener connection lost; reconnecting and resyncing");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}

async fn connect(followed: &Followed) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(&followed.pool).await?;
    listener
        .listen_all([CONFIG_CHANNEL, REVOCATION_CHANNEL])
        .await?;
    Ok(listener)
}

async fn handle(followed: &Followed, channel: &str, payload: &str) {
    match channel {
        REVOCATION_CHANNEL => match payload.parse::<uuid::Uuid>() {
            Ok(jti) => followed.revocations.insert(jti),
            Err(_) => tracing::warn!(payload, "ignoring malformed revocation notice"),
        },
        CONFIG_CHANNEL => match config_sync::load_active(&followed.pool).await {
            Ok(table) => {
                let version = table.version;
                if followed.routing.install(table) {
                    crate::metrics::set_config_version(version);
                    tracing::info!(config_version = version, "routing table reloaded");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot load the announced config version"),
        },
        _ => {}
    }
}
