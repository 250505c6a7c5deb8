//! Billed tool execution: http and process plugins through the same admission, reservation,
//! idempotency and settlement as model calls.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Json;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::attempts::{assert_all_the_same, assert_one_ended_attempt, wave, Replicas};
use crate::helpers::{spawn_app, spawn_app_with, TestApp};

pub async fn install(app: &TestApp, body: Value) {
    let (status, value) = app
        .admin_post("/admin/plugins", &app.operator_token, body)
        .await;
    assert!(status.is_success(), "{value}");
}

/// An executable shell script in the app's `tools.plugin_dir`.
pub fn script(app: &TestApp, name: &str, body: &str) -> String {
    script_at(
        app.settings.tools.plugin_dir.as_deref().unwrap(),
        name,
        body,
    )
}

pub fn script_at(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_string_lossy().into_owned()
}

pub async fn process_plugin(app: &TestApp, name: &str, body: &str, extra: Value) -> String {
    let path = script(app, name, body);
    let mut plugin = json!({"name": name, "version": "1", "kind": "process", "cost_usd": "0.002000",
                            "timeout_ms": 2000, "max_output_bytes": 4096, "manifest": {"path": path}});
    for (k, v) in extra.as_object().unwrap() {
        plugin[k] = v.clone();
    }
    install(app, plugin).await;
    path
}

pub async fn execute(
    app: &TestApp,
    token: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let resp = app.post("/v1/tools/execute", token, body, headers).await;
    (resp.status(), resp.json().await.unwrap())
}

