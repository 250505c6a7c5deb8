//! The money transactions' driver (issue 17, item 3): a deadpool-postgres pool of tokio-postgres
//! connections, on which the hold (`store::holds`) and the settlement (`store::settlements`) send
//! their statements pipelined — several statements per round trip — which sqlx cannot do.
//! Measured with bench/driver.rs on a 2-core machine: +38–44% transactions per second at c=16 and
//! c=64 and 11–13% less Postgres CPU per request than the same statements on sqlx. Everything
//! else stays on the sqlx pool (`store::db`).
//!
//! The pool is built from the same URL and settings as the sqlx pool: the connection target and
//! `sslmode` are resolved by sqlx's own parser and [`super::db::plain_on_loopback`], so both pools
//! connect alike (TLS in `store::hot_tls`). It connects lazily, like the sqlx pool.
//!
//! Errors are handed back as `sqlx::Error`s (unreachable database → `Io`/`PoolTimedOut`, server
//! errors → `Database` with their SQLSTATE), so callers classify them exactly as before
//! (`gateway::error::is_unavailable`).

use std::borrow::Cow;
use std::time::Duration;

use deadpool_postgres::{
    ClientWrapper, Hook, HookError, Manager, ManagerConfig, Object, Pool, PoolError,
    RecyclingMethod, Runtime,
};
use sqlx::postgres::PgSslMode;
use tokio_postgres::Statement;

use super::db::plain_on_loopback;
use super::{hot_pgpass, hot_tls};
use crate::config::DbSettings;

/// The pool the money transactions run on.
#[derive(Clone)]
pub struct HotPool {
    pool: Pool,
}

impl std::fmt::Debug for HotPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotPool")
            .field("status", &self.pool.status())
            .finish()
    }
}

/// A pool that connects on first use (so a server starts while the database is down) and
/// replaces a connection the server dropped on its next checkout.
pub fn lazy_pool(url: &str, settings: &DbSettings) -> Result<HotPool, sqlx::Error> {
    let options = plain_on_loopback(url.parse()?);
    let mut config = tokio_postgres::Config::new();
    config
        .user(options.get_username())
        .dbname(options.get_database().unwrap_or(options.get_username()))
        .port(options.get_port())
        .application_name("aex")
        .connect_timeout(Duration::from_secs(settings.acquire_timeout_seconds));
    match options.get_socket() {
        Some(dir) => config.host_path(dir),
        None => config.host(options.get_host()),
    };
    let password = password(url)?.or_else(|| {
        // As sqlx matches it: the URL's database, empty when it names none.
        let (host, port) = (options.get_host(), options.get_port());
        let database = options.get_database().unwrap_or_default();
        hot_pgpass::password(host, port, database, options.get_username())
    });
    if let Some(password) = password {
        config.password(password);
    }
    // The URL's own `options` set enable_seqscan themselves, or the pool does (`plan_by_index`).
    let plan_by_index = !options
        .get_options()
        .is_some_and(|o| o.contains("enable_seqscan"));
    if let Some(o) = options.get_options() {
        config.options(o);
    }
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match options.get_ssl_mode() {
        // sqlx connects without TLS for `allow` too.
        PgSslMode::Disable | PgSslMode::Allow => {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            Manager::from_config(config, tokio_postgres::NoTls, manager_config)
        }
        mode => {
            let (ssl_mode, tls) = hot_tls::connector(mode, &tls_files(url)?)?;
            config.ssl_mode(ssl_mode);
            Manager::from_config(config, tls, manager_config)
        }
    };
    let wait = Duration::from_secs(settings.acquire_timeout_seconds);
    let mut builder = Pool::builder(manager);
    if plan_by_index {
        builder = builder.post_create(Hook::async_fn(|client: &mut ClientWrapper, _| {
            Box::pin(async move {
                client
                    .batch_execute(PLAN_BY_INDEX)
                    .await
                    .map_err(HookError::Backend)
            })
        }));
    }
    let pool = builder
        .max_size(usize::try_from(settings.money_pool_size()).unwrap_or(usize::MAX))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(wait))
        .recycle_timeout(Some(wait))
        .build()
        .map_err(|e| sqlx::Error::Configuration(e.into()))?;
    Ok(HotPool { pool })
}

