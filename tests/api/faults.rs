//! Upstream faults: each ends in the right terminal state with the right charge, and the books
//! agree (rate limiting, refused connections, a 200 that is not JSON, a 200 without usage).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use aex::dev::mock_upstream::{self, MockControl};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{execution_id, hello, spawn_app, spawn_app_with_models, TestApp};

/// A routing-table provider at `addr`.
fn provider(name: &str, addr: std::net::SocketAddr) -> String {
    format!("\n[providers.{name}]\nkind = \"openai\"\nbase_url = \"http://{addr}/v1\"\n")
}

/// A chat model on `provider` at (input, output) USD per million tokens, with its fallbacks.
fn chat_model(alias: &str, provider: &str, prices: (&str, &str), fallbacks: &[&str]) -> String {
    let (input, output) = prices;
    format!(
        "\n[models.\"{alias}\"]\nprovider = \"{provider}\"\nupstream_model = \"mock-{alias}\"\n\
         input_usd_per_million = \"{input}\"\noutput_usd_per_million = \"{output}\"\n\
         max_output_tokens = 100\ncapabilities = [\"chat\"]\nfallbacks = {fallbacks:?}\n"
    )
}

/// `ceil(tokens * micro-USD per million / 1e6)`, as SPEC §2 prices.
fn cost(tokens: i64, per_million: i64) -> i64 {
    (tokens * per_million + 999_999) / 1_000_000
}

/// A released execution: 502 `upstream_error`, nothing spent or held, the reason in the ledger.
async fn assert_released(app: &TestApp, resp: reqwest::Response, reason: &str) -> Value {
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let id = execution_id(&resp);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_error", "{body}");
    let (state, why): (String, Option<String>) =
        sqlx::query_as("SELECT state, reason FROM executions WHERE execution_key = $1")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), why.as_deref()), ("RELEASED", Some(reason)));
    let released = app.ledger_event(&id, "reservation.released").await;
    assert_eq!(released["reason"], reason);
    app.assert_books_audit().await;
    released
}

#[tokio::test]
async fn an_upstream_429_without_a_fallback_releases_the_hold_and_is_a_502() {
    let app = spawn_app().await;
    let agent = app.create_agent("throttled", "1.00", json!({})).await;
    app.mock.status.store(429, Ordering::SeqCst);
    let resp = app.chat(&agent.token, hello()).await;
    let released = assert_released(&app, resp, "upstream_status_429").await;
    assert_eq!(released["upstream_status"], 429);
    assert_eq!(app.books(agent.id).await.0, 0);
    assert_eq!(app.books(agent.id).await.1, 0);
    assert_eq!(app.mock.calls(), 1);
}

#[tokio::test]
async fn an_upstream_429_with_a_fallback_is_served_and_charged_by_the_fallback() {
    let backup = Arc::new(MockControl::default());
    let backup_addr = mock_upstream::spawn("127.0.0.1:0".parse().unwrap(), Arc::clone(&backup))
        .await
        .unwrap();
    let app = spawn_app_with_models(&format!(
        "{}{}{}",
        provider("backup", backup_addr),
        chat_model("busy", "mock", ("1", "2"), &["spare"]),
        chat_model("spare", "backup", ("3", "4"), &[]),
    ))
    .await;
    let agent = app.create_agent("rerouted", "1.00", json!({})).await;
    app.mock.status.store(429, Ordering::SeqCst);
    let mut body = hello();
    body["model"] = json!("busy");
    let resp = app.chat(&agent.token, body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let id = execution_id(&resp);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["model"], "busy");
    assert_eq!((app.mock.calls(), backup.calls()), (1, 1));
    let fallback = app.ledger_event(&id, "execution.fallback").await;
    assert_eq!(fallback["reason"], "upstream_status_429");
    let p = v["usage"]["prompt_tokens"].as_i64().unwrap();
    let c = v["usage"]["completion_tokens"].as_i64().unwrap();
    let expected = cost(p, 3_000_000) + cost(c, 4_000_000);
    assert_eq!(
        app.books(agent.id).await.0,
        expected,
        "the fallback's prices"
    );
    assert_eq!(
        app.ledger_event(&id, "usage.commit").await["model"],
        "spare"
    );
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_refused_connection_without_a_fallback_releases_the_hold_and_is_a_502() {
    // A port that was free a moment ago and is closed now: connecting is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = spawn_app_with_models(&format!(
        "{}{}",
        provider("gone", closed),
        chat_model("gone", "gone", ("1", "2"), &[])
    ))
    .await;
    let agent = app.create_agent("stranded", "1.00", json!({})).await;
    let mut body = hello();
    body["model"] = json!("gone");
    let resp = app.chat(&agent.token, body).await;
    let released = assert_released(&app, resp, "upstream_unreachable").await;
    assert!(released["upstream_status"].is_null());
    assert_eq!(app.books(agent.id).await.0, 0);
    assert_eq!(app.books(agent.id).await.1, 0);
}