#[tokio::test]
async fn a_process_plugin_runs_sandboxed_and_its_declared_cost_is_booked() {
    let app = spawn_app().await;
    // Reads the arguments on stdin, answers JSON, and reports its environment on stderr.
    process_plugin(
        &app,
        "adder",
        r#"read input; env >&2; echo "{\"sum\": 3, \"input\": $input}""#,
        json!({}),
    )
    .await;
    let agent = app.create_agent("tool-user", "1.00", json!({})).await;
    let resp = app
        .post(
            "/v1/tools/execute",
            &agent.token,
            json!({"tool_name": "adder", "arguments": {"a": 1, "b": 2}}),
            &[],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-aex-cost-micro-usd"], "2000");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["tool_name"], "adder");
    assert_eq!(v["result"], json!({"sum": 3, "input": {"a": 1, "b": 2}}));
    let env = v["stderr"].as_str().unwrap();
    assert!(
        !env.contains("DATABASE") && !env.contains("CARGO"),
        "the environment is cleared: {env}"
    );
    assert!(env.contains("HOME=/tmp/"), "{env}");
    assert_eq!(app.books(agent.id).await, (2000, 0, 1_000_000));
    assert_eq!(app.execution_states(agent.id).await, vec!["COMMITTED"]);
    let commit: String = sqlx::query_scalar(
        "SELECT payload FROM event_log WHERE agent_id = $1 AND event_type = 'usage.commit'",
    )
    .bind(agent.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let commit: Value = serde_json::from_str(&commit).unwrap();
    assert_eq!(
        (
            commit["model"].as_str(),
            commit["actual_micro_usd"].as_i64()
        ),
        (Some("adder"), Some(2000))
    );
    app.assert_books_audit().await;
}

#[tokio::test]
async fn timeouts_and_oversized_output_charge_the_declared_cost_and_failures_release() {
    let app = spawn_app().await;
    process_plugin(&app, "sleeper", "sleep 5", json!({"timeout_ms": 300})).await;
    process_plugin(
        &app,
        "chatty",
        "head -c 10000 /dev/zero | tr '\\0' x",
        json!({}),
    )
    .await;
    process_plugin(&app, "broken", "echo oops >&2; exit 3", json!({})).await;
    let agent = app.create_agent("unlucky-tools", "1.00", json!({})).await;
    let cases = [
        ("sleeper", 504, "tool_timeout"),
        ("chatty", 502, "tool_output_too_large"),
        ("broken", 502, "tool_failed"),
    ];
    for (tool, status, reason) in cases {
        let (got, v) = execute(&app, &agent.token, json!({"tool_name": tool}), &[]).await;
        assert_eq!(got.as_u16(), status, "{tool}: {v}");
        let recorded: String = sqlx::query_scalar(
            "SELECT e.reason FROM executions e WHERE e.agent_id = $1 ORDER BY e.created_at DESC LIMIT 1",
        )
        .bind(agent.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(recorded, reason);
    }
    // The timed-out and the oversized run had started: they may have done their work and are
    // charged their declared cost (2,000 each, `usage: ambiguous`); the failed one is not.
    assert_eq!(app.books(agent.id).await, (4_000, 0, 1_000_000));
    let commits = app.ledger_payloads("usage.commit").await;
    assert_eq!(commits.len(), 2);
    assert!(commits
        .iter()
        .all(|c| c["usage"] == "ambiguous" && c["actual_micro_usd"] == 2_000));
    assert_eq!(
        app.execution_states(agent.id).await,
        vec!["FAILED", "FAILED", "RELEASED"]
    );
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_tampered_executable_is_refused_and_nothing_is_charged() {
    let app = spawn_app().await;
    let path = process_plugin(&app, "trusted", "echo '{\"ok\": true}'", json!({})).await;
    let agent = app.create_agent("careful-tools", "1.00", json!({})).await;
    assert_eq!(
        execute(&app, &agent.token, json!({"tool_name": "trusted"}), &[])
            .await
            .0,
        StatusCode::OK
    );
    std::fs::write(&path, "#!/bin/sh\necho '{\"ok\": \"pwned\"}'\n").unwrap();
    let (status, v) = execute(&app, &agent.token, json!({"tool_name": "trusted"}), &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("SHA-256"),
        "{v}"
    );
    assert_eq!(
        app.books(agent.id).await.0,
        2000,
        "only the first run is charged"
    );
    app.assert_books_audit().await;
}

#[tokio::test]
async fn isolation_required_but_unavailable_refuses_to_run() {
    let app = spawn_app_with(|s| {
        s.tools.require_isolation = true;
        s.tools.bwrap_path = "/nonexistent/bwrap".into();
    })
    .await;
    process_plugin(&app, "needs-sandbox", "echo '{}' ; touch ran", json!({})).await;
    let agent = app.create_agent("sandboxed", "1.00", json!({})).await;
    let (status, v) = execute(
        &app,
        &agent.token,
        json!({"tool_name": "needs-sandbox"}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("isolation is required"),
        "{v}"
    );
    assert_eq!(app.books(agent.id).await.0, 0);
}

#[tokio::test]
async fn disabled_unknown_and_disallowed_tools_are_refused_and_keyed_calls_replay() {
    // Unsandboxed (an explicit opt-out), so the tool can count its runs in a file of the test.
    let app = spawn_app_with(|s| {
        s.tools.require_isolation = false;
        s.tools.bwrap_path = "/nonexistent/bwrap".into();
    })
    .await;
    let counter = app.dir.path().join("runs");
    let body = format!("echo run >> {}; echo '{{\"n\": 1}}'", counter.display());
    process_plugin(&app, "counted", &body, json!({})).await;
    process_plugin(&app, "off", "echo '{}'", json!({"enabled": false})).await;
    let agent = app
        .create_agent(
            "picky",
            "1.00",
            json!({"policy": {"allowed_tool_names": ["counted", "off"]}}),
        )
        .await;

    let (status, v) = execute(&app, &agent.token, json!({"tool_name": "off"}), &[]).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("tool_not_found"))
    );
    let (status, v) = execute(&app, &agent.token, json!({"tool_name": "nope"}), &[]).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("tool_not_found"))
    );
    let (status, v) = execute(&app, &agent.token, json!({"arguments": {}}), &[]).await;
    assert_eq!(
        (status, v["error"]["param"].as_str()),
        (StatusCode::BAD_REQUEST, Some("tool_name"))
    );

    process_plugin(&app, "forbidden", "echo '{}'", json!({})).await;
    let (status, v) = execute(&app, &agent.token, json!({"tool_name": "forbidden"}), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("allowed_tool_names"));
    let no_tools = app
        .create_agent(
            "no-tools",
            "1.00",
            json!({"policy": {"allow_tools": false}}),
        )
        .await;
    assert_eq!(
        execute(&app, &no_tools.token, json!({"tool_name": "counted"}), &[])
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    let key = [("Idempotency-Key", "tool-once")];
    let first = execute(
        &app,
        &agent.token,
        json!({"tool_name": "counted", "arguments": {"x": 1}}),
        &key,
    )
    .await;
    let again = app
        .post(
            "/v1/tools/execute",
            &agent.token,
            json!({"tool_name": "counted", "arguments": {"x": 1}}),
            &key,
        )
        .await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first.1);
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        1,
        "the tool ran once"
    );
    assert_eq!(app.books(agent.id).await.0, 2000, "charged once");
    app.assert_books_audit().await;
}

