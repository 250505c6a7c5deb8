//! Building and running a server instance: state, routes, background tasks, startup gate and
//! graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::app_state::AppState;
use crate::cluster::listener::Followed;
use crate::cluster::{self, config_sync, housekeeping, sampler, Readiness};
use crate::config::{RoutingTable, Settings};
use crate::domain::ReplicaId;
use crate::http::router;
use crate::http::serve::{serve, ConnectionLimits};
use crate::store::db;

/// Tokio's worker threads for this process: `server.worker_threads` when set; otherwise one per
/// core the process may use (a cgroup's CPU quota counts), less one when `database_url` names a
/// Postgres on this machine and there are at least two. A governed call is mostly Postgres's
/// work, and a worker that wakes to find the other core busy with Postgres only adds wake-ups
/// between threads. On the 2-core bench machine (bench/ab.sh, three rounds, Postgres on
/// loopback), one worker against two: AEX's CPU per call 292–305 µs against 362–402 at 1,000
/// calls/s open loop and 229–240 against 258–274 at 1,500; p50 at one client 1.65–1.69 ms
/// against 1.79–3.07; the same throughput at 64 clients (2,750–3,009 against 2,821–3,134/s). The
/// price: at 1,500 calls/s the p50 is 9.1–10.2 ms against 8.2–8.9, one thread queueing what two
/// would have run side by side.
pub fn worker_threads(settings: &Settings) -> usize {
    if let Some(threads) = settings.server.worker_threads {
        return threads;
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let beside_postgres = settings
        .database_url
        .as_ref()
        .is_some_and(|url| db::is_on_this_machine(url.expose()));
    if beside_postgres && cores >= 2 {
        cores - 1
    } else {
        cores
    }
}

/// A running server.
pub struct ServerHandle {
    pub addr: SocketAddr,
    /// The separate metrics address, when `metrics.listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    /// Every long-lived handle of the server (its control path, readiness, observations).
    pub state: AppState,
    stop: CancellationToken,
    join: JoinHandle<anyhow::Result<()>>,
}

impl ServerHandle {
    /// Asks the server to drain and stop, as SIGTERM does.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Waits for the server to finish (after [`Self::shutdown`] or a signal).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.join.await.context("server task panicked")?
    }
}

/// Binds `settings.listen` and starts serving. Startup work that needs the database (migrations,
/// config, registration, ledger gate) runs in the background and is retried until the database
/// answers; until then `/ready` is 503 and governed routes answer 503 `unavailable`.
pub async fn start(settings: Settings) -> anyhow::Result<ServerHandle> {
    let url = settings
        .database_url
        .clone()
        .context("no database configured: set database_url / AEX_DATABASE_URL or run `aex init`")?;
    if settings.auth.keys.is_empty() {
        anyhow::bail!("no signing key configured in [auth.keys] (run `aex init`)");
    }
    let pool = db::lazy_pool(url.expose(), &settings.db).context("invalid database URL")?;
    let hot =
        crate::store::hot::lazy_pool(url.expose(), &settings.db).context("invalid database URL")?;
    let settings = Arc::new(settings);
    let state = AppState::new(
        (pool, hot),
        Arc::clone(&settings),
        RoutingTable::default(),
        ReplicaId(uuid::Uuid::now_v7()),
    )?;
    crate::gateway::estimate::warm_up();
    state.gateway.tools.announce().await;
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match settings.metrics.listen {
        Some(at) => Some(
            TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at} (metrics.listen)"))?,
        ),
        None => None,
    };
    let stop = CancellationToken::new();
    let mut metrics_addr = None;
    if let Some(listener) = metrics_listener {
        let at = listener.local_addr()?;
        tracing::info!(addr = %at, "metrics listening");
        metrics_addr = Some(at);
        tokio::spawn(serve_metrics(listener, state.clone(), stop.clone()));
    }
    let join = tokio::spawn(run(listener, state.clone(), stop.clone()));
    tracing::info!(%addr, replica_id = %state.replica_id, "aex listening");
    Ok(ServerHandle {
        addr,
        metrics_addr,
        state,
        stop,
        join,
    })
}

