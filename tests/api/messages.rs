//! `POST /v1/messages` in Anthropic's wire format, governed like chat: natively to an
//! `anthropic` provider (README's recipe, against a mock that accepts only `x-api-key` and
//! `anthropic-version`) and translated to an OpenAI-compatible one; streaming and not, tools,
//! prompt caching, idempotency, errors in Anthropic's shape, and every attack on the hold the
//! Messages API offers. Books exact to the micro-dollar.

use std::sync::Arc;

use aex::dev::mock_auth::RequiredAuth;
use aex::dev::mock_upstream::MockControl;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{mini_cost, spawn_app_with_models, TestApp};
use crate::provider_auth::{recipe_on_mock, spawn_mock, ANTHROPIC_KEY};

/// README's claude-sonnet-4-5: $3 input, $0.30 cache reads, $3.75 cache writes, $15 output per
/// million tokens; the input parts summed, then rounded up once.
fn claude_cost(usage: &Value) -> i64 {
    let int = |k: &str| usage[k].as_i64().unwrap_or(0);
    let input_millionths = int("input_tokens") * 3_000_000
        + int("cache_read_input_tokens") * 300_000
        + int("cache_creation_input_tokens") * 3_750_000;
    (input_millionths + 999_999) / 1_000_000 + int("output_tokens") * 15
}

/// An app whose routing table has README's Anthropic recipe on its own mock (which refuses any
/// other auth), besides the usual OpenAI-compatible mock.
pub async fn anthropic_app() -> (TestApp, Arc<MockControl>) {
    std::env::set_var("ANTHROPIC_API_KEY", ANTHROPIC_KEY);
    let (anthropic, addr) = spawn_mock(RequiredAuth::anthropic(ANTHROPIC_KEY, "2023-06-01")).await;
    let recipe = recipe_on_mock("anthropic", "https://api.anthropic.com", addr);
    let app = spawn_app_with_models(&recipe).await;
    (app, anthropic)
}

fn hello(max_tokens: u64) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "Say hello to the ledger"}]})
}

async fn send(app: &TestApp, headers: &[(&str, &str)], body: &Value) -> reqwest::Response {
    let mut req = app
        .http
        .post(format!("{}/v1/messages", app.base))
        .json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// The agent token as Anthropic's SDKs send it.
fn key(token: &str) -> [(&str, &str); 1] {
    [("x-api-key", token)]
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()[name].to_str().unwrap().to_owned()
}

/// The SSE events of a body: `(event name, data)`.
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .filter_map(|block| {
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            serde_json::from_str(&data).ok().map(|d| (name, d))
        })
        .collect()
}

async fn assert_anthropic_error(resp: reqwest::Response, status: StatusCode, kind: &str) -> Value {
    let got = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(got, status, "{v}");
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    v
}