#[tokio::test]
async fn a_200_that_is_not_json_is_charged_the_estimated_prompt_and_is_a_502() {
    let app = spawn_app().await;
    let agent = app.create_agent("garbled", "1.00", json!({})).await;
    app.mock.malformed.store(true, Ordering::SeqCst);
    let resp = app.chat(&agent.token, hello()).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let id = execution_id(&resp);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_error", "{body}");

    let prompt = app.ledger_event(&id, "reservation.reserved").await["prompt_tokens_estimate"]
        .as_i64()
        .unwrap();
    let commit = app.ledger_event(&id, "usage.commit").await;
    assert_eq!(commit["usage"], "estimated");
    assert_eq!(commit["prompt_tokens"], prompt);
    assert_eq!(commit["completion_tokens"], 0);
    let charged = cost(prompt, 150_000);
    assert!(charged > 0);
    assert_eq!(commit["actual_micro_usd"], charged);
    assert_eq!(app.books(agent.id).await.0, charged);
    assert_eq!(app.books(agent.id).await.1, 0);
    assert_eq!(app.execution_states(agent.id).await, vec!["COMMITTED"]);
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_200_without_usage_is_committed_with_estimated_usage_on_every_route() {
    let app = spawn_app().await;
    let agent = app.create_agent("unmetered", "1.00", json!({})).await;
    app.mock.omit_usage.store(true, Ordering::SeqCst);
    let mut spent = 0;
    for (path, body, output_price) in [
        ("/v1/chat/completions", hello(), 600_000),
        (
            "/v1/responses",
            json!({"model": "gpt-4o-mini", "input": "Say hello to the ledger"}),
            600_000,
        ),
        (
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": "Say hello to the ledger"}),
            0,
        ),
    ] {
        let resp = app.post(path, &agent.token, body, &[]).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let id = execution_id(&resp);
        let header_cost: i64 = resp.headers()["x-aex-cost-micro-usd"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let v: Value = resp.json().await.unwrap();
        assert!(v.get("usage").is_none(), "{path}: the provider sent none");

        let prompt = app.ledger_event(&id, "reservation.reserved").await["prompt_tokens_estimate"]
            .as_i64()
            .unwrap();
        let commit = app.ledger_event(&id, "usage.commit").await;
        assert_eq!(commit["usage"], "estimated", "{path}");
        assert_eq!(commit["prompt_tokens"], prompt, "{path}");
        let completion = commit["completion_tokens"].as_i64().unwrap();
        let input_price = if output_price == 0 { 20_000 } else { 150_000 };
        let expected = cost(prompt, input_price) + cost(completion, output_price);
        assert_eq!(commit["actual_micro_usd"], expected, "{path}");
        assert_eq!(header_cost, expected, "{path}");
        if output_price > 0 {
            assert!(completion > 0, "{path}: the output was counted");
        }
        spent += expected;
    }
    assert_eq!(app.books(agent.id).await.0, spent);
    assert_eq!(app.books(agent.id).await.1, 0);
    assert_eq!(
        app.execution_states(agent.id).await,
        vec!["COMMITTED", "COMMITTED", "COMMITTED"]
    );
    app.assert_books_audit().await;
}