/// The separate metrics port: `/metrics` only, until the server stops.
async fn serve_metrics(listener: TcpListener, state: AppState, stop: CancellationToken) {
    let limits = ConnectionLimits::from(&state.settings.server);
    let app = router::metrics_app(state);
    serve(listener, app, limits, async move { stop.cancelled().await }).await;
}

async fn run(
    listener: TcpListener,
    state: AppState,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let readiness = Arc::clone(&state.readiness);
    let background = CancellationToken::new();
    let startup = tokio::spawn(startup(state.clone(), background.clone()));

    let app = router::app(state.clone());
    let st = state;
    let grace = Duration::from_secs(st.settings.cluster.drain_grace_seconds);
    let (drain_started_tx, drain_started) = oneshot::channel();
    let drain_signal = {
        let stop = stop.clone();
        let readiness = Arc::clone(&readiness);
        async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = shutdown_signal() => {}
            }
            Readiness::set(&readiness.draining, true);
            if !grace.is_zero() {
                // Governed routes already answer 503; /ready tells the load balancer why.
                tracing::info!(
                    grace_seconds = grace.as_secs(),
                    "draining: /ready answers 503, still accepting connections"
                );
                tokio::time::sleep(grace).await;
            }
            tracing::info!("draining: no new connections");
            let _ = drain_started_tx.send(Instant::now());
        }
    };
    let limits = ConnectionLimits::from(&st.settings.server);
    let serve = serve(listener, app, limits, drain_signal);
    tokio::pin!(serve);
    let drain_timeout = Duration::from_secs(st.settings.cluster.drain_timeout_seconds);
    let (deadline, served) = tokio::select! {
        () = &mut serve => (Instant::now() + drain_timeout, true),
        Ok(started) = drain_started => (started + drain_timeout, false),
    };
    // In-flight requests, then the settlements they started, within the drain timeout.
    let served = served || drain(&st, deadline, &mut serve).await;
    // The metrics port closes with the main one.
    stop.cancel();
    let tasks = &st.gateway.tasks;
    tasks.close();
    if !(served && drain(&st, deadline, tasks.wait()).await) {
        tracing::warn!(
            remaining = tasks.len(),
            "drain timeout: work still running is left to reconciliation"
        );
    }
    background.cancel();
    startup.abort();
    if Readiness::get(&readiness.registered) {
        if let Err(e) = cluster::replica::deregister(&st.pool, st.replica_id).await {
            tracing::warn!(error = %e, "could not deregister");
        }
    }
    st.pool.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// How long streams cut at the drain timeout get to settle what they delivered.
const SETTLE_AFTER_CUT: Duration = Duration::from_secs(5);