#[tokio::test]
async fn a_native_message_is_held_sent_with_x_api_key_and_billed_exactly() {
    let (app, anthropic) = anthropic_app().await;
    let agent = app.create_agent("claude-user", "1.00", json!({})).await;
    let resp = send(&app, &key(&agent.token), &hello(100)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let id = header(&resp, "x-aex-execution-id");
    let cost: i64 = header(&resp, "x-aex-cost-micro-usd").parse().unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["model"], "claude-sonnet-4-5");
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(cost, claude_cost(&v["usage"]));
    assert_eq!(anthropic.auth.refused(), 0);
    let sent = anthropic.last_request().unwrap();
    assert_eq!(sent["model"], "claude-sonnet-4-5");
    assert_eq!(sent["max_tokens"], 100);

    let (spent, reserved, _) = app.books(agent.id).await;
    assert_eq!((spent, reserved), (cost, 0));
    let commit = app.ledger_event(&id, "usage.commit").await;
    assert_eq!(commit["actual_micro_usd"], cost);
    assert_eq!(commit["usage"], "reported");
    let held = app.ledger_event(&id, "reservation.reserved").await;
    // The hold covers the whole cap at the output price.
    assert!(
        held["estimate_micro_usd"].as_i64().unwrap() >= 100 * 15,
        "{held}"
    );
    let route: String = sqlx::query_scalar("SELECT route FROM executions WHERE execution_key = $1")
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(route, "/v1/messages");
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_native_stream_relays_anthropic_events_and_settles_before_message_stop() {
    let (app, anthropic) = anthropic_app().await;
    let agent = app.create_agent("streamer", "1.00", json!({})).await;
    let mut body = hello(40);
    body["stream"] = json!(true);
    let resp = send(
        &app,
        &[("authorization", &format!("Bearer {}", agent.token))],
        &body,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(header(&resp, "content-type").starts_with("text/event-stream"));
    let evs = events(&resp.text().await.unwrap());
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    assert_eq!(evs[0].1["message"]["model"], "claude-sonnet-4-5");
    let start = &evs[0].1["message"]["usage"];
    let delta = &evs[evs.len() - 2].1["usage"];
    let mut usage = start.clone();
    usage["output_tokens"] = delta["output_tokens"].clone();
    let cost = claude_cost(&usage);
    let aex = &evs[evs.len() - 1].1["aex"];
    assert_eq!(aex["cost_micro_usd"], cost, "{aex}");
    assert_eq!(aex["budget_remaining_micro_usd"], 1_000_000 - cost);
    assert_eq!(app.books(agent.id).await, (cost, 0, 1_000_000));
    assert_eq!(anthropic.calls(), 1);
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_tool_use_round_trip_is_two_governed_calls() {
    let (app, anthropic) = anthropic_app().await;
    let agent = app.create_agent("tooler", "1.00", json!({})).await;
    let tools = json!([{"name": "get_weather", "description": "Weather of a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let mut first = hello(200);
    first["tools"] = tools.clone();
    let resp = send(&app, &key(&agent.token), &first).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let c1: i64 = header(&resp, "x-aex-cost-micro-usd").parse().unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["stop_reason"], "tool_use");
    let call = &v["content"][0];
    assert_eq!(call["name"], "get_weather");
    let held: i64 = sqlx::query_scalar(
        "SELECT (payload::jsonb ->> 'prompt_tokens_estimate')::bigint FROM event_log WHERE event_type = 'reservation.reserved' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(held >= 600, "Anthropic's tool prompt is held: {held}");

    let mut second = first.clone();
    second["messages"] = json!([
        {"role": "user", "content": "Say hello to the ledger"},
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "sunny"}]}
    ]);
    let resp = send(&app, &key(&agent.token), &second).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let c2: i64 = header(&resp, "x-aex-cost-micro-usd").parse().unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(c2, claude_cost(&v["usage"]));
    assert_eq!(anthropic.calls(), 2);
    assert_eq!(app.books(agent.id).await.0, c1 + c2);
    app.assert_books_audit().await;
}

#[tokio::test]
async fn cache_writes_and_reads_are_billed_as_the_provider_reports_them() {
    let (app, _anthropic) = anthropic_app().await;
    let agent = app.create_agent("cacher", "1.00", json!({})).await;
    let mut body = hello(10);
    body["system"] = json!([{"type": "text", "text": "a long and stable system prompt of many words", "cache_control": {"type": "ephemeral"}}]);
    let mut costs = Vec::new();
    let mut usages = Vec::new();
    for _ in 0..2 {
        let resp = send(&app, &key(&agent.token), &body).await;
        assert_eq!(resp.status(), StatusCode::OK);
        costs.push(
            header(&resp, "x-aex-cost-micro-usd")
                .parse::<i64>()
                .unwrap(),
        );
        usages.push(resp.json::<Value>().await.unwrap()["usage"].clone());
    }
    let written = usages[0]["cache_creation_input_tokens"].as_i64().unwrap();
    assert!(written > 0);
    assert_eq!(usages[0]["cache_read_input_tokens"], 0);
    assert_eq!(usages[1]["cache_creation_input_tokens"], 0);
    assert_eq!(usages[1]["cache_read_input_tokens"], written);
    for (cost, usage) in costs.iter().zip(&usages) {
        assert_eq!(*cost, claude_cost(usage), "{usage}");
    }
    // The write costs more than plain input, the read less: both as invoiced.
    assert!(costs[0] > costs[1], "{costs:?}");
    // The ledger records the units billed at each price.
    let commits = app.ledger_payloads("usage.commit").await;
    assert_eq!(commits.len(), 2);
    for (commit, usage) in commits.iter().zip(&usages) {
        assert_eq!(commit["billed_input_tokens"], usage["input_tokens"]);
        assert_eq!(
            commit["billed_cache_write_tokens"],
            usage["cache_creation_input_tokens"]
        );
        assert_eq!(
            commit["billed_cached_input_tokens"],
            usage["cache_read_input_tokens"]
        );
        assert_eq!(commit["billed_output_tokens"], usage["output_tokens"]);
    }
    assert_eq!(app.books(agent.id).await.0, costs.iter().sum::<i64>());
    app.assert_books_audit().await;
}

#[tokio::test]
async fn an_idempotent_retry_replays_the_message_and_charges_once() {
    let (app, anthropic) = anthropic_app().await;
    let agent = app.create_agent("retrier", "1.00", json!({})).await;
    let headers = [
        ("x-api-key", agent.token.as_str()),
        ("idempotency-key", "msg-retry-1"),
    ];
    let first = send(&app, &headers, &hello(20)).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first_body: Value = first.json().await.unwrap();
    let again = send(&app, &headers, &hello(20)).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(header(&again, "idempotent-replayed"), "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first_body);
    assert_eq!(anthropic.calls(), 1);
    // Another body under the same key is a conflict, in Anthropic's shape.
    let other = send(&app, &headers, &hello(21)).await;
    assert_anthropic_error(other, StatusCode::CONFLICT, "invalid_request_error").await;
    assert_eq!(
        app.books(agent.id).await.0,
        claude_cost(&first_body["usage"])
    );
}

#[tokio::test]
async fn credentials_are_one_agent_token_in_x_api_key_or_bearer_never_two() {
    let (app, anthropic) = anthropic_app().await;
    let agent = app.create_agent("auth", "1.00", json!({})).await;
    let other = app.create_agent("other", "1.00", json!({})).await;
    let bearer = format!("Bearer {}", agent.token);
    // Both headers with the same token: fine.
    let same = [
        ("x-api-key", agent.token.as_str()),
        ("authorization", bearer.as_str()),
    ];
    assert_eq!(send(&app, &same, &hello(5)).await.status(), StatusCode::OK);
    // Two different tokens: refused, whichever is valid.
    let mixed = [
        ("x-api-key", other.token.as_str()),
        ("authorization", bearer.as_str()),
    ];
    assert_anthropic_error(
        send(&app, &mixed, &hello(5)).await,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
    )
    .await;
    let bad = [("x-api-key", "not-a-token")];
    assert_anthropic_error(
        send(&app, &bad, &hello(5)).await,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
    )
    .await;
    assert_anthropic_error(
        send(&app, &[], &hello(5)).await,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
    )
    .await;
    // The provider key is never what the agent sent.
    assert_eq!(anthropic.calls(), 1);
    assert_eq!(anthropic.auth.refused(), 0);
    assert_eq!(app.books(other.id).await.0, 0);
}

#[tokio::test]
async fn attacks_on_the_hold_are_refused_before_anything_is_held_or_sent() {
    let (app, anthropic) = anthropic_app().await;
    let agent = app
        .create_agent(
            "attacker",
            "0.05",
            json!({"policy": {"allow_vision": true}}),
        )
        .await;
    let k = key(&agent.token);
    let mut cases: Vec<(Value, StatusCode, &str)> = Vec::new();
    let mut no_cap = hello(1);
    no_cap.as_object_mut().unwrap().remove("max_tokens");
    cases.push((no_cap, StatusCode::BAD_REQUEST, "max_tokens"));
    let mut null_cap = hello(1);
    null_cap["max_tokens"] = Value::Null;
    cases.push((null_cap, StatusCode::BAD_REQUEST, "max_tokens"));
    cases.push((hello(64_001), StatusCode::BAD_REQUEST, "max_tokens"));
    let mut thinking = hello(1000);
    thinking["thinking"] = json!({"type": "enabled", "budget_tokens": 5000});
    cases.push((thinking, StatusCode::BAD_REQUEST, "thinking.budget_tokens"));
    let mut n = hello(10);
    n["n"] = json!(8);
    cases.push((n, StatusCode::BAD_REQUEST, "`n`"));
    let mut server_tool = hello(10);
    server_tool["tools"] =
        json!([{"type": "web_search_20250305", "name": "web_search", "max_uses": 50}]);
    cases.push((server_tool, StatusCode::BAD_REQUEST, "hosted tool"));
    let mut mcp = hello(10);
    mcp["mcp_servers"] = json!([{"type": "url", "url": "https://mcp.example", "name": "x"}]);
    cases.push((mcp, StatusCode::BAD_REQUEST, "mcp_servers"));
    let mut priority = hello(10);
    priority["service_tier"] = json!("priority");
    cases.push((priority, StatusCode::BAD_REQUEST, "service_tier"));
    // What fits no budget of 0.05 USD: the whole 64,000-token cap at $15/M is 0.96 USD, and
    // 40 images at gpt-4o-mini's worst case of 48,169 tokens each are 5.78 USD of input.
    cases.push((hello(64_000), StatusCode::PAYMENT_REQUIRED, ""));
    let image = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}});
    let mut images = hello(1);
    images["messages"][0]["content"] = Value::Array(vec![image; 40]);
    cases.push((images, StatusCode::PAYMENT_REQUIRED, ""));
    let mut document = hello(1);
    document["messages"][0]["content"] = json!([{"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]);
    // A document is bounded by the 200,000-token context window: 0.60 USD of input.
    cases.push((document, StatusCode::PAYMENT_REQUIRED, ""));
    for (body, status, param) in cases {
        let resp = send(&app, &k, &body).await;
        let kind = if status == StatusCode::PAYMENT_REQUIRED {
            "billing_error"
        } else {
            "invalid_request_error"
        };
        let v = assert_anthropic_error(resp, status, kind).await;
        if !param.is_empty() {
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(param.split('.').next().unwrap()),
                "{v}"
            );
        }
    }
    assert_eq!(anthropic.calls(), 0, "nothing reached the provider");
    assert_eq!(app.books(agent.id).await, (0, 0, 50_000));
    app.assert_books_audit().await;
}

#[tokio::test]
async fn provider_errors_come_back_in_anthropic_shape_and_cost_nothing() {
    let (app, anthropic) = anthropic_app().await;
    let agent = app.create_agent("unlucky", "1.00", json!({})).await;
    anthropic
        .status
        .store(529, std::sync::atomic::Ordering::SeqCst);
    let resp = send(&app, &key(&agent.token), &hello(10)).await;
    assert_anthropic_error(resp, StatusCode::BAD_GATEWAY, "api_error").await;
    anthropic
        .status
        .store(400, std::sync::atomic::Ordering::SeqCst);
    let resp = send(&app, &key(&agent.token), &hello(10)).await;
    // The provider's own client error goes back as it is.
    assert_anthropic_error(resp, StatusCode::BAD_REQUEST, "invalid_request_error").await;
    assert_eq!(app.books(agent.id).await, (0, 0, 1_000_000));
    let unknown = json!({"model": "no-such-model", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    assert_anthropic_error(
        send(&app, &key(&agent.token), &unknown).await,
        StatusCode::NOT_FOUND,
        "not_found_error",
    )
    .await;
    app.assert_books_audit().await;
}

#[tokio::test]
async fn an_openai_compatible_alias_is_translated_both_ways_with_exact_books() {
    let (app, _anthropic) = anthropic_app().await;
    let agent = app.create_agent("translated", "1.00", json!({})).await;
    let mut body = hello(30);
    body["model"] = json!("gpt-4o-mini");
    body["system"] = json!("be brief");
    let resp = send(&app, &key(&agent.token), &body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let c1: i64 = header(&resp, "x-aex-cost-micro-usd").parse().unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(v["content"][0]["type"], "text");
    let usage = json!({"prompt_tokens": v["usage"]["input_tokens"], "completion_tokens": v["usage"]["output_tokens"]});
    assert_eq!(c1, mini_cost(&usage));
    let sent = app.mock.last_request().unwrap();
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );
    // The cap field the upstream model's family reads (a mock model: `max_tokens`).
    assert_eq!(sent["max_tokens"], 30);

    // Tools and a stream: tool_calls come back as a tool_use block in Anthropic's events.
    body["tools"] = json!([{"name": "get_weather", "input_schema": {"type": "object"}}]);
    body["stream"] = json!(true);
    let resp = send(&app, &key(&agent.token), &body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let evs = events(&resp.text().await.unwrap());
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    let delta = &evs[evs.len() - 2].1;
    let usage = json!({"prompt_tokens": delta["usage"]["input_tokens"], "completion_tokens": delta["usage"]["output_tokens"]});
    let c2 = evs[evs.len() - 1].1["aex"]["cost_micro_usd"]
        .as_i64()
        .unwrap();
    assert_eq!(c2, mini_cost(&usage));
    assert_eq!(app.books(agent.id).await, (c1 + c2, 0, 1_000_000));
    app.assert_books_audit().await;
}

#[tokio::test]
async fn count_tokens_answers_the_input_bound_without_a_call_or_a_charge() {
    let (app, anthropic) = anthropic_app().await;
    let agent = app.create_agent("counter", "1.00", json!({})).await;
    let body = json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Say hello to the ledger"}]});
    let resp = app
        .http
        .post(format!("{}/v1/messages/count_tokens", app.base))
        .header("x-api-key", &agent.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let counted = resp.json::<Value>().await.unwrap()["input_tokens"]
        .as_u64()
        .unwrap();
    // The real call's reported input never exceeds it.
    let real: Value = send(&app, &key(&agent.token), &hello(5))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        counted >= real["usage"]["input_tokens"].as_u64().unwrap(),
        "{counted}"
    );
    assert_eq!(anthropic.calls(), 1);
    let unknown = app
        .http
        .post(format!("{}/v1/messages/count_tokens", app.base))
        .header("x-api-key", &agent.token)
        .json(&json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_anthropic_error(unknown, StatusCode::NOT_FOUND, "not_found_error").await;
}
