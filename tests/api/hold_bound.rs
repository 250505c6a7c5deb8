//! The hold is a proof (SPEC §5.2, issue 13): every attack of the issue, sent by an agent with a
//! 0.005 USD budget against a provider that bills the most its inputs allow, ends with spent ≤
//! budget and nothing reserved; a request that fits is billed exactly.

use std::sync::atomic::Ordering;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{merged, mini_cost, spawn_app_with_models, TestApp};

/// A model with a context window (so stored context can be bounded) and its fallback.
pub const MODELS: &str = r#"
[models."windowed"]
provider = "mock"
upstream_model = "mock-windowed"
input_usd_per_million = "0.15"
output_usd_per_million = "0.60"
max_output_tokens = 1000
context_window = 16000
image_part_tokens = 3000
capabilities = ["chat", "streaming", "vision", "responses"]
fallbacks = ["dear-fallback"]

[models."dear-fallback"]
provider = "mock"
upstream_model = "mock-dear"
input_usd_per_million = "3"
output_usd_per_million = "12"
max_output_tokens = 500
context_window = 16000
image_part_tokens = 3000
capabilities = ["chat", "streaming", "vision", "responses"]

[models."seer"]
provider = "mock"
upstream_model = "mock-seer"
input_usd_per_million = "0.15"
output_usd_per_million = "0.60"
max_output_tokens = 1000
context_window = 16000
image_part_tokens = 3000
hosted_tool_usd_per_call = { web_search = "0.001" }
max_hosted_tool_calls = 2
capabilities = ["chat", "streaming", "vision", "responses"]
"#;

/// The mock's stored context fills the test models' window; its images bill their configured
/// worst (gpt-4o-mini keeps its default of 48,169, above what the mock bills).
pub async fn billing_app() -> TestApp {
    billing_app_with(MODELS).await
}

/// [`billing_app`] with the routing table's extra models `models`.
pub async fn billing_app_with(models: &str) -> TestApp {
    let app = spawn_app_with_models(models).await;
    app.mock.bill_max.store(true, Ordering::SeqCst);
    app.mock.context_tokens.store(16_000, Ordering::SeqCst);
    app.mock.image_tokens.store(3_000, Ordering::SeqCst);
    app
}

/// Every committed attempt cost at most its hold, and nothing is held.
pub async fn assert_no_cost_above_its_hold(app: &TestApp) {
    app.settled().await;
    let above = app
        .count("SELECT count(*) FROM reservations WHERE actual_micro_usd > estimate_micro_usd")
        .await;
    assert_eq!(above, 0, "an execution cost more than its hold");
    let held = app
        .count("SELECT count(*) FROM reservations WHERE state = 'RESERVED'")
        .await;
    assert_eq!(held, 0);
}

/// A one-message chat for `model`.
fn chat_for(model: &str, extra: Value) -> Value {
    merged(
        json!({"model": model, "messages": [{"role": "user", "content": "Say hello to the ledger"}]}),
        &extra,
    )
}