/// Set on each new connection of the money pool. Every statement on it is a keyed lookup whose
/// plan is cached per connection (prepared statements, plpgsql): a plan made while a table was
/// small (a new database, or autovacuum off so that no ANALYZE ever replans) kept scanning the
/// table whole as it grew — agents, tenants, rate windows, even the executions. Off, the planner
/// takes the index wherever there is one. (A session setting rather than a startup `options`,
/// which a connection pooler in front of Postgres may refuse.)
const PLAN_BY_INDEX: &str = "SET enable_seqscan = off";

/// The URL's password (percent-decoded), else `PGPASSWORD`, as sqlx takes it (then the password
/// file, `store::hot_pgpass`).
fn password(url: &str) -> Result<Option<String>, sqlx::Error> {
    let parsed = url::Url::parse(url).map_err(|e| sqlx::Error::Configuration(e.into()))?;
    Ok(match parsed.password() {
        Some(p) => Some(
            percent_encoding::percent_decode_str(p)
                .decode_utf8()
                .map_err(|e| sqlx::Error::Configuration(e.into()))?
                .into_owned(),
        ),
        None => std::env::var("PGPASSWORD").ok(),
    })
}

/// `sslrootcert`, `sslcert` and `sslkey` of the URL (else `PGSSLROOTCERT`…), as sqlx reads them.
fn tls_files(url: &str) -> Result<hot_tls::TlsFiles, sqlx::Error> {
    let parsed = url::Url::parse(url).map_err(|e| sqlx::Error::Configuration(e.into()))?;
    let param = |name: &str, env: &str| {
        parsed
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .or_else(|| std::env::var(env).ok())
    };
    Ok(hot_tls::TlsFiles {
        root_cert: param("sslrootcert", "PGSSLROOTCERT"),
        client_cert: param("sslcert", "PGSSLCERT"),
        client_key: param("sslkey", "PGSSLKEY"),
    })
}

impl HotPool {
    /// Closes the pooled connections unused for `idle` or longer and says how many it closed.
    /// Postgres's connection slots are shared by every replica: a burst's connections go back to
    /// it, as the sqlx pool's `idle_timeout` gives back its own.
    pub fn close_idle(&self, idle: Duration) -> usize {
        self.pool
            .retain(|_, metrics| metrics.last_used() < idle)
            .removed
            .len()
    }

    /// A connection for one transaction.
    pub async fn get(&self) -> Result<HotConn, sqlx::Error> {
        let client = self.pool.get().await.map_err(pool_error)?;
        Ok(HotConn {
            client: Some(client),
            in_transaction: false,
        })
    }
}

/// A pooled connection that is given back only when no transaction is open on it: a connection
/// dropped mid-transaction (an error, a cancelled request) is closed instead, which rolls the
/// transaction back on the server.
pub struct HotConn {
    client: Option<Object>,
    in_transaction: bool,
}

impl HotConn {
    /// The connection (only `Drop` takes it away).
    pub(crate) fn client(&self) -> Result<&deadpool_postgres::ClientWrapper, sqlx::Error> {
        self.client.as_deref().ok_or(sqlx::Error::PoolClosed)
    }

    /// The statement `sql`, prepared once per connection.
    pub(crate) async fn prepare(&self, sql: &str) -> Result<Statement, sqlx::Error> {
        self.client()?.prepare_cached(sql).await.map_err(pg_error)
    }

    /// Marks a transaction as open: sent by the caller in its first round trip, pipelined with
    /// its first statements.
    pub(crate) fn begun(&mut self) {
        self.in_transaction = true;
    }

    /// Marks the transaction as ended (its COMMIT or ROLLBACK answered).
    pub(crate) fn ended(&mut self) {
        self.in_transaction = false;
    }

