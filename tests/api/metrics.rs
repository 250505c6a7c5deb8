//! Observability: `/metrics` (checked by `promtool check metrics` after real traffic),
//! `/admin/metrics` against the books in the database, and the dashboard page.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;

use aex::domain::Scope;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{execution_id, hello, poll, spawn_app, spawn_app_with, TestApp, PATIENCE};

/// Every metric family the issue and the Helm chart's alerts rely on.
const EXPECTED_METRICS: &[&str] = &[
    "aex_up",
    "aex_build_info",
    "aex_config_version",
    "aex_http_requests_total",
    "aex_http_request_duration_seconds",
    "aex_admissions_total",
    "aex_settlements_total",
    "aex_spent_micro_usd_total",
    "aex_ledger_append_duration_seconds",
    "aex_money_wait_seconds",
    "aex_money_batch_seconds",
    "aex_upstream_request_duration_seconds",
    "aex_upstream_errors_total",
    "aex_reconcile_runs_total",
    "aex_db_pool_connections",
    "aex_db_pool_max_connections",
    "aex_idempotency_waiting",
    "aex_ledger_verify_ok",
    "aex_ledger_verified_events",
    "aex_ledger_verify_timestamp_seconds",
    "aex_tenant_spent_micro_usd",
    "aex_tenant_reserved_micro_usd",
    "aex_reservations_stale",
    "aex_agent_budget_exhausted",
    "aex_books_sample_timestamp_seconds",
];

async fn scrape(app: &TestApp) -> String {
    let resp = app.get("/metrics", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    resp.text().await.unwrap()
}

/// The value of the first sample whose line starts with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Scrapes until `ready` accepts the text (the gauges are sampled in the background).
async fn scrape_until(app: &TestApp, ready: impl Fn(&str) -> bool) -> String {
    poll(
        "the sampled metrics to show the change",
        PATIENCE,
        || async {
            let text = scrape(app).await;
            ready(&text).then_some(text)
        },
    )
    .await
}

/// Runs `promtool check metrics` on the exposition; `None` when promtool is not installed
/// (tests/run.sh installs it and sets TEST_REQUIRE_PROMTOOL=1 so that it cannot be skipped).
fn promtool_check(text: &str) -> Option<(bool, String)> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var_os("TEST_REQUIRE_PROMTOOL").is_none() => {
            eprintln!("skipped promtool check metrics: promtool not runnable ({e})");
            return None;
        }
        Err(e) => panic!("promtool is required (TEST_REQUIRE_PROMTOOL) but cannot run: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success() && report.trim().is_empty(), report))
}

async fn fast_sampling_app() -> TestApp {
    spawn_app_with(|s| {
        s.metrics.sample_interval_seconds = 1;
    })
    .await
}

#[tokio::test]
async fn metrics_of_a_busy_server_pass_promtool_and_carry_every_family() {
    let app = fast_sampling_app().await;
    let rich = app.create_agent("rich", "5.00", json!({})).await;
    let poor = app.create_agent("poor", "0.00", json!({})).await;
    for _ in 0..3 {
        assert_eq!(
            app.chat(&rich.token, hello()).await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        app.chat(&poor.token, hello()).await.status(),
        StatusCode::PAYMENT_REQUIRED
    );
    app.mock.status.store(503, Ordering::SeqCst);
    assert_eq!(
        app.chat(&rich.token, hello()).await.status(),
        StatusCode::BAD_GATEWAY
    );
    app.mock.status.store(0, Ordering::SeqCst);
    let missing = app.get("/nowhere", None).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let (spent, _, _) = app.books(rich.id).await;

    let spent_line = format!("aex_tenant_spent_micro_usd{{tenant=\"default\"}} {spent}");
    let text = scrape_until(&app, |t| t.lines().any(|l| l == spent_line)).await;

    for name in EXPECTED_METRICS {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} is missing:\n{text}"
        );
    }
    assert_eq!(sample(&text, "aex_up "), Some(1.0));
    assert_eq!(sample(&text, "aex_ledger_verify_ok "), Some(1.0));
    assert_eq!(
        sample(&text, "aex_agent_budget_exhausted "),
        Some(1.0),
        "poor has a zero budget: {text}"
    );
    assert_eq!(sample(&text, "aex_reservations_stale "), Some(0.0));
    assert!(
        sample(
            &text,
            "aex_admissions_total{outcome=\"denied\",reason=\"insufficient_budget\"}"
        )
        .unwrap()
            >= 1.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            "aex_upstream_errors_total{kind=\"status_5xx\",provider=\"mock\"}"
        )
        .unwrap()
            >= 1.0,
        "{text}"
    );
    // The registry is process-wide and other tests run in this process too: at least ours.
    assert!(
        sample(
            &text,
            "aex_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"}"
        )
        .unwrap()
            >= 3.0
    );
    assert!(text.contains("aex_http_requests_total{route=\"unmatched\",status=\"404\"}"));
    assert!(
        !text.contains("aex_agent_spent_micro_usd"),
        "agent labels are off by default"
    );
    assert!(
        !text.contains("rich"),
        "no agent names without agent labels"
    );

    if let Some((clean, report)) = promtool_check(&text) {
        assert!(clean, "promtool check metrics:\n{report}\n{text}");
    }
}

