//! Routing-table versions in Postgres: the file is the source, `config_versions` is how a version
//! reaches every replica.

use std::path::Path;

use crate::config::{RoutingError, RoutingTable};
use crate::store::{config_versions, locks};

#[derive(Debug, thiserror::Error)]
pub enum ConfigSyncError {
    #[error("cannot read the routing table {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] RoutingError),
    #[error("no routing table: none is stored and {0} does not exist (run `aex init`)")]
    Missing(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Imports `path` as a new version when its content differs from the active one (under an
/// advisory lock, so identical files from many replicas make one version). Returns the active
/// version afterwards. A missing file is fine when a version is already stored.
pub async fn import_file(pool: &sqlx::PgPool, path: &Path) -> Result<i64, ConfigSyncError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(ConfigSyncError::Read {
                path: path.display().to_string(),
                source,
            })
        }
    };
    let mut tx = pool.begin().await?;
    locks::lock(&mut tx, locks::CONFIG_IMPORT).await?;
    let active = config_versions::get_active(&mut tx).await?;
    let version = match (text, active) {
        (None, Some(active)) => active.version,
        (None, None) => return Err(ConfigSyncError::Missing(path.display().to_string())),
        (Some(text), active) => {
            let table = RoutingTable::parse(&text, 0)?;
            match active {
                Some(a) if a.content_hash == table.content_hash => a.version,
                _ => {
                    let source = format!("file:{}", path.display());
                    config_versions::insert_version(
                        &mut tx,
                        &text,
                        &table.content_hash,
                        &source,
                        None,
                    )
                    .await?
                }
            }
        }
    };
    tx.commit().await?;
    Ok(version)
}

/// The active version, validated.
pub async fn load_active(pool: &sqlx::PgPool) -> Result<RoutingTable, ConfigSyncError> {
    let mut conn = pool.acquire().await?;
    let row = config_versions::get_active(&mut conn)
        .await?
        .ok_or_else(|| ConfigSyncError::Missing("config_versions".into()))?;
    Ok(RoutingTable::parse(&row.content, row.version)?)
}
