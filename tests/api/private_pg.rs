//! A private Postgres cluster for tests that terminate, stop or restart the database — never the
//! machine's shared server, which other tests use. It is made the way `aex init` makes the
//! embedded default (the machine's initdb and pg_ctl, a free loopback port, owned by `postgres`
//! when running as root), and stopped and removed when dropped, even when the test fails.

use std::sync::Arc;

use aex::cli::embedded::EmbeddedPg;

pub struct PrivatePg {
    pg: Arc<EmbeddedPg>,
    /// A URL for creating databases on the cluster.
    pub admin_url: String,
    _home: tempfile::TempDir,
}

/// Runs a blocking `pg_ctl`/`initdb` step off the runtime's threads.
async fn blocking<T: Send + 'static>(
    pg: &Arc<EmbeddedPg>,
    step: impl FnOnce(&EmbeddedPg) -> anyhow::Result<T> + Send + 'static,
) -> T {
    let pg = Arc::clone(pg);
    tokio::task::spawn_blocking(move || step(&pg))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("private Postgres: {e:#}"))
}

impl PrivatePg {
    pub async fn start() -> PrivatePg {
        let home = tempfile::tempdir().unwrap();
        let pg = Arc::new(EmbeddedPg::for_home(home.path()).expect("Postgres binaries and user"));
        // From here on, Drop removes whatever was made.
        let mut private = PrivatePg {
            pg,
            admin_url: String::new(),
            _home: home,
        };
        let url = blocking(&private.pg, |pg| {
            let url = pg.create()?;
            pg.start()?;
            Ok(url)
        })
        .await;
        let (base, _) = url.rsplit_once('/').unwrap();
        private.admin_url = format!("{base}/postgres");
        private
    }

    /// `pg_ctl stop -m fast`: every session is terminated, open transactions roll back.
    pub async fn stop(&self) {
        blocking(&self.pg, EmbeddedPg::stop).await;
    }

    /// Starts the stopped cluster again on the same port; returns once it accepts connections.
    pub async fn restart(&self) {
        blocking(&self.pg, EmbeddedPg::start).await;
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.pg.stop();
        let _ = std::fs::remove_dir_all(&self.pg.root);
    }
}