#[tokio::test]
async fn every_call_counts_its_waits_for_both_money_transactions() {
    let app = spawn_app().await;
    let agent = app.create_agent("waits", "5.00", json!({})).await;
    let counts = |text: &str, queue: &str| {
        let of = |name: &str| sample(text, &format!("{name}{{queue=\"{queue}\"}} ")).unwrap();
        (
            of("aex_money_wait_seconds_count"),
            of("aex_money_wait_seconds_sum"),
            of("aex_money_batch_seconds_count"),
        )
    };
    let before = scrape(&app).await;
    for _ in 0..2 {
        assert_eq!(
            app.chat(&agent.token, hello()).await.status(),
            StatusCode::OK
        );
    }
    let after = scrape(&app).await;
    // The registry is process-wide and other tests run in this process too: at least ours.
    for queue in ["admission", "settlement"] {
        let (calls, waited, batches) = counts(&before, queue);
        let (calls_now, waited_now, batches_now) = counts(&after, queue);
        assert!(calls_now >= calls + 2.0, "{queue}: {after}");
        assert!(waited_now > waited, "{queue}: {after}");
        assert!(batches_now >= batches + 1.0, "{queue}: {after}");
    }
}

#[tokio::test]
async fn agent_labels_and_a_separate_metrics_port_are_opt_in() {
    let app = spawn_app_with(|s| {
        s.metrics.sample_interval_seconds = 1;
        s.metrics.agent_labels = true;
        s.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let agent = app
        .create_agent("labelled \"one\"", "1.00", json!({}))
        .await;
    assert_eq!(
        app.chat(&agent.token, hello()).await.status(),
        StatusCode::OK
    );
    let (spent, _, _) = app.books(agent.id).await;
    let line = format!(
        "aex_agent_spent_micro_usd{{agent=\"labelled \\\"one\\\"\",tenant=\"default\"}} {spent}"
    );
    let text = scrape_until(&app, |t| t.contains(&line)).await;
    if let Some((clean, report)) = promtool_check(&text) {
        assert!(clean, "promtool check metrics:\n{report}\n{text}");
    }

    let metrics_addr = app.server.as_ref().unwrap().metrics_addr.unwrap();
    let side = app
        .http
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(side.status(), StatusCode::OK);
    assert!(side.text().await.unwrap().contains("# TYPE aex_up gauge"));
    let other = app
        .http
        .get(format!("http://{metrics_addr}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        StatusCode::NOT_FOUND,
        "the metrics port serves /metrics only"
    );
}

async fn admin_metrics(app: &TestApp, token: &str, query: &str) -> reqwest::Response {
    app.get(&format!("/admin/metrics{query}"), Some(token))
        .await
}

#[tokio::test]
async fn the_admin_summary_matches_the_books_in_the_database() {
    let app = fast_sampling_app().await;
    let alpha = app.create_agent("alpha", "2.00", json!({})).await;
    let beta = app.create_agent("beta", "0.00", json!({})).await;
    let mut keys = Vec::new();
    for _ in 0..4 {
        let resp = app.chat(&alpha.token, hello()).await;
        assert_eq!(resp.status(), StatusCode::OK);
        keys.push(execution_id(&resp));
    }
    assert_eq!(
        app.chat(&beta.token, hello()).await.status(),
        StatusCode::PAYMENT_REQUIRED
    );
    let (alpha_spent, _, alpha_budget) = app.books(alpha.id).await;

    let resp = admin_metrics(&app, &app.operator_token, "").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let m: Value = resp.json().await.unwrap();

    let t = &m["totals"];
    assert_eq!(t["agents"], 2);
    assert_eq!(t["spent_micro_usd"], alpha_spent);
    assert_eq!(t["reserved_micro_usd"], 0);
    assert_eq!(t["requests_24h"], 5, "four commits and one denial: {m:#}");
    assert_eq!(t["denied_24h"], 1);
    assert_eq!(t["spent_24h_micro_usd"], alpha_spent);
    assert_eq!(t["exhausted_agents"], 1);
    assert_eq!(t["stale_reservations"], 0);
    assert_eq!(
        m["denials"],
        json!([{"reason": "insufficient_budget", "count": 1}])
    );
    assert_eq!(m["execution_states"], json!({"COMMITTED": 4, "DENIED": 1}));
    assert_eq!(m["top_models"][0]["model"], "gpt-4o-mini");
    assert_eq!(m["top_models"][0]["requests"], 5);

    let hourly = m["hourly"].as_array().unwrap();
    assert_eq!(hourly.len(), 24);
    let sum = |key: &str| hourly.iter().map(|b| b[key].as_i64().unwrap()).sum::<i64>();
    assert_eq!(sum("requests"), 5);
    assert_eq!(sum("spent_micro_usd"), alpha_spent);
    assert_eq!(
        hourly[23]["requests"], 5,
        "everything happened in the current hour"
    );
    let starts: Vec<chrono::DateTime<chrono::Utc>> = hourly
        .iter()
        .map(|b| b["start"].as_str().unwrap().parse().unwrap())
        .collect();
    for pair in starts.windows(2) {
        assert_eq!(pair[1] - pair[0], chrono::TimeDelta::hours(1));
    }
    let now = chrono::Utc::now();
    assert!(starts[23] <= now && now - starts[23] < chrono::TimeDelta::hours(1));
    let minutes = m["per_minute"].as_array().unwrap();
    assert_eq!(minutes.len(), 60);
    assert_eq!(
        minutes
            .iter()
            .map(|b| b["requests"].as_i64().unwrap())
            .sum::<i64>(),
        5
    );

    let agents = m["agents"].as_array().unwrap();
    let a = agents.iter().find(|a| a["name"] == "alpha").unwrap();
    assert_eq!(a["spent_micro_usd"], alpha_spent);
    assert_eq!(a["remaining_micro_usd"], alpha_budget - alpha_spent);
    assert_eq!(a["requests_total"], 4);
    assert_eq!(a["burn_rate"]["last_1h_micro_usd_per_hour"], alpha_spent);
    assert_eq!(
        a["burn_rate"]["last_15m_micro_usd_per_hour"],
        alpha_spent * 4
    );
    assert_eq!(
        a["seconds_to_exhaustion"],
        (alpha_budget - alpha_spent) * 3600 / (alpha_spent * 4)
    );
    let b = agents.iter().find(|a| a["name"] == "beta").unwrap();
    assert_eq!(b["seconds_to_exhaustion"], 0, "beta has nothing to spend");
    assert_eq!(b["burn_rate"]["last_1h_micro_usd_per_hour"], 0);

    let recent = m["recent_executions"].as_array().unwrap();
    assert_eq!(recent.len(), 5);
    assert_eq!(
        recent[1]["execution_id"],
        keys[3].as_str(),
        "newest first after the denial"
    );
    let committed = recent
        .iter()
        .find(|e| e["execution_id"] == keys[0].as_str())
        .unwrap();
    assert_eq!(committed["state"], "COMMITTED");
    assert!(
        committed["reserved_micro_usd"].as_i64().unwrap()
            >= committed["actual_micro_usd"].as_i64().unwrap()
    );

    let ledger = &m["ledger"];
    assert_eq!(
        ledger["last_verification"]["ok"], true,
        "verified at startup"
    );
    let feed = ledger["recent_events"].as_array().unwrap();
    assert_eq!(feed.len(), 15);
    let newest_id: i64 = sqlx::query_scalar("SELECT max(id) FROM event_log")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(feed[0]["id"], newest_id);
}

#[tokio::test]
async fn an_admin_sees_only_its_own_tenant_and_agents_cannot_see_the_summary() {
    let app = fast_sampling_app().await;
    let agent = app.create_agent("mine", "1.00", json!({})).await;
    assert_eq!(
        app.chat(&agent.token, hello()).await.status(),
        StatusCode::OK
    );
    let other = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'other')")
        .bind(other)
        .execute(&app.pool)
        .await
        .unwrap();
    let admin = app
        .signer
        .issue(
            "other-admin",
            Scope::Admin,
            Some(aex::domain::TenantId(other)),
            None,
            None,
        )
        .unwrap()
        .token;

    let m: Value = admin_metrics(&app, &admin, "").await.json().await.unwrap();
    assert_eq!(m["tenant_id"], other.to_string());
    assert_eq!(m["totals"]["agents"], 0);
    assert_eq!(m["recent_executions"], json!([]));
    assert_eq!(m["ledger"]["recent_events"], json!([]));
    let default = "00000000-0000-0000-0000-000000000001";
    let denied = admin_metrics(&app, &admin, &format!("?tenant_id={default}")).await;
    assert_eq!(denied.status(), StatusCode::NOT_FOUND);

    let m: Value = admin_metrics(&app, &app.operator_token, &format!("?tenant_id={default}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["totals"]["agents"], 1);

    assert_eq!(
        admin_metrics(&app, &agent.token, "").await.status(),
        StatusCode::FORBIDDEN
    );
    let anonymous = app.get("/admin/metrics", None).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn reservations_held_past_the_threshold_are_stale() {
    let app = spawn_app_with(|s| {
        s.metrics.stale_reservation_seconds = 0;
    })
    .await;
    let agent = app.create_agent("waiting", "1.00", json!({})).await;
    // The provider holds the call until the test has looked.
    app.mock.gate_closed.store(true, Ordering::SeqCst);
    let call = app.spawn_chat(&agent.token);
    let totals = poll("a stale reservation in the totals", PATIENCE, || async {
        let m: Value = admin_metrics(&app, &app.operator_token, "")
            .await
            .json()
            .await
            .unwrap();
        (m["totals"]["stale_reservations"].as_i64().unwrap() > 0).then(|| m["totals"].clone())
    })
    .await;
    assert_eq!(
        totals["stale_reservations"], 1,
        "the in-flight reservation is older than 0 s"
    );
    assert!(totals["reserved_micro_usd"].as_i64().unwrap() > 0);
    app.mock.open_gate();
    assert_eq!(call.await.unwrap().status(), StatusCode::OK);
    let m: Value = admin_metrics(&app, &app.operator_token, "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["totals"]["stale_reservations"], 0);
}

#[tokio::test]
async fn the_dashboard_is_served_by_the_binary_with_a_strict_content_policy() {
    let app = fast_sampling_app().await;
    for (path, kind) in [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
    ] {
        let resp = app.get(path, None).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let headers = resp.headers().clone();
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind));
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
        let body = resp.text().await.unwrap();
        assert!(
            !body.contains("https://"),
            "{path} loads nothing from elsewhere"
        );
        if path == "/dashboard" {
            assert!(body.contains("/dashboard/app.js") && !body.contains("http://"));
        }
        if path == "/dashboard/app.js" {
            assert!(
                !body.contains("innerHTML"),
                "values are never rendered as HTML"
            );
        }
    }
}
