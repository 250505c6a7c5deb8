//! Undetectable truncation (issue 15, attack 6), tried as someone with the server's database
//! role and as someone with the owner's: checkpoints are append-only; the server's runtime role
//! cannot disable the ledger's trigger, delete, update or truncate; verification without a
//! checkpoint says a removed tail is undetectable; and a head archived outside the database
//! still catches a truncated tail after the owner deleted every checkpoint.

use std::process::Command;

use aex::config::Secret;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{hello, spawn_app_on, TestApp, TestDb};

/// The error Postgres gives `sql` run on `pool`; fails the test if it succeeds.
async fn refused(pool: &PgPool, sql: &str) -> String {
    match sqlx::raw_sql(sql).execute(pool).await {
        Ok(_) => panic!("`{sql}` was allowed"),
        Err(e) => e.to_string(),
    }
}

/// An app whose server connects as a runtime role made for its database, migrating as the
/// owner; returns the app and a pool connected as the runtime role.
async fn app_as_runtime_role() -> (TestApp, PgPool) {
    let db = TestDb::create().await;
    let role = format!("{}_runtime", db.name);
    let owner = PgPool::connect(&db.url).await.unwrap();
    sqlx::raw_sql(&format!("CREATE ROLE {role} LOGIN"))
        .execute(&owner)
        .await
        .unwrap();
    owner.close().await;
    let runtime_url = db.url.replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(runtime_url, db.url, "the test URL names its user");
    let owner_url = db.url.clone();
    let url = runtime_url.clone();
    let app = spawn_app_on(db, "", move |s| {
        s.migration_database_url = Some(Secret::new(owner_url));
        s.database_url = Some(Secret::new(url));
    })
    .await;
    let runtime = PgPool::connect(&runtime_url).await.unwrap();
    (app, runtime)
}

#[tokio::test]
async fn the_runtime_role_runs_the_gateway_but_cannot_rewrite_the_ledger() {
    let (app, runtime) = app_as_runtime_role().await;
    let (status, ready) = app.admin(Method::GET, "/ready", "", None).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["checks"]["least_privilege"], true, "{ready}");

    // Everything the server does, it does as the runtime role.
    let agent = app.create_agent("least", "1.00", json!({})).await;
    for _ in 0..2 {
        assert_eq!(
            app.chat(&agent.token, hello()).await.status(),
            StatusCode::OK
        );
    }
    let written = app
        .op(
            Method::POST,
            "/admin/ledger/checkpoints",
            None,
            StatusCode::OK,
        )
        .await;
    assert!(written["checkpoint_id"].as_i64().is_some(), "{written}");
    app.assert_books_audit().await;

    let events = app.count("SELECT count(*) FROM event_log").await;
    let checkpoints = app.count("SELECT count(*) FROM ledger_checkpoints").await;
    for sql in [
        "ALTER TABLE event_log DISABLE TRIGGER event_log_append_only",
        "ALTER TABLE event_log DISABLE TRIGGER USER",
        "ALTER TABLE ledger_checkpoints DISABLE TRIGGER USER",
        "DELETE FROM event_log",
        "UPDATE event_log SET payload = payload",
        "TRUNCATE event_log",
        "DELETE FROM ledger_checkpoints",
        "UPDATE ledger_checkpoints SET heads = heads",
        "TRUNCATE ledger_checkpoints",
        "DROP TABLE ledger_checkpoints",
        "ALTER TABLE agents ADD COLUMN mole int",
        "SELECT aex_grant_runtime(current_user)",
    ] {
        let error = refused(&runtime, sql).await;
        assert!(
            error.contains("permission denied") || error.contains("must be owner"),
            "{sql}: {error}"
        );
    }
    assert_eq!(app.count("SELECT count(*) FROM event_log").await, events);
    assert_eq!(
        app.count("SELECT count(*) FROM ledger_checkpoints").await,
        checkpoints
    );
    runtime.close().await;
}

