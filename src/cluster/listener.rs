//! LISTEN/NOTIFY: every replica follows new config versions and token revocations within a
//! second, and resyncs both in full whenever its listening connection was lost (a notification
//! sent meanwhile is not redelivered) and periodically.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use super::config_sync;
use crate::gateway::Gateway;
use crate::store::config_versions::CONFIG_CHANNEL;
use crate::store::tokens::{self, REVOCATION_CHANNEL};

/// Reloads the revocation set and the active routing table from the database.
pub async fn resync(gw: &Gateway) -> Result<(), anyhow::Error> {
    let mut conn = gw.pool.acquire().await?;
    let revoked = tokens::list_revoked(&mut conn).await?;
    drop(conn);
    gw.revocations.replace(revoked);
    let table = config_sync::load_active(&gw.pool).await?;
    let version = table.version;
    if gw.install_routing(table) {
        tracing::info!(config_version = version, "routing table loaded");
    }
    crate::metrics::set_config_version(gw.routing().version);
    Ok(())
}

/// Listens until cancelled.
pub async fn listen_loop(gw: Arc<Gateway>, stop: CancellationToken) {
    let resync_every = Duration::from_secs(gw.settings.auth.revocation_resync_seconds.max(1));
    loop {
        let mut listener = match connect(&gw).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listener cannot connect; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if let Err(e) = resync(&gw).await {
            tracing::warn!(error = %e, "resync failed");
        }
        let mut next_resync = tokio::time::Instant::now() + resync_every;
        loop {
            let received = tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(next_resync) => {
                    if let Err(e) = resync(&gw).await {
                        tracing::warn!(error = %e, "periodic resync failed");
                    }
                    next_resync = tokio::time::Instant::now() + resync_every;
                    continue;
                }
                r = listener.try_recv() => r,
            };
            match received {
                Ok(Some(n)) => handle(&gw, n.channel(), n.payload()).await,
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

async fn connect(gw: &Gateway) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(&gw.pool).await?;
    listener
        .listen_all([CONFIG_CHANNEL, REVOCATION_CHANNEL])
        .await?;
    Ok(listener)
}

async fn handle(gw: &Gateway, channel: &str, payload: &str) {
    match channel {
        REVOCATION_CHANNEL => match payload.parse::<uuid::Uuid>() {
            Ok(jti) => gw.revocations.insert(jti),
            Err(_) => tracing::warn!(payload, "ignoring malformed revocation notice"),
        },
        CONFIG_CHANNEL => match config_sync::load_active(&gw.pool).await {
            Ok(table) => {
                let version = table.version;
                if gw.install_routing(table) {
                    crate::metrics::set_config_version(version);
                    tracing::info!(config_version = version, "routing table reloaded");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot load the announced config version"),
        },
        _ => {}
    }
}
