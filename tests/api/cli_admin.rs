//! An operator runs the gateway from the command line: every management command talks to the
//! admin API (AEX_URL / AEX_ADMIN_TOKEN), prints exactly one JSON object with `--json`, and
//! fails with a clear message and a non-zero exit.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{hello, spawn_app_with, TestApp};

pub(crate) struct Run {
    pub ok: bool,
    pub json: Value,
    pub stderr: String,
}

pub(crate) async fn aex_as(app: &TestApp, token: &str, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_aex"))
        .args(args)
        .arg("--json")
        .env("AEX_HOME", app.dir.path())
        .env("AEX_URL", &app.base)
        .env("AEX_ADMIN_TOKEN", token)
        .env_remove("AEX_CONFIG")
        .env_remove("AEX_DATABASE_URL")
        .output()
        .await
        .expect("aex runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("aex {args:?}: stdout is not one JSON value ({e}): {stdout}"));
    assert!(json.is_object(), "aex {args:?}: {json}");
    Run {
        ok: out.status.success(),
        json,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub(crate) async fn aex(app: &TestApp, args: &[&str]) -> Value {
    let run = aex_as(app, &app.operator_token, args).await;
    assert!(run.ok, "aex {args:?} failed: {}", run.stderr);
    run.json
}

pub(crate) async fn fails(app: &TestApp, args: &[&str], needle: &str) {
    let run = aex_as(app, &app.operator_token, args).await;
    assert!(!run.ok, "aex {args:?} should fail");
    assert!(
        run.stderr.contains(needle),
        "aex {args:?}: {needle:?} not in {}",
        run.stderr
    );
    assert!(run.json["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains(needle)));
}

#[tokio::test]
async fn an_operator_runs_tenants_agents_tokens_models_plugins_and_the_ledger_from_the_cli() {
    let app = spawn_app_with(|s| s.tools.allowed_http_hosts = vec!["127.0.0.1:9".into()]).await;
    let tenant = aex(&app, &["tenant", "create", "team", "--budget", "10"]).await;
    assert_eq!(tenant["budget_micro_usd"], 10_000_000);
    let listed = aex(&app, &["tenant", "list"]).await;
    assert_eq!(listed["tenants"].as_array().unwrap().len(), 2);
    let t = ["--tenant", "team"];

    let created = aex(
        &app,
        &[
            &[
                "agent",
                "create",
                "bot",
                "2.00",
                "60",
                "--models",
                "gpt-4o-mini",
            ][..],
            &t,
        ]
        .concat(),
    )
    .await;
    let first = created["token"].as_str().unwrap().to_owned();
    assert_eq!(created["agent"]["tenant_id"], tenant["id"]);
    assert_eq!(app.chat(&first, hello()).await.status(), StatusCode::OK);
    let shown = aex(&app, &[&["agent", "show", "bot"][..], &t].concat()).await;
    assert!(shown["spent_micro_usd"].as_i64().unwrap() > 0);
    let agents = aex(&app, &[&["agent", "list"][..], &t].concat()).await;
    assert_eq!(agents["agents"][0]["name"], "bot");

    let updated = aex(
        &app,
        &[
            &["agent", "update", "bot", "--rpm", "10", "--allow-vision"][..],
            &t,
        ]
        .concat(),
    )
    .await;
    assert_eq!(updated["rpm_limit"], 10);
    assert_eq!(updated["policy"]["allow_vision"], true);
    assert_eq!(
        updated["policy"]["allowed_models"],
        serde_json::json!(["gpt-4o-mini"])
    );
    aex(
        &app,
        &[
            &["agent", "state", "bot", "paused", "--reason", "maintenance"][..],
            &t,
        ]
        .concat(),
    )
    .await;
    assert_eq!(app.chat(&first, hello()).await.status(), StatusCode::LOCKED);
    aex(
        &app,
        &[&["agent", "state", "bot", "READY"][..], &t].concat(),
    )
    .await;
    let topped = aex(&app, &[&["agent", "topup", "bot", "1.50"][..], &t].concat()).await;
    assert_eq!(topped["budget_micro_usd"], 3_500_000);
    let set = aex(
        &app,
        &[&["agent", "topup", "bot", "1", "--set"][..], &t].concat(),
    )
    .await;
    assert_eq!(set["budget_micro_usd"], 1_000_000);

    let issued = aex(
        &app,
        &[
            &[
                "token",
                "issue",
                "--scope",
                "execution",
                "--agent",
                "bot",
                "--ttl",
                "1",
            ][..],
            &t,
        ]
        .concat(),
    )
    .await;
    let second = issued["token"].as_str().unwrap().to_owned();
    assert_eq!(app.chat(&second, hello()).await.status(), StatusCode::OK);
    let tokens = aex(
        &app,
        &[&["token", "list", "--agent", "bot"][..], &t].concat(),
    )
    .await;
    assert_eq!(tokens["tokens"].as_array().unwrap().len(), 2);
    let revoked = aex(
        &app,
        &[
            "token",
            "revoke",
            issued["token_id"].as_str().unwrap(),
            "--reason",
            "cli",
        ],
    )
    .await;
    assert_eq!(revoked["revoked_reason"], "cli");
    assert_eq!(
        app.chat(&second, hello()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let rotated = aex(&app, &[&["agent", "rotate-token", "bot"][..], &t].concat()).await;
    let third = rotated["token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.chat(&first, hello()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.chat(&third, hello()).await.status(), StatusCode::OK);
    let admin = aex(
        &app,
        &[
            &["token", "issue", "--scope", "admin", "--subject", "lead"][..],
            &t,
        ]
        .concat(),
    )
    .await;
    let admin = admin["token"].as_str().unwrap().to_owned();
    let run = aex_as(
        &app,
        &admin,
        &[
            "agent",
            "revoke-token",
            "bot",
            "--token",
            issued["token_id"].as_str().unwrap(),
        ],
    )
    .await;
    assert!(run.ok, "{}", run.stderr);

    // Models: a file reload, then the server's own file again.
    let before = aex(&app, &["models", "show"]).await;
    let file = app.dir.path().join("next.toml");
    let table = std::fs::read_to_string(app.dir.path().join("models.toml")).unwrap();
    std::fs::write(
        &file,
        table.replace("max_output_tokens = 1000", "max_output_tokens = 900"),
    )
    .unwrap();
    let reloaded = aex(
        &app,
        &["models", "reload", "--file", file.to_str().unwrap()],
    )
    .await;
    assert_eq!(reloaded["version"], before["version"].as_i64().unwrap() + 1);
    let back = aex(&app, &["models", "reload"]).await;
    assert_eq!(
        (back["changed"].as_bool(), back["version"].as_i64()),
        (Some(true), Some(before["version"].as_i64().unwrap() + 2))
    );
    std::fs::write(&file, "[models").unwrap();
    fails(
        &app,
        &["models", "reload", "--file", file.to_str().unwrap()],
        "invalid routing table",
    )
    .await;

    let plugin = aex(
        &app,
        &[
            &[
                "plugin",
                "install",
                "calc",
                "--kind",
                "http",
                "--url",
                "http://127.0.0.1:9/x",
                "--secret-env",
                "CALC_SECRET",
                "--cost",
                "0.001",
            ][..],
            &t,
        ]
        .concat(),
    )
    .await;
    assert_eq!(plugin["cost_micro_usd"], 1000);
    let off = aex(&app, &[&["plugin", "disable", "calc"][..], &t].concat()).await;
    assert_eq!(off["enabled"], false);
    let plugins = aex(&app, &[&["plugin", "list"][..], &t].concat()).await;
    assert_eq!(plugins["plugins"][0]["enabled"], false);

    let events = aex(
        &app,
        &[&["ledger", "events", "--type", "budget.topped_up"][..], &t].concat(),
    )
    .await;
    assert_eq!(events["events"].as_array().unwrap().len(), 1);
    assert_eq!(events["events"][0]["payload"]["by"], "test-operator");
    assert_eq!(aex(&app, &["ledger", "verify"]).await["ok"], true);
    let checkpoint = aex(&app, &["ledger", "checkpoint"]).await;
    assert!(
        checkpoint["checkpoint_id"].as_i64().is_some(),
        "{checkpoint}"
    );
    let gone = aex(
        &app,
        &[
            &["agent", "decommission", "bot", "--reason", "done"][..],
            &t,
        ]
        .concat(),
    )
    .await;
    assert_eq!(gone["agent"]["state"], "DECOMMISSIONED");
    assert_eq!(
        app.chat(&third, hello()).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Failures: clear messages, non-zero exits, still one JSON object.
    fails(
        &app,
        &[&["agent", "show", "nobody"][..], &t].concat(),
        "agent not found",
    )
    .await;
    fails(&app, &["agent", "topup", "bot", "lots"], "amount_usd").await;
    let run = aex_as(&app, &admin, &["tenant", "create", "coup"]).await;
    assert!(!run.ok && run.stderr.contains("403"), "{}", run.stderr);
    let run = aex_as(&app, "not-a-token", &["agent", "list"]).await;
    assert!(!run.ok && run.stderr.contains("401"), "{}", run.stderr);
}

#[tokio::test]
async fn only_an_operator_installs_plugins_from_the_cli_and_a_tenant_admin_toggles_them() {
    let app = spawn_app_with(|_| {}).await;
    let (_tenant, admin) = app
        .tenant_with_admin("toolshop", serde_json::json!({}))
        .await;
    let path = crate::tools::script(&app, "shout", r#"echo "{\"said\": \"$1\"}""#);
    let install = [
        "plugin", "install", "shout", "--kind", "process", "--path", &path, "--arg", "hey",
        "--tenant", "toolshop",
    ];
    let run = aex_as(&app, &admin, &install).await;
    assert!(
        !run.ok && run.stderr.contains("only an operator installs plugins"),
        "{}",
        run.stderr
    );
    assert_eq!(app.count("SELECT count(*) FROM tool_plugins").await, 0);
    let installed = aex(&app, &install).await;
    assert_eq!(installed["manifest"]["args"], serde_json::json!(["hey"]));
    assert!(installed["manifest"]["invocation_sha256"].is_string());
    let off = aex_as(&app, &admin, &["plugin", "disable", "shout"]).await;
    assert!(off.ok, "{}", off.stderr);
    assert_eq!(off.json["enabled"], false);
    let listed = aex_as(&app, &admin, &["plugin", "list"]).await;
    assert_eq!(listed.json["plugins"][0]["enabled"], false);
}