#[tokio::test]
async fn no_attack_of_the_issue_takes_a_5000_micro_usd_agent_past_its_budget() {
    let app = billing_app().await;
    let ask = |extra: Value| chat_for("pricey", extra);
    let image = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/big.png", "detail": "high"}}]}]});
    const CHAT: &str = "/v1/chat/completions";
    let mut attacks: Vec<(&str, &str, Value)> = [
        ("n=100", json!({"max_tokens": 7, "n": 100})),
        (
            "n=100 streamed",
            json!({"max_tokens": 7, "n": 100, "stream": true}),
        ),
        ("n=4", json!({"max_tokens": 7, "n": 4})),
        (
            "n=4 streamed",
            json!({"max_tokens": 7, "n": 4, "stream": true}),
        ),
        (
            "two caps",
            json!({"max_completion_tokens": 1, "max_tokens": 30}),
        ),
        (
            "null cap",
            json!({"max_completion_tokens": null, "max_tokens": 30}),
        ),
        (
            "two caps streamed",
            json!({"max_tokens": 1, "max_completion_tokens": 30, "stream": true}),
        ),
    ]
    .into_iter()
    .map(|(name, extra)| (name, CHAT, ask(extra)))
    .collect();
    attacks.extend([
        ("image", CHAT, image.clone()),
        ("image on a model that fits", CHAT, {
            let mut i = image.clone();
            i["model"] = json!("seer");
            i["max_tokens"] = json!(1000);
            i
        }),
        ("image with a dear fallback", CHAT, {
            let mut i = image.clone();
            i["model"] = json!("windowed");
            i
        }),
        (
            "previous_response_id",
            "/v1/responses",
            json!({"model": "seer", "input": "and then?", "previous_response_id": "resp_123", "max_output_tokens": 100}),
        ),
        (
            "previous_response_id streamed",
            "/v1/responses",
            json!({"model": "seer", "input": "and then?", "previous_response_id": "resp_123", "stream": true}),
        ),
        (
            "conversation",
            "/v1/responses",
            json!({"model": "seer", "input": "and then?", "conversation": "conv_1", "max_output_tokens": 100}),
        ),
    ]);
    for (name, path, body) in attacks {
        let agent = app
            .create_agent(
                &format!("target-{}", name.replace([' ', '=', '_'], "-")),
                "0.005",
                json!({"policy": {"allow_vision": true}}),
            )
            .await;
        let mut statuses = Vec::new();
        for _ in 0..12 {
            let (status, answer) = app.send_json(path, &agent.token, body.clone()).await;
            assert!(
                [StatusCode::OK, StatusCode::PAYMENT_REQUIRED].contains(&status),
                "{name}: {status} {answer}"
            );
            statuses.push(status.as_u16());
            app.settled().await;
            if status == StatusCode::PAYMENT_REQUIRED {
                let message = answer["error"]["message"].as_str().unwrap();
                assert!(
                    message.contains("micro-USD remaining") && message.contains("input tokens"),
                    "{message}"
                );
                break;
            }
        }
        let (spent, reserved, budget) = app.books(agent.id).await;
        println!("{name}: statuses {statuses:?}, spent {spent} of {budget}");
        assert!(spent <= budget, "{name}: spent {spent} of {budget}");
        assert_eq!(reserved, 0, "{name}");
        assert_eq!(
            statuses.last(),
            Some(&402),
            "{name}: the budget ends the attack"
        );
    }
    assert!(
        app.mock.calls() > 0,
        "some attacks were admitted and billed"
    );
    assert_no_cost_above_its_hold(&app).await;
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_chat_with_three_choices_that_fits_is_billed_prompt_plus_three_completions() {
    let app = billing_app().await;
    let agent = app.create_agent("trio", "0.005", json!({})).await;
    let body = json!({"model": "gpt-4o-mini", "n": 3, "max_tokens": 10,
        "messages": [{"role": "user", "content": "Say hello to the ledger"}]});
    let (status, answer) = app
        .send_json("/v1/chat/completions", &agent.token, body.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["choices"].as_array().unwrap().len(), 3);
    let usage = &answer["usage"];
    assert_eq!(
        usage["completion_tokens"], 30,
        "three choices of ten tokens"
    );
    let sent = app.mock.last_request().unwrap();
    assert_eq!(
        (sent["n"].clone(), sent["max_tokens"].clone()),
        (json!(3), json!(10))
    );
    let (spent, reserved, _) = app.books(agent.id).await;
    assert_eq!((spent, reserved), (mini_cost(usage), 0));
    let hold: i64 = app
        .count("SELECT estimate_micro_usd FROM reservations")
        .await;
    // The hold covered the three choices: 30 output tokens at 0.60/M at least.
    assert!(hold >= mini_cost(&json!({"prompt_tokens": 0, "completion_tokens": 30})));
    app.assert_books_audit().await;
}

#[tokio::test]
async fn both_cap_fields_are_sent_as_the_one_cap_that_was_held() {
    let app = billing_app().await;
    let agent = app.create_agent("capper", "1.00", json!({})).await;
    for (caps, held) in [
        (json!({"max_completion_tokens": 1, "max_tokens": 50}), 50),
        (json!({"max_completion_tokens": null, "max_tokens": 50}), 50),
        (json!({"max_completion_tokens": 40, "max_tokens": null}), 40),
    ] {
        let body = chat_for("gpt-4o-mini", caps.clone());
        let (status, answer) = app
            .send_json("/v1/chat/completions", &agent.token, body.clone())
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let sent = app.mock.last_request().unwrap();
        assert_eq!(sent["max_tokens"], held, "{caps}");
        assert_eq!(sent["max_completion_tokens"], held, "{caps}");
        assert_eq!(answer["usage"]["completion_tokens"], held);
    }
    // Above the model's maximum in either field: refused, naming the field that carries it.
    let body = json!({"model": "gpt-4o-mini", "max_completion_tokens": 5, "max_tokens": 5000,
        "messages": [{"role": "user", "content": "hi"}]});
    let (status, answer) = app
        .send_json("/v1/chat/completions", &agent.token, body.clone())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"]["param"], "max_tokens");
    assert_no_cost_above_its_hold(&app).await;
    app.assert_books_audit().await;
}

#[tokio::test]
async fn policy_limits_apply_to_every_choice_whichever_field_carries_the_cap() {
    let app = billing_app().await;
    let agent = app
        .create_agent(
            "limited",
            "1.00",
            json!({"policy": {"max_output_tokens": 64, "max_tokens_per_request": 500}}),
        )
        .await;
    for (extra, rule) in [
        (json!({"n": 100, "max_tokens": 7}), "max_output_tokens"),
        (
            json!({"max_completion_tokens": 1, "max_tokens": 100}),
            "max_output_tokens",
        ),
        (json!({"n": 65}), "max_output_tokens"),
    ] {
        let body = chat_for("gpt-4o-mini", extra.clone());
        let (status, answer) = app
            .send_json("/v1/chat/completions", &agent.token, body.clone())
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{extra}: {answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(rule),
            "{answer}"
        );
    }
    // n = 4 with no cap: the default cap is shared, 64 / 4 = 16 per choice.
    let body = chat_for("gpt-4o-mini", json!({"n": 4}));
    let (status, answer) = app
        .send_json("/v1/chat/completions", &agent.token, body.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // The test models' tokenizer is unknown (`mock-…`), so the default cap goes in `max_tokens`.
    assert_eq!(app.mock.last_request().unwrap()["max_tokens"], 16);
    assert_eq!(answer["usage"]["completion_tokens"], 64);
    assert_no_cost_above_its_hold(&app).await;
    app.assert_books_audit().await;
}

#[tokio::test]
async fn the_clamp_prices_the_dearest_fallback_and_every_choice() {
    let app = billing_app().await;
    // 1000 micro-USD: two choices at windowed's 1000-token default cap would cost 1,200 at its
    // own prices and 24,000 at its fallback's.
    let agent = app
        .create_agent(
            "clamped",
            "0.001",
            json!({"policy": {"clamp_max_tokens": true}}),
        )
        .await;
    let body = chat_for("windowed", json!({"n": 2}));
    let (status, answer) = app
        .send_json("/v1/chat/completions", &agent.token, body.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let cap = app.mock.last_request().unwrap()["max_tokens"]
        .as_u64()
        .unwrap();
    // At the fallback's prices (3/M in, 12/M out) for two choices: what the prompt leaves of
    // 1000 micro-USD buys at most 41 tokens each; at windowed's own, hundreds.
    assert!((16..=41).contains(&cap), "clamped cap {cap}");
    assert_eq!(answer["usage"]["completion_tokens"], 2 * cap);
    // The fallback is reached: the first provider fails before its first byte.
    app.mock.status.store(503, Ordering::SeqCst);
    let (status, _) = app
        .send_json("/v1/chat/completions", &agent.token, body.clone())
        .await;
    app.mock.status.store(0, Ordering::SeqCst);
    assert!([StatusCode::BAD_GATEWAY, StatusCode::PAYMENT_REQUIRED].contains(&status));
    let (spent, reserved, budget) = app.books(agent.id).await;
    assert!(
        spent <= budget && reserved == 0,
        "{spent} {reserved} {budget}"
    );
    assert_no_cost_above_its_hold(&app).await;
    app.assert_books_audit().await;
}

#[tokio::test]
async fn shapes_with_no_bound_are_refused_naming_the_field_and_change_nothing() {
    let app = billing_app().await;
    let agent = app
        .create_agent("shaper", "1.00", json!({"policy": {"allow_vision": true}}))
        .await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/v1/responses",
            json!({"model": "gpt-4o-mini", "input": "x", "previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
        (
            "/v1/responses",
            json!({"model": "windowed", "input": "x", "background": true}),
            "background",
        ),
        (
            "/v1/responses",
            json!({"model": "windowed", "input": "x", "service_tier": "priority"}),
            "service_tier",
        ),
        (
            "/v1/responses",
            json!({"model": "windowed", "input": "x", "tools": [{"type": "web_search"}]}),
            "tools",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "n": 129, "messages": [{"role": "user", "content": "x"}]}),
            "n",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]}),
            "input_audio",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]}),
            "file",
        ),
        (
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": [["a", "b"]]}),
            "input",
        ),
    ];
    for (path, body, field) in cases {
        let (status, answer) = app.send_json(path, &agent.token, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {answer}");
        assert_eq!(answer["error"]["param"], field, "{answer}");
    }
    let (status, answer) = app
        .send_json(
            "/v1/responses",
            &agent.token,
            json!({"model": "gpt-4o-mini", "input": "x", "conversation": "conv_1"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("models.gpt-4o-mini.context_window"),
        "{answer}"
    );
    assert_eq!(app.mock.calls(), 0);
    assert_eq!(app.books(agent.id).await.0, 0);
    assert_eq!(app.count("SELECT count(*) FROM executions").await, 0);

    // Every accepted embeddings shape is held and billed within its hold.
    for input in [
        json!("one two three"),
        json!(["one two", "three"]),
        json!([1, 2, 3]),
        json!([[1, 2, 3], [4, 5]]),
    ] {
        let (status, answer) = app
            .send_json(
                "/v1/embeddings",
                &agent.token,
                json!({"model": "text-embedding-3-small", "input": input}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{input}: {answer}");
    }
    assert_no_cost_above_its_hold(&app).await;
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_hosted_tool_is_held_at_its_fee_per_call_and_its_call_limit_is_sent() {
    let app = billing_app().await;
    let agent = app.create_agent("searcher", "1.00", json!({})).await;
    let search = |extra: Value| {
        merged(
            json!({"model": "seer", "input": "news?", "max_output_tokens": 10, "tools": [{"type": "web_search"}]}),
            &extra,
        )
    };
    for (extra, calls) in [
        (json!({}), 2),
        (json!({"max_tool_calls": 1}), 1),
        (json!({"max_tool_calls": 9}), 2),
    ] {
        let (status, answer) = app
            .send_json("/v1/responses", &agent.token, search(extra.clone()))
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(
            app.mock.last_request().unwrap()["max_tool_calls"],
            calls,
            "{extra}"
        );
        let hold: i64 = app
            .count("SELECT estimate_micro_usd FROM reservations ORDER BY created_at DESC LIMIT 1")
            .await;
        // Each call's fee, and the window read at every step (calls + 1) at 0.15/M.
        let floor = calls * 1_000 + (calls + 1) * 16_000 * 15 / 100;
        assert!(hold >= floor, "{extra}: held {hold} < {floor}");
    }
    // A hosted tool the table gives no price: refused before anything is held.
    let (status, answer) = app
        .send_json(
            "/v1/responses",
            &agent.token,
            merged(
                search(json!({})),
                &json!({"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("models.seer.hosted_tool_usd_per_call.code_interpreter"),
        "{answer}"
    );
    assert_no_cost_above_its_hold(&app).await;
    app.assert_books_audit().await;
}
