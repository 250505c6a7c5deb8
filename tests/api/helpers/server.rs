//! The real server bound to port 0 against a fresh database, with the mock provider on loopback:
//! [`spawn_app`] and its variants, and [`TestApp`], the handle a test drives it through.

use std::path::PathBuf;
use std::sync::Arc;

use aex::auth::TokenSigner;
use aex::config::{Secret, Settings};
use aex::dev::mock_upstream::{self, MockControl};
use aex::domain::Scope;
use aex::server::{self, ServerHandle};
use reqwest::StatusCode;
use sqlx::PgPool;

use super::database::TestDb;
use super::poll::{poll, PATIENCE};
use super::upstream::models_toml;

pub const KEY: &str = "test-signing-key-0123456789abcdef0123456789";

pub struct TestApp {
    pub base: String,
    pub settings: Settings,
    pub pool: PgPool,
    pub mock: Arc<MockControl>,
    pub server: Option<ServerHandle>,
    pub signer: TokenSigner,
    pub operator_token: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    // Dropped last: the database outlives the server and pool above.
    pub db: TestDb,
}

/// Settings for a server on a free port against `db`.
pub fn test_settings(db: &TestDb, models_file: PathBuf) -> Settings {
    let mut s = Settings {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url: Some(Secret::new(db.url.clone())),
        models_file: Some(models_file),
        ..Settings::default()
    };
    s.db.max_connections = 16;
    s.auth.keys.insert("k1".into(), Secret::new(KEY));
    s.cluster.heartbeat_seconds = 1;
    s.cluster.stale_after_seconds = 5;
    s.cluster.drain_timeout_seconds = 10;
    // An hour: a revocation or a config version a test sees arrive can only have come by
    // notification (or the resync after a lost listener connection), never by the periodic one.
    s.auth.revocation_resync_seconds = 3600;
    s
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_full("", tweak).await
}

/// An app whose routing table also has `extra` (TOML; `{mock}` stands for the mock's address).
pub async fn spawn_app_with_models(extra: &str) -> TestApp {
    spawn_app_full(extra, |_| {}).await
}

async fn spawn_app_full(extra_models: &str, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on(TestDb::create().await, extra_models, tweak).await
}

/// An app on a database the caller created (on a private server, for instance).
pub async fn spawn_app_on(
    db: TestDb,
    extra_models: &str,
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    let mock = Arc::new(MockControl::default());
    let mock_addr = mock_upstream::spawn("127.0.0.1:0".parse().expect("addr"), Arc::clone(&mock))
        .await
        .expect("mock");
    let dir = tempfile::tempdir().expect("tempdir");
    let models = dir.path().join("models.toml");
    let extra = extra_models.replace("{mock}", &mock_addr.to_string());
    std::fs::write(&models, models_toml(mock_addr) + &extra).expect("models file");
    let mut settings = test_settings(&db, models);
    // Process plugins come from here only (SPEC §8); tests write their scripts into it.
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugin dir");
    settings.tools.plugin_dir = Some(plugins);
    tweak(&mut settings);
    let signer = TokenSigner::new(&settings.auth);
    let server = server::start(settings.clone())
        .await
        .expect("server starts");
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    wait_ready(&http, &base).await;
    let pool = PgPool::connect(&db.url).await.expect("test pool");
    let operator_token = signer
        .issue("test-operator", Scope::Operator, None, None, None)
        .expect("token")
        .token;
    TestApp {
        base,
        settings,
        pool,
        mock,
        server: Some(server),
        signer,
        operator_token,
        http,
        dir,
        db,
    }
}

/// Polls `/ready` until 200 (bounded).
pub async fn wait_ready(http: &reqwest::Client, base: &str) {
    poll(
        &format!("the server at {base} to be ready"),
        PATIENCE,
        || async {
            let r = http.get(format!("{base}/ready")).send().await.ok()?;
            (r.status() == StatusCode::OK).then_some(())
        },
    )
    .await;
}

impl TestApp {
    /// Another server instance on the same database and routing table (a second replica).
    pub async fn spawn_replica(&self) -> (ServerHandle, String) {
        let server = server::start(self.settings.clone())
            .await
            .expect("replica starts");
        let base = format!("http://{}", server.addr);
        wait_ready(&self.http, &base).await;
        (server, base)
    }
}
