//! The connection pool and migrations.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::DbSettings;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A pool that connects lazily, so a server can start (and answer `/ready` with 503) while the
/// database is down, and reconnects by itself when it returns.
pub fn lazy_pool(url: &str, settings: &DbSettings) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    let options = options.application_name("aex");
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(0)
        // Connections opened for a burst are given back to Postgres, whose connection slots are
        // shared by every replica.
        .idle_timeout(Duration::from_secs(60))
        // No ping before every acquire: it is a round trip per transaction (two per governed
        // call). A connection the server dropped fails its first statement instead and is
        // discarded; callers already treat that as the database being unavailable.
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(settings.acquire_timeout_seconds))
        .connect_lazy_with(options))
}

/// Connects and checks the connection once.
pub async fn connect(url: &str, settings: &DbSettings) -> Result<PgPool, sqlx::Error> {
    let pool = lazy_pool(url, settings)?;
    sqlx::query("SELECT 1").execute(&pool).await?;
    Ok(pool)
}

/// Applies pending migrations. sqlx takes a session advisory lock, so replicas do not race.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Whether every embedded migration has been applied (and no unknown one has).
pub async fn schema_is_current(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let applied: Vec<i64> = match sqlx::query_scalar(
        "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(pool)
    .await
    {
        Ok(v) => v,
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => return Ok(false),
        Err(e) => return Err(e),
    };
    let expected: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    Ok(applied == expected)
}
