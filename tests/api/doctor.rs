//! `aex doctor`: each fault it is shown is named with its fix and fails the run (missing key
//! variable, unreachable provider, a model the provider does not list, pending migration, broken
//! chain, a config key that does not exist); a healthy setup passes with exit 0, from the real
//! binary too. `--compat` drives a running server as a client does.

use std::path::Path;
use std::process::{Command, Output};

use aex::cli::doctor::{self, compat, Report, Status};
use serde_json::Value;

use crate::helpers::{spawn_app_with_models, TestApp, KEY};

/// A provider whose key comes from `DOCTOR_TEST_KEY`, on the mock.
const KEYED: &str = r#"
[providers.keyed]
kind = "openai"
base_url = "http://{mock}/v1"
api_key_env = "DOCTOR_TEST_KEY"

[models."keyed-mini"]
provider = "keyed"
upstream_model = "mock-gpt-4o-mini"
input_usd_per_million = "0.15"
output_usd_per_million = "0.60"
capabilities = ["chat"]
"#;

fn env_with_key(name: &str) -> Option<String> {
    (name == "DOCTOR_TEST_KEY").then(|| "sk-doctor-test".to_owned())
}

fn no_env(_: &str) -> Option<String> {
    None
}

async fn diagnose(app: &TestApp, env: doctor::EnvLookup<'_>) -> Report {
    Report::new(doctor::diagnose(&app.settings, env).await)
}

/// The check named `name`, which must have `status`; its line for the failure message.
fn expect<'a>(report: &'a Report, name: &str, status: Status) -> &'a doctor::Check {
    let check = report
        .find(name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#?}"));
    assert_eq!(check.status, status, "{}", check.line());
    if status != Status::Ok {
        assert!(check.fix.is_some(), "{} says no fix", check.line());
    }
    check
}

async fn checkpoint(app: &TestApp) {
    let key = &app.settings.auth.keys["k1"];
    aex::ledger::checkpoint::write(&app.pool, "k1", key, None)
        .await
        .unwrap();
}

/// An app with `extra` models, one governed call and a checkpoint after it.
async fn app_with_a_checkpointed_call(extra: &str) -> (TestApp, crate::helpers::Agent) {
    let app = spawn_app_with_models(extra).await;
    let agent = app
        .create_agent("doctored", "1.00", serde_json::json!({}))
        .await;
    assert_eq!(
        app.chat(&agent.token, crate::helpers::hello())
            .await
            .status(),
        200
    );
    checkpoint(&app).await;
    (app, agent)
}

#[tokio::test]
async fn a_healthy_setup_passes_every_check() {
    let (app, _) = app_with_a_checkpointed_call(KEYED).await;

    let report = diagnose(&app, &env_with_key).await;
    assert!(report.ok, "{report:#?}");
    for name in [
        "database",
        "migrations",
        "ledger",
        "routing_table",
        "provider keyed key",
        "provider keyed reachable",
        "provider mock reachable",
        "model keyed-mini",
        "model gpt-4o-mini",
    ] {
        expect(&report, name, Status::Ok);
    }
    // The test server connects as the superuser `postgres`: said, but not a failure.
    expect(&report, "least_privilege", Status::Warn);
    assert!(report.find("routing_table_active").is_none(), "{report:#?}");

    // The file edited after the servers imported it: they still run the stored version.
    let models = app.settings.models_file_path();
    let edited = std::fs::read_to_string(&models).unwrap() + "\n# edited\n";
    std::fs::write(&models, edited).unwrap();
    let report = diagnose(&app, &env_with_key).await;
    assert!(report.ok, "{report:#?}");
    let stale = expect(&report, "routing_table_active", Status::Warn);
    assert!(stale.fix.as_deref().unwrap().contains("aex models reload"));
}

#[tokio::test]
async fn it_names_a_missing_key_an_unreachable_provider_and_an_unlisted_model() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let extra = format!(
        r#"{KEYED}
[providers.gone]
kind = "openai"
base_url = "http://{closed}/v1"

[models."gone-model"]
provider = "gone"
upstream_model = "anything"
input_usd_per_million = "1"
output_usd_per_million = "1"
capabilities = ["chat"]

[models."typo"]
provider = "mock"
upstream_model = "mock-gpt-4o-mimi"
input_usd_per_million = "1"
output_usd_per_million = "1"
capabilities = ["chat"]
"#
    );
    let app = spawn_app_with_models(&extra).await;
    checkpoint(&app).await;
    let report = diagnose(&app, &no_env).await;
    assert!(!report.ok);

    let key = expect(&report, "provider keyed key", Status::Fail);
    assert!(key.message.contains("DOCTOR_TEST_KEY"), "{}", key.line());
    assert!(key
        .fix
        .as_deref()
        .unwrap()
        .contains("export DOCTOR_TEST_KEY="));

    let gone = expect(&report, "provider gone reachable", Status::Fail);
    assert!(
        gone.message.contains(&closed.to_string()),
        "{}",
        gone.line()
    );
    assert!(gone
        .fix
        .as_deref()
        .unwrap()
        .contains("providers.gone.base_url"));

    let typo = expect(&report, "model typo", Status::Fail);
    assert!(typo.message.contains("mock-gpt-4o-mimi"), "{}", typo.line());
    assert!(typo
        .fix
        .as_deref()
        .unwrap()
        .contains("models.\"typo\".upstream_model"));

    // What is fine stays fine.
    expect(&report, "provider mock reachable", Status::Ok);
    expect(&report, "model gpt-4o-mini", Status::Ok);
    expect(&report, "database", Status::Ok);
}