    /// The transaction's last statement and COMMIT, pipelined in one round trip; the connection
    /// goes back to the pool afterwards.
    pub(crate) async fn execute_and_commit(
        &mut self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, sqlx::Error> {
        self.execute_all_and_commit(&[(sql, params)]).await
    }

    /// The transaction's last statements, in order, and COMMIT, pipelined in one round trip;
    /// what the last one wrote.
    pub(crate) async fn execute_all_and_commit(
        &mut self,
        statements: &[(&str, &[&(dyn tokio_postgres::types::ToSql + Sync)])],
    ) -> Result<u64, sqlx::Error> {
        let mut prepared = Vec::with_capacity(statements.len());
        for (sql, _) in statements {
            prepared.push(self.prepare(sql).await?);
        }
        let commit = self.prepare(COMMIT).await?;
        let client = self.client()?;
        // Sent in the order first polled: the statements in order, then COMMIT.
        let executes = prepared
            .iter()
            .zip(statements)
            .map(|(statement, (_, params))| client.execute(statement, params));
        let (written, _) = tokio::try_join!(
            futures::future::try_join_all(executes),
            client.execute(&commit, &[])
        )
        .map_err(pg_error)?;
        self.ended();
        Ok(written.last().copied().unwrap_or(0))
    }

    /// Rolls the open transaction back.
    pub(crate) async fn rollback(&mut self) -> Result<(), sqlx::Error> {
        let rollback = self.prepare("ROLLBACK").await?;
        self.client()?
            .execute(&rollback, &[])
            .await
            .map_err(pg_error)?;
        self.ended();
        Ok(())
    }
}

impl Drop for HotConn {
    fn drop(&mut self) {
        if self.in_transaction {
            if let Some(client) = self.client.take() {
                // Out of the pool: the connection closes, the server rolls back.
                drop(Object::take(client));
            }
        }
    }
}

/// The SQL of the transaction brackets, pipelined as statements of their own.
pub(crate) const BEGIN: &str = "BEGIN";
pub(crate) const COMMIT: &str = "COMMIT";

/// A tokio-postgres error as the `sqlx::Error` the callers classify.
pub fn pg_error(e: tokio_postgres::Error) -> sqlx::Error {
    if let Some(db) = e.as_db_error() {
        return sqlx::Error::Database(Box::new(HotDbError {
            message: db.message().to_owned(),
            code: db.code().code().to_owned(),
            constraint: db.constraint().map(str::to_owned),
            source: e,
        }));
    }
    // Everything else a connection reports is the connection failing: closed, I/O, a timeout.
    sqlx::Error::Io(std::io::Error::other(e))
}

fn pool_error(e: PoolError) -> sqlx::Error {
    match e {
        PoolError::Timeout(_) => sqlx::Error::PoolTimedOut,
        PoolError::Closed => sqlx::Error::PoolClosed,
        PoolError::Backend(e) => pg_error(e),
        other => sqlx::Error::Io(std::io::Error::other(other.to_string())),
    }
}

/// A server error, with what sqlx's own exposes to callers.
#[derive(Debug)]
struct HotDbError {
    message: String,
    code: String,
    constraint: Option<String>,
    source: tokio_postgres::Error,
}

impl std::fmt::Display for HotDbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.source)
    }
}

impl std::error::Error for HotDbError {}

impl sqlx::error::DatabaseError for HotDbError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(&self.code))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn constraint(&self) -> Option<&str> {
        self.constraint.as_deref()
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        use sqlx::error::ErrorKind;
        match self.code.as_str() {
            "23505" => ErrorKind::UniqueViolation,
            "23503" => ErrorKind::ForeignKeyViolation,
            "23502" => ErrorKind::NotNullViolation,
            "23514" => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_percent_decoded_and_plus_is_kept() {
        assert_eq!(
            password("postgres://u:a%40b+c@127.0.0.1/db")
                .unwrap()
                .as_deref(),
            Some("a@b+c")
        );
        assert_eq!(
            password("postgres://u:p%2Fw@127.0.0.1/db")
                .unwrap()
                .as_deref(),
            Some("p/w")
        );
    }
}
