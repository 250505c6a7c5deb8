//! Three replicas on one database, started by deploy/local-cluster.sh: one budget, one rate
//! limit, one config and one revocation set for all of them.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use aex::dev::mock_upstream::{self, MockControl};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{burst, create_agent_at, models_toml, poll, TestDb, KEY, PATIENCE};

struct Cluster {
    home: PathBuf,
    ports: Vec<u16>,
}

impl Cluster {
    fn script(&self, action: &str) -> std::process::Output {
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/deploy/local-cluster.sh"
            ))
            .arg(action)
            .env("AEX_HOME", &self.home)
            .env("BIN", env!("CARGO_BIN_EXE_aex"))
            .env("PORTS", ports.join(" "))
            .output()
            .expect("script runs")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.script("down");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls each replica in turn until `seen(base)` holds; the milliseconds from the call until each
/// showed it. The replicas resync only hourly (`write_config`), so what they show came by
/// notification; the bound is generous for a loaded machine, and the times are printed.
async fn seen_on_every<F, Fut>(bases: &[String], what: &str, seen: F) -> Vec<u128>
where
    F: Fn(&str) -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    let mut ms = Vec::new();
    for base in bases {
        let what = format!("{what} on {base}");
        poll(&what, PATIENCE, || {
            let seen = seen(base);
            async move { seen.await.then_some(()) }
        })
        .await;
        ms.push(started.elapsed().as_millis());
    }
    ms
}

fn write_config(home: &Path, db: &TestDb, models: &Path) {
    let config = format!(
        "database_url = \"{}\"\nmodels_file = \"{}\"\n[auth]\nrevocation_resync_seconds = 3600\n[auth.keys]\nk1 = \"{KEY}\"\n[cluster]\nheartbeat_seconds = 1\nstale_after_seconds = 5\n[db]\nmax_connections = 10\n",
        db.url,
        models.display()
    );
    std::fs::write(home.join("aex.toml"), config).unwrap();
}

#[tokio::test]
async fn three_replicas_share_one_budget_one_rate_limit_one_config_and_one_revocation_set() {
    let db = TestDb::create().await;
    let mock = Arc::new(MockControl::default());
    mock.delay_ms.store(30, std::sync::atomic::Ordering::SeqCst);
    let mock_addr = mock_upstream::spawn("127.0.0.1:0".parse().unwrap(), Arc::clone(&mock))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_path_buf();
    let models = home.join("models.toml");
    std::fs::write(&models, models_toml(mock_addr)).unwrap();
    write_config(&home, &db, &models);
    let cluster = Cluster {
        home: home.clone(),
        ports: vec![free_port(), free_port(), free_port()],
    };
    let up = cluster.script("up");
    assert!(
        up.status.success(),
        "{}{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    let bases: Vec<String> = cluster
        .ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let http = reqwest::Client::new();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();

    let signer = aex::auth::TokenSigner::new(&{
        let mut a = aex::config::AuthSettings::default();
        a.keys.insert("k1".into(), aex::config::Secret::new(KEY));
        a
    });
    let operator = signer
        .issue("op", aex::domain::Scope::Operator, None, None, None)
        .unwrap()
        .token;
    // One budget across three replicas: never overspent.
    let budgeted = create_agent_at(&bases[0], &operator, "budgeted", "0.010000", json!({})).await;
    let results = burst(&bases, &budgeted.token, 90).await;
    let admitted = results.iter().filter(|s| **s == StatusCode::OK).count();
    assert!(results
        .iter()
        .all(|s| *s == StatusCode::OK || *s == StatusCode::PAYMENT_REQUIRED));
    let (spent, reserved, budget): (i64, i64, i64) = sqlx::query_as(
        "SELECT spent_micro_usd, reserved_micro_usd, budget_micro_usd FROM agents WHERE id = $1",
    )
    .bind(budgeted.id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        spent <= budget && reserved == 0,
        "spent {spent} of {budget}, reserved {reserved}"
    );

    // One rate limit: exactly the RPM is admitted across all three.
    let limited =
        create_agent_at(&bases[0], &operator, "limited", "1.00", json!({"rpm": 15})).await;
    let results = burst(&bases, &limited.token, 45).await;
    let rpm_admitted = results.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(rpm_admitted, 15);

    // A config version reaches every replica.
    let before: i64 = http
        .get(format!("{}/health", bases[2]))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["config_version"]
        .as_i64()
        .unwrap();
    let text = models_toml(mock_addr) + "\n# reloaded\n";
    let mut tx = pool.begin().await.unwrap();
    let version = aex::store::config_versions::insert_version(
        &mut tx,
        &text,
        &aex::config::RoutingTable::parse(&text, 0)
            .unwrap()
            .content_hash,
        "test",
        None,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(version > before);
    let reload_ms = seen_on_every(&bases, &format!("config version {version}"), |base| {
        let health = http.get(format!("{base}/health"));
        async move {
            let v: Value = health.send().await.unwrap().json().await.unwrap();
            v["config_version"].as_i64() == Some(version)
        }
    })
    .await;

    // A revocation reaches every replica.
    let jti: uuid::Uuid =
        sqlx::query_scalar("SELECT jti FROM api_tokens WHERE subject = 'limited'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let mut tx = pool.begin().await.unwrap();
    aex::store::tokens::revoke_token(&mut tx, None, jti, "test")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let revoke_ms = seen_on_every(&bases, "the revocation", |base| {
        let models = http.get(format!("{base}/v1/models"));
        let models = models.bearer_auth(&limited.token);
        async move { models.send().await.unwrap().status() == StatusCode::UNAUTHORIZED }
    })
    .await;
    println!(
        "three replicas: budget {budget} micro-USD, 90 requests, {admitted} admitted, spent {spent}; \
         rpm 15, 45 requests, {rpm_admitted} admitted; config reload seen after {reload_ms:?} ms; revocation after {revoke_ms:?} ms"
    );

    let down = cluster.script("down");
    assert!(down.status.success());
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM replicas WHERE stopped_at IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(live, 0, "every replica deregistered");
    let report = aex::admin::audit::audit(&pool, 5, &signer_keys())
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    pool.close().await;
}

fn signer_keys() -> std::collections::BTreeMap<String, aex::config::Secret> {
    [("k1".to_owned(), aex::config::Secret::new(KEY))]
        .into_iter()
        .collect()
}