#[tokio::test]
async fn it_names_a_broken_chain_and_a_pending_migration() {
    let (app, agent) = app_with_a_checkpointed_call("").await;
    assert!(diagnose(&app, &no_env).await.ok);

    // An event appended after the checkpoint, edited as a superuser would.
    assert_eq!(
        app.chat(&agent.token, crate::helpers::hello())
            .await
            .status(),
        200
    );
    let id: i64 =
        sqlx::query_scalar("SELECT max(id) FROM event_log WHERE event_type = 'usage.commit'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    app.forge_event(id, "\"actual_micro_usd\":[0-9]+", "\"actual_micro_usd\":1")
        .await;
    let report = diagnose(&app, &no_env).await;
    assert!(!report.ok);
    let ledger = expect(&report, "ledger", Status::Fail);
    assert!(
        ledger.message.contains(&format!("event {id}")),
        "{}",
        ledger.line()
    );

    // The newest migration forgotten, as after upgrading the binary without `aex migrate`.
    let latest = aex::store::db::MIGRATOR.iter().last().unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(latest.version)
        .execute(&app.pool)
        .await
        .unwrap();
    let report = diagnose(&app, &no_env).await;
    let migrations = expect(&report, "migrations", Status::Fail);
    assert!(
        migrations.message.starts_with("1 pending: ")
            && migrations.message.contains(&latest.version.to_string()),
        "{}",
        migrations.line()
    );
    assert!(migrations.fix.as_deref().unwrap().contains("aex migrate"));
}

/// Runs the real binary with `aex.toml` of `dir`, off the runtime (which serves the mock).
async fn aex_doctor(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aex"));
    cmd.arg("doctor")
        .args(args)
        .env("AEX_HOME", dir)
        .env_remove("AEX_DATABASE_URL")
        .env_remove("AEX_CONFIG")
        .env_remove("AEX_URL")
        .env_remove("DOCTOR_TEST_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().expect("aex runs"))
        .await
        .unwrap()
}

#[tokio::test]
async fn the_binary_exits_zero_when_healthy_and_non_zero_naming_each_fault() {
    let app = spawn_app_with_models(KEYED).await;
    checkpoint(&app).await;
    let dir = app.dir.path();
    let models = app.settings.models_file_path();
    std::fs::write(
        dir.join("aex.toml"),
        format!(
            "database_url = \"{}\"\nmodels_file = \"{}\"\n[auth.keys]\nk1 = \"{KEY}\"\n",
            app.db.url,
            models.display()
        ),
    )
    .unwrap();

    let healthy = aex_doctor(dir, &[("DOCTOR_TEST_KEY", "sk-doctor-test")], &["--json"]).await;
    let stdout = String::from_utf8_lossy(&healthy.stdout);
    assert!(
        healthy.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(report["ok"], true);
    assert_eq!(report["checks"][0]["name"], "config");

    // The key variable missing: non-zero, and the line says which variable and how to set it.
    let missing = aex_doctor(dir, &[], &[]).await;
    assert!(!missing.status.success());
    let text = String::from_utf8_lossy(&missing.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("[FAIL] provider keyed key"))
        .unwrap_or_else(|| panic!("no line for the key in:\n{text}"));
    assert!(
        line.contains("DOCTOR_TEST_KEY") && line.contains("fix: export"),
        "{line}"
    );

    // A config key that does not exist: named, non-zero, still one JSON object.
    std::fs::write(dir.join("aex.toml"), "databse_url = \"postgres://x/y\"\n").unwrap();
    let bad = aex_doctor(dir, &[], &["--json"]).await;
    assert!(!bad.status.success());
    let report: Value = serde_json::from_slice(&bad.stdout).expect("one JSON object");
    assert_eq!(report["checks"][0]["name"], "config");
    assert_eq!(report["checks"][0]["status"], "fail");
    assert!(
        report["checks"][0]["message"]
            .as_str()
            .unwrap()
            .contains("databse_url"),
        "{report}"
    );
}

#[tokio::test]
async fn compat_checks_a_running_server_as_a_client_does() {
    let app = spawn_app_with_models("").await;
    let agent = app
        .create_agent("compat", "1.00", serde_json::json!({}))
        .await;
    let report = Report::new(compat::check(&app.base, &agent.token, None).await);
    assert!(report.ok, "{report:#?}");
    for name in ["health", "auth", "models", "chat", "headers", "idempotency"] {
        expect(&report, name, Status::Ok);
    }
    // The test server connects as the superuser `postgres`, which /ready reports.
    expect(&report, "ready", Status::Warn);
    // One tiny call charged, once: the replay was not a second execution.
    let (spent, reserved, _) = app.books(agent.id).await;
    assert!(spent > 0);
    assert_eq!(reserved, 0);
    assert_eq!(app.execution_states(agent.id).await, vec!["COMMITTED"]);
    app.assert_books_audit().await;

    // A token that is no agent's: named at the model list, and no call is made.
    let report = Report::new(compat::check(&app.base, "not-a-token", None).await);
    assert!(!report.ok);
    expect(&report, "models", Status::Fail);
    assert!(report.find("chat").is_none());

    // The provider failing: the 502 is named with where to look.
    app.mock
        .status
        .store(500, std::sync::atomic::Ordering::SeqCst);
    let report = Report::new(compat::check(&app.base, &agent.token, None).await);
    let chat = expect(&report, "chat", Status::Fail);
    assert!(chat.message.contains("502"), "{}", chat.line());
    assert!(chat.fix.as_deref().unwrap().contains("aex doctor"));
}