#[tokio::test]
async fn a_server_connected_as_the_owner_says_so_in_ready() {
    let app = crate::helpers::spawn_app().await;
    let (status, ready) = app.admin(Method::GET, "/ready", "", None).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["checks"]["least_privilege"], false, "{ready}");
}

fn aex(app: &TestApp, args: &[&str]) -> (bool, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_aex"))
        .args(args)
        .env("AEX_HOME", app.dir.path())
        .env("AEX_CONFIG", app.dir.path().join("none.toml"))
        .env("AEX_DATABASE_URL", &app.db.url)
        .env("AEX_AUTH__KEYS__K1", crate::helpers::KEY)
        .env_remove("AEX_URL")
        .env_remove("AEX_ADMIN_TOKEN")
        .output()
        .expect("aex runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    let text = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), value, text)
}

#[tokio::test]
async fn an_archived_head_catches_a_truncated_tail_after_the_owner_deleted_every_checkpoint() {
    let app = crate::helpers::spawn_app_with(|s| s.ledger.checkpoint_interval_seconds = 3600).await;
    let agent = app.create_agent("anchored", "1.00", json!({})).await;
    for _ in 0..3 {
        assert_eq!(
            app.chat(&agent.token, hello()).await.status(),
            StatusCode::OK
        );
    }
    // No checkpoint yet: verification passes but says what it cannot vouch for.
    let (ok, report, text) = aex(&app, &["--json", "ledger", "verify", "--local"]);
    assert!(ok, "{text}");
    assert_eq!(report["truncation_detectable"], false, "{report}");
    assert!(report["warning"].as_str().unwrap().contains("undetectable"));
    let (ok, _, text) = aex(&app, &["ledger", "verify", "--local"]);
    assert!(ok && text.contains("undetectable"), "{text}");

    // The signed head, archived outside the database.
    let (ok, head, text) = aex(&app, &["--json", "ledger", "checkpoint", "--local"]);
    assert!(ok, "{text}");
    assert!(head["head"]["signature"].is_string(), "{head}");
    let archive = app.dir.path().join("head.json");
    std::fs::write(&archive, head.to_string()).unwrap();
    let archive = archive.to_str().unwrap();
    let (ok, report, text) = aex(&app, &["--json", "ledger", "verify", "--local"]);
    assert!(ok && report["truncation_detectable"] == true, "{text}");
    let (ok, _, text) = aex(&app, &["--json", "ledger", "verify", "--head", archive]);
    assert!(ok, "{text}");

    // Even the owner's plain DELETE is refused: checkpoints are append-only.
    let error = refused(&app.pool, "DELETE FROM ledger_checkpoints").await;
    assert!(error.contains("append-only"), "{error}");
    let error = refused(&app.pool, "TRUNCATE ledger_checkpoints").await;
    assert!(error.contains("append-only"), "{error}");

    // An owner who disables the triggers removes every checkpoint and the chain's last event.
    let chain = format!("agent:{}", agent.id);
    sqlx::raw_sql(&format!(
        "BEGIN; ALTER TABLE ledger_checkpoints DISABLE TRIGGER USER; \
         ALTER TABLE event_log DISABLE TRIGGER USER; \
         DELETE FROM ledger_checkpoints; \
         DELETE FROM event_log WHERE id = (SELECT max(id) FROM event_log WHERE chain_id = '{chain}'); \
         ALTER TABLE event_log ENABLE TRIGGER USER; \
         ALTER TABLE ledger_checkpoints ENABLE TRIGGER USER; COMMIT;"
    ))
    .execute(&app.pool)
    .await
    .unwrap();
    // Inside the database nothing shows: the chains are intact as far as they go.
    let (ok, report, text) = aex(&app, &["--json", "ledger", "verify", "--local"]);
    assert!(ok && report["truncation_detectable"] == false, "{text}");
    // The archived head does.
    let (ok, report, text) = aex(&app, &["--json", "ledger", "verify", "--head", archive]);
    assert!(!ok, "{text}");
    let problem = report["problem"].as_str().unwrap();
    assert!(
        problem.contains(&chain) && problem.contains("truncated"),
        "{report}"
    );
}