#[tokio::test]
async fn thirty_copies_of_one_key_run_a_timing_out_tool_once() {
    // An http plugin that counts its runs and never answers: AEX gives up after 5 s, long enough
    // for every copy to be seen waiting first.
    std::env::set_var("TEST_STUCK_PLUGIN_SECRET", "stuck-secret");
    let runs = Arc::new(AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counted = Arc::clone(&runs);
    let router = axum::Router::new().route(
        "/stuck",
        post(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>()
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    let app = spawn_app_with(|s| s.tools.allowed_http_hosts = vec![addr.to_string()]).await;
    install(&app, json!({"name": "stuck", "version": "1", "kind": "http", "cost_usd": "0.000500",
                         "timeout_ms": 5000,
                         "manifest": {"url": format!("http://{addr}/stuck"), "secret_env": "TEST_STUCK_PLUGIN_SECRET"}}))
    .await;
    let agent = app.create_agent("tool-copies", "1.00", json!({})).await;
    let key = "stuck-once";
    let answers = wave(
        &app,
        &Replicas::one(&app),
        ("/v1/tools/execute", &json!({"tool_name": "stuck"})),
        &agent.token,
        key,
        30,
        || runs.load(Ordering::SeqCst) == 1,
        || {},
    )
    .await;
    assert_all_the_same(&answers, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the tool ran once for thirty copies"
    );
    assert_one_ended_attempt(&app, key).await;
    app.assert_books_audit().await;
}

#[derive(Clone)]
struct PluginServer {
    calls: Arc<AtomicU64>,
    secret: &'static str,
}

async fn plugin_endpoint(
    State(s): State<PluginServer>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<Value>) {
    s.calls.fetch_add(1, Ordering::SeqCst);
    let ts = headers["x-aex-timestamp"].to_str().unwrap();
    let expected = aex::tools::signature(s.secret.as_bytes(), ts, &body);
    if headers["x-aex-signature"] != expected.as_str() {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "bad signature"})),
        );
    }
    let input: Value = serde_json::from_slice(&body).unwrap();
    (
        StatusCode::OK,
        Json(
            json!({"result": {"echo": input["arguments"], "tool": input["tool_name"]}, "stdout": "done"}),
        ),
    )
}

#[tokio::test]
async fn an_http_plugin_gets_a_signed_post_and_its_answer_is_billed() {
    std::env::set_var("TEST_HTTP_PLUGIN_SECRET", "plugin-secret-123");
    let server = PluginServer {
        calls: Arc::new(AtomicU64::new(0)),
        secret: "plugin-secret-123",
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new()
        .route("/tool", post(plugin_endpoint))
        .with_state(server.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let app = spawn_app_with(|s| s.tools.allowed_http_hosts = vec![addr.to_string()]).await;
    install(&app, json!({"name": "echo", "version": "2", "kind": "http", "cost_usd": "0.000500",
                         "manifest": {"url": format!("http://{addr}/tool"), "secret_env": "TEST_HTTP_PLUGIN_SECRET"}}))
    .await;
    install(
        &app,
        json!({"name": "wrong-secret", "version": "1", "kind": "http", "cost_usd": "0.000500",
                         "manifest": {"url": format!("http://{addr}/tool"), "secret_env": "PATH"}}),
    )
    .await;
    let agent = app.create_agent("http-tools", "1.00", json!({})).await;
    let (status, v) = execute(
        &app,
        &agent.token,
        json!({"tool_name": "echo", "arguments": [1, 2]}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["result"], json!({"echo": [1, 2], "tool": "echo"}));
    assert_eq!(v["stdout"], "done");
    let (status, _) = execute(
        &app,
        &agent.token,
        json!({"tool_name": "wrong-secret"}),
        &[],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_GATEWAY,
        "a plugin that rejects the signature is a failed run"
    );
    assert_eq!(server.calls.load(Ordering::SeqCst), 2);
    assert_eq!(app.books(agent.id).await, (500, 0, 1_000_000));
    app.assert_books_audit().await;
}

#[tokio::test]
async fn concurrent_runs_of_a_process_plugin_all_run() {
    // Each run stages a copy of the executable and starts it; a start forked while another run's
    // copy is still open for writing would make that run's exec fail with "Text file busy".
    let app = spawn_app_with(|s| {
        s.tools.require_isolation = false;
        s.tools.bwrap_path = "/nonexistent/bwrap".into();
    })
    .await;
    process_plugin(&app, "busy", "echo '{\"ok\": true}'", json!({})).await;
    let agent = app.create_agent("busy-agent", "10.00", json!({})).await;
    let runs = (0..48).map(|_| execute(&app, &agent.token, json!({"tool_name": "busy"}), &[]));
    let results = futures::future::join_all(runs).await;
    let failed: Vec<_> = results
        .iter()
        .filter(|(status, _)| *status != StatusCode::OK)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 48 runs failed: {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(
        app.books(agent.id).await.0,
        48 * 2000,
        "every run charged once"
    );
    app.assert_books_audit().await;
}
