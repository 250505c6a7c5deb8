//! The connection pool and migrations.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::PgPool;

use crate::config::DbSettings;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A pool that connects lazily, so a server can start (and answer `/ready` with 503) while the
/// database is down, and reconnects by itself when it returns.
pub fn lazy_pool(url: &str, settings: &DbSettings) -> Result<PgPool, sqlx::Error> {
    let options = plain_on_loopback(url.parse()?).application_name("aex");
    Ok(PgPoolOptions::new()
        .max_connections(settings.general_pool_size())
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

/// `sslmode=prefer` (also the default when the URL names none) or `allow` to a server on this
/// machine (a loopback address, `localhost` or a Unix socket) connects without TLS: `prefer` only
/// asks for TLS when the server offers it, and a server with `ssl = on` (Debian's default) would
/// otherwise encrypt every round trip of the hot path, on both sides, for a connection that never
/// leaves the machine. Measured with `cargo run --release --example driver-bench` (bench/driver.rs,
/// `sqlx` against `sqlx-nossl`). `require` and the `verify-*` modes are kept as written.
pub fn plain_on_loopback(options: PgConnectOptions) -> PgConnectOptions {
    match options.get_ssl_mode() {
        PgSslMode::Prefer | PgSslMode::Allow if on_this_machine(&options) => {
            options.ssl_mode(PgSslMode::Disable)
        }
        _ => options,
    }
}

/// Whether the Postgres of `url` runs on this machine (a loopback address, `localhost` or a Unix
/// socket); `false` for a URL that does not parse.
pub fn is_on_this_machine(url: &str) -> bool {
    url.parse::<PgConnectOptions>()
        .is_ok_and(|options| on_this_machine(&options))
}

fn on_this_machine(options: &PgConnectOptions) -> bool {
    options.get_socket().is_some() || is_loopback_host(options.get_host())
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.starts_with('/')
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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

/// The user a Postgres URL connects as.
pub fn url_user(url: &str) -> Option<String> {
    let options: PgConnectOptions = url.parse().ok()?;
    Some(options.get_username().to_owned())
}

/// Migrates as the owner (`owner_url`), then grants the runtime role of `runtime_url` what it
/// needs when it is another role (`aex_grant_runtime`, migrations/20261206500002). Returns the
/// role granted to, if any.
pub async fn migrate_as_owner(
    owner_url: &str,
    runtime_url: Option<&str>,
) -> anyhow::Result<Option<String>> {
    use anyhow::Context;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(owner_url)
        .await
        .context("cannot connect with the migration role")?;
    migrate(&pool).await.context("applying migrations")?;
    let owner = url_user(owner_url);
    let runtime = runtime_url
        .and_then(url_user)
        .filter(|r| Some(r) != owner.as_ref());
    if let Some(role) = &runtime {
        sqlx::query("SELECT aex_grant_runtime($1)")
            .bind(role)
            .execute(&pool)
            .await
            .with_context(|| format!("granting the runtime role {role}"))?;
    }
    pool.close().await;
    Ok(runtime)
}

/// What the server's own role could do to the ledger (SPEC §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleCheck {
    pub superuser: bool,
    /// The role owns `event_log` (or is a member of its owner): it could disable its triggers.
    pub owns_ledger: bool,
}

impl RoleCheck {
    pub fn least_privilege(self) -> bool {
        !self.superuser && !self.owns_ledger
    }
}

pub async fn check_role(pool: &PgPool) -> Result<RoleCheck, sqlx::Error> {
    let (superuser, owns_ledger): (bool, bool) = sqlx::query_as(
        "SELECT r.rolsuper, pg_has_role(current_user, c.relowner, 'MEMBER') \
         FROM pg_roles r, pg_class c \
         WHERE r.rolname = current_user AND c.oid = 'event_log'::regclass",
    )
    .fetch_one(pool)
    .await?;
    Ok(RoleCheck {
        superuser,
        owns_ledger,
    })
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

/// Whether the database answers a trivial query (`/ready`).
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str) -> PgSslMode {
        let options: PgConnectOptions = url.parse().unwrap();
        plain_on_loopback(options).get_ssl_mode()
    }

    #[test]
    fn loopback_prefer_is_plain_and_every_other_mode_is_kept() {
        for url in [
            "postgres://u@127.0.0.1:5432/db",
            "postgres://u@127.0.0.1/db?sslmode=prefer",
            "postgres://u@localhost/db?sslmode=allow",
            "postgres://u@[::1]:5432/db",
            "postgres://u@127.9.0.1/db",
        ] {
            assert!(matches!(mode(url), PgSslMode::Disable), "{url}");
        }
        assert!(matches!(
            mode("postgres://u@127.0.0.1/db?sslmode=require"),
            PgSslMode::Require
        ));
        assert!(matches!(
            mode("postgres://u@localhost/db?sslmode=verify-full"),
            PgSslMode::VerifyFull
        ));
        assert!(matches!(
            mode("postgres://u@db.example:5432/db"),
            PgSslMode::Prefer
        ));
        assert!(matches!(
            mode("postgres://u@10.0.0.5/db?sslmode=prefer"),
            PgSslMode::Prefer
        ));
    }
}
