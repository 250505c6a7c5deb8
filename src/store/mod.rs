//! Postgres access: one file per table family. Functions take `&mut PgConnection` so the caller
//! owns the transaction; tenant-owned data is always addressed with the tenant id first.

pub mod agent_settings;
pub mod agents;
pub mod alerts;
pub mod attempts;
pub mod audit;
pub mod chain_events;
pub mod checkpoints;
pub mod config_versions;
pub mod db;
pub mod event_log;
pub mod execution_search;
pub mod executions;
pub mod group_commit;
pub mod hold_batch;
pub mod holds;
pub mod hot;
mod hot_pgpass;
mod hot_rows;
mod hot_tls;
pub mod plugins;
pub mod projection;
pub mod rate_windows;
pub mod replicas;
pub mod settle_batch;
pub mod settlements;
pub mod setup;
pub mod stats;
pub mod tenants;
pub mod tokens;
pub mod usage;
pub mod webhook_outbox;
pub mod webhooks;

/// Errors of the store layer that callers map to client errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(&'static str),
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The name of the constraint a database error violated, if any.
pub fn violated_constraint(err: &sqlx::Error) -> Option<&str> {
    match err {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}

/// Fixed advisory-lock keys of singleton jobs (chain-tail locks hash the chain id instead), and
/// taking them for the caller's transaction.
pub mod locks {
    use sqlx::PgConnection;

    /// Importing a routing-table file as a new config version.
    pub const CONFIG_IMPORT: i64 = 0x4145_5801;
    /// The reconciler: one replica at a time.
    pub const RECONCILER: i64 = 0x4145_5802;
    /// Writing a ledger checkpoint.
    pub const CHECKPOINT: i64 = 0x4145_5803;

    /// Waits for the lock `key`, held until the caller's transaction ends.
    pub async fn lock(conn: &mut PgConnection, key: i64) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(key)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Takes the lock `key` for the caller's transaction if nobody holds it; false otherwise.
    pub async fn try_lock(conn: &mut PgConnection, key: i64) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(key)
            .fetch_one(conn)
            .await
    }
}
