//! The seed's Quick Start, from the command line, on the embedded default database.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use aex::dev::mock_upstream::{self, MockControl};
use serde_json::Value;

use crate::helpers::{hello, models_toml};

fn aex(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aex"))
        .args(args)
        .env("AEX_HOME", home)
        .env_remove("AEX_DATABASE_URL")
        .env_remove("AEX_CONFIG")
        .env_remove("AEX_URL")
        .env_remove("AEX_ADMIN_TOKEN")
        .output()
        .expect("aex runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stops the daemon and removes the embedded cluster, whatever the test's outcome.
struct Cleanup {
    home: PathBuf,
    cluster: Option<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = aex(&self.home, &["daemon", "stop"]);
        if let Some(dir) = &self.cluster {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[tokio::test]
async fn the_seed_quick_start_works_from_the_cli() {
    if aex::cli::embedded::find_bin_dir().is_none() {
        panic!("no Postgres server binaries: the embedded default cannot be tested");
    }
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("aex-home");
    let cluster = aex::cli::embedded::EmbeddedPg::for_home(&home)
        .ok()
        .map(|pg| pg.root);
    let _cleanup = Cleanup {
        home: home.clone(),
        cluster,
    };
    let mock = mock_upstream::spawn(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(MockControl::default()),
    )
    .await
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");

    let init = ok(&aex(&home, &["init", "--listen", &listen]));
    assert!(init.contains("operator token"), "{init}");
    assert!(home.join("aex.toml").is_file() && home.join("models.toml").is_file());
    // Point the starter routing table at the loopback provider instead of api.openai.com.
    std::fs::write(home.join("models.toml"), models_toml(mock)).unwrap();

    ok(&aex(&home, &["daemon", "start"]));
    let created = ok(&aex(
        &home,
        &[
            "agent",
            "create",
            "my-agent",
            "5.00",
            "30",
            "--allow-passthrough",
            "--json",
        ],
    ));
    let created: Value = serde_json::from_str(created.trim()).unwrap();
    let token = created["token"].as_str().unwrap();
    assert_eq!(created["agent"]["budget_micro_usd"], 5_000_000);
    assert_eq!(created["agent"]["rpm_limit"], 30);
    assert_eq!(created["agent"]["policy"]["allow_passthrough"], true);

    let resp = reqwest::Client::new()
        .post(format!("http://{listen}/v1/chat/completions"))
        .bearer_auth(token)
        .json(&hello())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // SPEC §10: the daemon connects as the runtime role `aex init` made, which owns nothing.
    let config = std::fs::read_to_string(home.join("aex.toml")).unwrap();
    assert!(config.contains("migration_database_url"), "{config}");
    let ready: Value = reqwest::get(format!("http://{listen}/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["least_privilege"], true, "{ready}");

    let shown = ok(&aex(&home, &["agent", "show", "my-agent", "--json"]));
    let shown: Value = serde_json::from_str(shown.trim()).unwrap();
    assert!(shown["spent_micro_usd"].as_i64().unwrap() > 0);
    assert_eq!(shown["reserved_micro_usd"], 0);

    assert!(ok(&aex(&home, &["ledger", "verify"])).contains("ledger OK"));
    ok(&aex(&home, &["audit"]));
    ok(&aex(&home, &["replay"]));
    let listed = ok(&aex(&home, &["agent", "list"]));
    assert!(listed.contains("my-agent"), "{listed}");

    // Failures are non-zero exits with a clear message.
    let dup = aex(&home, &["agent", "create", "my-agent", "1", "1"]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let bad = aex(&home, &["agent", "create", "x", "1.0000001", "1"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("budget_usd"));

    ok(&aex(&home, &["daemon", "stop"]));
    assert!(!aex(&home, &["daemon", "status"]).status.success());
}

#[test]
fn openapi_prints_a_document_and_version_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let doc: Value = serde_json::from_str(&ok(&aex(dir.path(), &["openapi"]))).unwrap();
    assert!(doc["paths"]["/v1/chat/completions"].is_object());
    assert!(doc["paths"]["/openai/v1/chat/completions"].is_object());
    let v: Value =
        serde_json::from_str(ok(&aex(dir.path(), &["version", "--json"])).trim()).unwrap();
    assert_eq!(v["version"], aex::VERSION);
}
