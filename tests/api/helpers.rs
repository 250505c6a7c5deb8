//! The test harness: a fresh database per test, a loopback mock provider, and the real server
//! bound to port 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aex::auth::TokenSigner;
use aex::config::{Secret, Settings};
use aex::dev::mock_upstream::{self, MockControl};
use aex::domain::Scope;
use aex::server::{self, ServerHandle};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;

/// The server every test database is created on: `TEST_DATABASE_URL`, else the local one.
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database created for one test and dropped when the test ends (even if it fails).
pub struct TestDb {
    pub name: String,
    pub url: String,
    /// The server's admin URL the database was created through (and is dropped through).
    admin: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        Self::create_on(&admin_database_url()).await
    }

    /// A database on the server at `admin` (a URL naming any database the user may connect to).
    pub async fn create_on(admin: &str) -> TestDb {
        let name = format!("aex_test_{}", uuid::Uuid::new_v4().simple());
        let pool = PgPool::connect(admin)
            .await
            .expect("connect to the test Postgres server");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .expect("create test database");
        pool.close().await;
        let base = admin
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .expect("url has a database");
        TestDb {
            url: format!("{base}/{name}"),
            name,
            admin: admin.to_owned(),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = self.admin.clone();
        // Drop runs outside any runtime guarantee: use a thread with its own small runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                // Bounded: a server a fault test left stopped must not hold the test up.
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .acquire_timeout(Duration::from_secs(3))
                    .connect(&admin)
                    .await;
                if let Ok(pool) = pool {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&pool)
                        .await;
                    // The runtime role a test (or `aex init`) made for it: roles are
                    // cluster-wide.
                    let _ = sqlx::query(&format!("DROP ROLE IF EXISTS {name}_runtime"))
                        .execute(&pool)
                        .await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

pub const KEY: &str = "test-signing-key-0123456789abcdef0123456789";

/// The routing table the tests use, pointing at the mock.
pub fn models_toml(mock: SocketAddr) -> String {
    format!(
        r#"
[providers.mock]
kind = "openai"
base_url = "http://{mock}/v1"
timeout_seconds = 30

[providers.slow]
kind = "openai"
base_url = "http://{mock}/v1"
timeout_seconds = 1

[models."gpt-4o-mini"]
provider = "mock"
upstream_model = "mock-gpt-4o-mini"
input_usd_per_million = "0.15"
output_usd_per_million = "0.60"
max_output_tokens = 1000
capabilities = ["chat", "streaming", "tools", "vision", "responses"]

[models."pricey"]
provider = "mock"
upstream_model = "mock-pricey"
input_usd_per_million = "30"
output_usd_per_million = "60"
max_output_tokens = 100
capabilities = ["chat", "streaming", "responses"]

[models."slow-model"]
provider = "slow"
upstream_model = "mock-slow"
input_usd_per_million = "1"
output_usd_per_million = "2"
max_output_tokens = 100
capabilities = ["chat"]

[models."text-embedding-3-small"]
provider = "mock"
upstream_model = "mock-embedding"
input_usd_per_million = "0.02"
capabilities = ["embeddings"]
"#
    )
}

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
    s.auth.revocation_resync_seconds = 30;
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
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("{base}/ready")).send().await {
            if r.status() == StatusCode::OK {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server at {base} did not become ready");
}

/// An agent created through the admin API.
pub struct Agent {
    pub id: uuid::Uuid,
    pub token: String,
}

/// Creates an agent through the admin API of the server at `base`.
pub async fn create_agent_at(
    base: &str,
    operator_token: &str,
    name: &str,
    budget_usd: &str,
    extra: Value,
) -> Agent {
    let mut body = json!({"name": name, "budget_usd": budget_usd, "rpm": 100000});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let resp = reqwest::Client::new()
        .post(format!("{base}/admin/agents"))
        .bearer_auth(operator_token)
        .json(&body)
        .send()
        .await
        .expect("create agent");
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    let v: Value = resp.json().await.expect("json");
    Agent {
        id: v["agent"]["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("uuid"),
        token: v["token"].as_str().expect("token").to_owned(),
    }
}

/// Sends `count` chat requests at once, spread round-robin over the servers at `bases`; the
/// statuses in order.
pub async fn burst(bases: &[String], token: &str, count: usize) -> Vec<StatusCode> {
    let http = reqwest::Client::new();
    futures::future::join_all((0..count).map(|i| {
        let req = http
            .post(format!("{}/v1/chat/completions", bases[i % bases.len()]))
            .bearer_auth(token)
            .json(&hello());
        async move { req.send().await.expect("request sent").status() }
    }))
    .await
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

    pub async fn create_agent(&self, name: &str, budget_usd: &str, extra: Value) -> Agent {
        create_agent_at(&self.base, &self.operator_token, name, budget_usd, extra).await
    }

    pub async fn chat(&self, token: &str, body: Value) -> reqwest::Response {
        self.post("/v1/chat/completions", token, body, &[]).await
    }

    pub async fn post(
        &self,
        path: &str,
        token: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("request sent")
    }

    /// A GET, with a bearer token when given.
    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request sent")
    }

    /// Starts a chat completion on its own task, to look at the books while it is in flight.
    pub fn spawn_chat(&self, token: &str) -> tokio::task::JoinHandle<reqwest::Response> {
        let req = self
            .http
            .post(format!("{}/v1/chat/completions", self.base))
            .bearer_auth(token)
            .json(&hello());
        tokio::spawn(async move { req.send().await.expect("request sent") })
    }

    /// Rewrites an event's stored payload (`regexp_replace(payload, pattern, replacement)`) as a
    /// superuser would to forge the books: with the append-only trigger disabled for the edit.
    pub async fn forge_event(&self, id: i64, pattern: &str, replacement: &str) {
        let mut tx = self.pool.begin().await.expect("begin");
        sqlx::query("ALTER TABLE event_log DISABLE TRIGGER event_log_append_only")
            .execute(&mut *tx)
            .await
            .expect("disable trigger");
        sqlx::query("UPDATE event_log SET payload = regexp_replace(payload, $2, $3) WHERE id = $1")
            .bind(id)
            .bind(pattern)
            .bind(replacement)
            .execute(&mut *tx)
            .await
            .expect("edit event");
        sqlx::query("ALTER TABLE event_log ENABLE TRIGGER event_log_append_only")
            .execute(&mut *tx)
            .await
            .expect("enable trigger");
        tx.commit().await.expect("commit");
    }

    /// `(spent, reserved, budget)` of an agent, read from the database.
    pub async fn books(&self, agent: uuid::Uuid) -> (i64, i64, i64) {
        sqlx::query_as("SELECT spent_micro_usd, reserved_micro_usd, budget_micro_usd FROM agents WHERE id = $1")
            .bind(agent)
            .fetch_one(&self.pool)
            .await
            .expect("agent books")
    }

    pub async fn execution_states(&self, agent: uuid::Uuid) -> Vec<String> {
        sqlx::query_scalar("SELECT state FROM executions WHERE agent_id = $1 ORDER BY created_at")
            .bind(agent)
            .fetch_all(&self.pool)
            .await
            .expect("states")
    }

    pub async fn event_types(&self, agent: uuid::Uuid) -> Vec<String> {
        sqlx::query_scalar("SELECT event_type FROM event_log WHERE agent_id = $1 ORDER BY seq")
            .bind(agent)
            .fetch_all(&self.pool)
            .await
            .expect("events")
    }

    /// Runs the full audit (SPEC §15) and fails the test on any violation.
    pub async fn assert_books_audit(&self) {
        let report = aex::admin::audit::audit(&self.pool, 5, &self.settings.auth.keys)
            .await
            .expect("audit runs");
        assert!(
            report.ok,
            "audit failed: {}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
        self.assert_payloads_canonical().await;
    }

    /// Every ledger payload is stored in the one canonical form, whether the gateway wrote it or
    /// a SQL function (settlement) composed it: re-serialising it changes nothing.
    pub async fn assert_payloads_canonical(&self) {
        let payloads: Vec<(i64, String)> = sqlx::query_as("SELECT id, payload FROM event_log")
            .fetch_all(&self.pool)
            .await
            .expect("payloads");
        for (id, text) in payloads {
            let value: Value = serde_json::from_str(&text).expect("payload is JSON");
            assert_eq!(
                aex::ledger::encoding::canonical_json(&value),
                text,
                "event {id}"
            );
        }
    }
}

/// The cost the gateway must charge for a response's usage, at gpt-4o-mini's prices.
pub fn mini_cost(usage: &Value) -> i64 {
    let p = usage["prompt_tokens"].as_i64().expect("prompt_tokens");
    let c = usage["completion_tokens"]
        .as_i64()
        .expect("completion_tokens");
    (p * 150_000 + 999_999) / 1_000_000 + (c * 600_000 + 999_999) / 1_000_000
}

pub fn hello() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello to the ledger"}]})
}

impl TestApp {
    /// An admin API call with `token`: the status and the JSON body (`Null` when empty).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("admin request sent");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `admin` with a POST body.
    pub async fn admin_post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.admin(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    /// A count (or any one `bigint`) read from the test database.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .expect("count query")
    }

    /// `admin` with the operator token, asserting the expected status.
    pub async fn op(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        expect: StatusCode,
    ) -> Value {
        let (status, value) = self.admin(method, path, &self.operator_token, body).await;
        assert_eq!(status, expect, "{path}: {value}");
        value
    }

    /// Creates a tenant and an admin token for it; returns `(tenant id, admin token)`.
    pub async fn tenant_with_admin(&self, name: &str, extra: Value) -> (String, String) {
        let mut body = json!({"name": name});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let t = self
            .op(
                reqwest::Method::POST,
                "/admin/tenants",
                Some(body),
                StatusCode::CREATED,
            )
            .await;
        let id = t["id"].as_str().expect("tenant id").to_owned();
        let issued = self
            .op(
                reqwest::Method::POST,
                &format!("/admin/tokens?tenant_id={id}"),
                Some(json!({"scope": "admin", "subject": format!("{name}-admin")})),
                StatusCode::CREATED,
            )
            .await;
        (id, issued["token"].as_str().expect("token").to_owned())
    }

    /// The latest ledger event of one type for an execution, its payload parsed.
    pub async fn ledger_event(&self, execution_id: &str, event_type: &str) -> Value {
        let payload: String = sqlx::query_scalar(
            "SELECT payload FROM event_log WHERE execution_id = $1 AND event_type = $2 \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(execution_id)
        .bind(event_type)
        .fetch_one(&self.pool)
        .await
        .unwrap_or_else(|e| panic!("no {event_type} event for {execution_id}: {e}"));
        serde_json::from_str(&payload).unwrap()
    }

    /// The ledger events of one type, payloads parsed, in append order.
    pub async fn ledger_payloads(&self, event_type: &str) -> Vec<Value> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT payload FROM event_log WHERE event_type = $1 ORDER BY id")
                .bind(event_type)
                .fetch_all(&self.pool)
                .await
                .expect("ledger payloads");
        rows.iter()
            .map(|p| serde_json::from_str(p).expect("canonical JSON"))
            .collect()
    }
}