/// Waits for `work` until `deadline`. Past it, streams still relaying are cut (each commits
/// what it delivered, as when a client leaves) and `work` gets a short while more; false if it
/// still has not finished.
async fn drain(st: &AppState, deadline: Instant, work: impl Future<Output = ()>) -> bool {
    tokio::pin!(work);
    if tokio::time::timeout_at(deadline, &mut work).await.is_ok() {
        return true;
    }
    if !st.drain_expired.is_cancelled() {
        tracing::warn!("drain timeout: cutting the streams still relaying");
        st.drain_expired.cancel();
    }
    tokio::time::timeout(SETTLE_AFTER_CUT, work).await.is_ok()
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// The startup sequence of SPEC §12, retried until the database answers; then the background
/// tasks.
async fn startup(st: AppState, background: CancellationToken) {
    let mut delay = Duration::from_millis(200);
    loop {
        match startup_once(&st).await {
            Ok(()) => break,
            Err(e) if Readiness::get(&st.readiness.gate_failed) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "startup gate failed; staying unready"
                );
                if st.settings.ledger.refuse_start_on_failure {
                    tracing::error!("refuse_start_on_failure is set: exiting");
                    std::process::exit(3);
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "startup step failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    spawn_background(&st, &background);
}

/// The background tasks, until `stop` is cancelled.
fn spawn_background(st: &AppState, stop: &CancellationToken) {
    let settings = &st.settings;
    let secs = Duration::from_secs;
    // Registration just reached the database.
    let contact = Arc::new(cluster::replica::DbContact::default());
    contact.reached();
    tokio::spawn(cluster::replica::heartbeat_loop(
        st.pool.clone(),
        st.replica_id,
        secs(settings.cluster.heartbeat_seconds.max(1)),
        Arc::clone(&contact),
        stop.clone(),
    ));
    tokio::spawn(cluster::listener::listen_loop(
        followed(st),
        secs(settings.auth.revocation_resync_seconds.max(1)),
        stop.clone(),
    ));
    tokio::spawn(cluster::checkpointer::checkpoint_loop(
        st.pool.clone(),
        Arc::clone(settings),
        st.replica_id,
        stop.clone(),
    ));
    tokio::spawn(sampler::sample_loop(
        st.pool.clone(),
        Arc::clone(settings),
        Arc::clone(&st.observed),
        stop.clone(),
    ));
    tokio::spawn(sampler::verify_loop(
        st.pool.clone(),
        Arc::clone(settings),
        Arc::clone(&st.observed),
        stop.clone(),
    ));
    if settings.alerts.deliver {
        match deliverer(st) {
            Ok(d) => {
                tokio::spawn(crate::alerts::delivery::deliver_loop(d, stop.clone()));
            }
            Err(e) => tracing::error!(error = %e, "the webhook delivery worker cannot start"),
        }
    }
    tokio::spawn(cluster::alert_watch::watch_loop(
        st.pool.clone(),
        cluster::alert_watch::WatchTimes {
            every: secs(settings.cluster.reconcile_interval_seconds.max(1)),
            replica_stale_after: secs(settings.cluster.stale_after_seconds),
            hold_stale_after: secs(settings.metrics.stale_reservation_seconds),
        },
        Arc::clone(&contact),
        stop.clone(),
    ));
    tokio::spawn(cluster::reconciler::reconcile_loop(
        Arc::clone(&st.gateway.books),
        settings.cluster.clone(),
        contact,
        stop.clone(),
    ));
    tokio::spawn(housekeeping::housekeeping_loop(
        st.pool.clone(),
        st.gateway.books.hot.clone(),
        secs(settings.cluster.reconcile_interval_seconds.max(1)),
        settings.gateway.result_retention_hours,
        stop.clone(),
    ));
}

/// What the listener keeps current: the revocation set and the routing table.
fn followed(st: &AppState) -> Followed {
    Followed {
        pool: st.pool.clone(),
        revocations: Arc::clone(&st.revocations),
        routing: Arc::clone(&st.routing),
    }
}

/// The webhook delivery worker's handles: its client obeys the egress rules of `http` plugins.
fn deliverer(st: &AppState) -> Result<crate::alerts::delivery::Deliverer, reqwest::Error> {
    let settings = &st.settings;
    Ok(crate::alerts::delivery::Deliverer {
        pool: st.pool.clone(),
        client: crate::net_guard::GuardedClient::new(
            crate::net_guard::EgressPolicy::new(&settings.tools.allowed_http_hosts),
            Duration::from_secs(settings.alerts.delivery_timeout_seconds.max(1)),
        )?,
        settings: settings.alerts.clone(),
        replica: st.replica_id,
    })
}

/// SPEC §10: a server that could disable the ledger's triggers says so, at startup and in
/// `/ready`'s checks (it stays ready: the books are still right, only less protected).
async fn warn_unless_least_privilege(pool: &PgPool, readiness: &Readiness) -> anyhow::Result<()> {
    let role = db::check_role(pool).await?;
    if role.superuser {
        tracing::warn!(
            "connected to the database as a superuser: this server could disable the ledger's \
             append-only triggers; connect as a runtime role (database_url) and migrate as the \
             owner (migration_database_url)"
        );
    } else if role.owns_ledger {
        tracing::warn!(
            "connected to the database as the owner of event_log: this server could disable \
             the ledger's append-only triggers; connect as a runtime role (database_url) and \
             migrate as the owner (migration_database_url)"
        );
    }
    Readiness::set(&readiness.least_privilege, role.least_privilege());
    Ok(())
}

async fn startup_once(st: &AppState) -> anyhow::Result<()> {
    let (pool, readiness) = (&st.pool, &*st.readiness);
    if !Readiness::get(&readiness.schema_current) {
        let settings = &st.settings;
        if settings.auto_migrate {
            match &settings.migration_database_url {
                Some(owner) => {
                    let runtime = settings.database_url.as_ref().map(|u| u.expose());
                    db::migrate_as_owner(owner.expose(), runtime).await?;
                }
                None => db::migrate(pool).await.context("applying migrations")?,
            }
        }
        if !db::schema_is_current(pool).await? {
            anyhow::bail!("the database schema is not current: run `aex migrate`");
        }
        warn_unless_least_privilege(pool, readiness).await?;
        Readiness::set(&readiness.schema_current, true);
    }
    if !Readiness::get(&readiness.config_loaded) {
        config_sync::import_file(pool, &st.settings.models_file_path()).await?;
        cluster::listener::resync(&followed(st)).await?;
        Readiness::set(&readiness.config_loaded, true);
    }
    if !Readiness::get(&readiness.ledger_verified) && st.settings.ledger.verify_on_startup {
        let report =
            crate::ledger::verify::verify_since_checkpoint(pool, &st.settings.auth.keys).await?;
        st.observed.record_verification(&report);
        if let Some(bad) = &report.first_bad_event {
            Readiness::set(&readiness.gate_failed, true);
            anyhow::bail!(
                "ledger verification failed at event {} ({} seq {}): {}",
                bad.id,
                bad.chain_id,
                bad.seq,
                bad.problem
            );
        }
        if let Some(problem) = report.checkpoint.as_ref().and_then(|c| c.problem.as_ref()) {
            Readiness::set(&readiness.gate_failed, true);
            anyhow::bail!("ledger checkpoint rejected: {problem}");
        }
        tracing::info!(
            events = report.events,
            chains = report.chains,
            elapsed_ms = report.elapsed_ms,
            "ledger verified since the last checkpoint"
        );
        Readiness::set(&readiness.ledger_verified, true);
    }
    if !Readiness::get(&readiness.registered) {
        cluster::replica::register(pool, st.replica_id).await?;
        Readiness::set(&readiness.registered, true);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn with_database(url: &str) -> Settings {
        Settings {
            database_url: Some(Secret::new(url)),
            ..Settings::default()
        }
    }

    #[test]
    fn workers_leave_a_core_to_a_postgres_on_this_machine() {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let beside = if cores >= 2 { cores - 1 } else { cores };
        for local in [
            "postgres://aex@127.0.0.1:5432/aex",
            "postgres://aex@localhost/aex",
            "postgres://aex@[::1]/aex",
            "postgres:///aex?host=/var/run/postgresql",
        ] {
            assert_eq!(worker_threads(&with_database(local)), beside, "{local}");
        }
        let remote = with_database("postgres://aex@db.internal:5432/aex");
        assert_eq!(worker_threads(&remote), cores);
        assert_eq!(
            worker_threads(&Settings::default()),
            cores,
            "no database named"
        );
        let mut set = with_database("postgres://aex@127.0.0.1/aex");
        set.server.worker_threads = Some(3);
        assert_eq!(worker_threads(&set), 3, "the setting wins");
    }
}
