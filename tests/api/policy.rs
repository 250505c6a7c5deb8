//! Each policy rule, allowed and denied, against the real server: a denial is a 403
//! `policy_violation` naming the rule, recorded as a DENIED execution with its ledger event.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{hello, spawn_app, TestApp};

async fn denied_rule(
    app: &TestApp,
    token: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> Option<String> {
    let resp = app.post("/v1/chat/completions", token, body, headers).await;
    if resp.status() == StatusCode::OK {
        return None;
    }
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "policy_violation");
    let message = v["error"]["message"].as_str().unwrap().to_owned();
    let rule = message.split('`').nth(1).unwrap().to_owned();
    Some(rule)
}

fn with(mut body: Value, key: &str, value: Value) -> Value {
    body[key] = value;
    body
}

#[tokio::test]
async fn every_policy_rule_allows_and_denies_and_each_denial_is_in_the_ledger() {
    let app = spawn_app().await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let image = json!([{"role": "user", "content": [{"type": "text", "text": "what?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]);
    let long = json!([{"role": "user", "content": "word ".repeat(200)}]);
    // (policy, a request it denies, the rule named, a request it allows)
    let cases = vec![
        (
            json!({"allowed_models": ["pricey"]}),
            hello(),
            "allowed_models",
            with(hello(), "model", json!("pricey")),
        ),
        (
            json!({"allow_streaming": false}),
            with(hello(), "stream", json!(true)),
            "allow_streaming",
            hello(),
        ),
        (
            json!({"allow_tools": false}),
            with(hello(), "tools", tools.clone()),
            "allow_tools",
            hello(),
        ),
        (
            json!({"allowed_tool_names": ["search"]}),
            with(hello(), "tools", tools.clone()),
            "allowed_tool_names",
            with(
                hello(),
                "tools",
                json!([{"type": "function", "function": {"name": "search"}}]),
            ),
        ),
        (
            json!({"allow_function_calling": false}),
            with(hello(), "tool_choice", json!("required")),
            "allow_function_calling",
            with(hello(), "tool_choice", json!("none")),
        ),
        (
            json!({}),
            with(hello(), "messages", image.clone()),
            "allow_vision",
            hello(),
        ),
        (
            // The test models' tokenizer is unknown: the bound adds 32 chat-template tokens per
            // message and per request to the byte count, about 90 for hello().
            json!({"max_input_tokens": 150}),
            with(hello(), "messages", long),
            "max_input_tokens",
            hello(),
        ),
        (
            json!({"max_output_tokens": 100}),
            with(hello(), "max_tokens", json!(200)),
            "max_output_tokens",
            with(hello(), "max_tokens", json!(100)),
        ),
        (
            json!({"max_tokens_per_request": 200}),
            with(hello(), "max_tokens", json!(150)),
            "max_tokens_per_request",
            with(hello(), "max_tokens", json!(50)),
        ),
    ];
    for (i, (policy, denied, rule, allowed)) in cases.into_iter().enumerate() {
        let agent = app
            .create_agent(&format!("policy-{i}"), "1.00", json!({"policy": policy}))
            .await;
        assert_eq!(
            denied_rule(&app, &agent.token, denied, &[])
                .await
                .as_deref(),
            Some(rule),
            "{policy}"
        );
        assert_eq!(
            denied_rule(&app, &agent.token, allowed, &[]).await,
            None,
            "{policy} should allow"
        );
        let denial: String = sqlx::query_scalar(
            "SELECT payload FROM event_log WHERE agent_id = $1 AND event_type = 'execution.denied'",
        )
        .bind(agent.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        let denial: Value = serde_json::from_str(&denial).unwrap();
        assert_eq!(denial["reason"], rule);
        assert_eq!(denial["status"], 403);
        assert_eq!(
            app.execution_states(agent.id).await,
            vec!["DENIED", "COMMITTED"],
            "{rule}"
        );
    }
    // Vision, allowed.
    let seer = app
        .create_agent("seer", "1.00", json!({"policy": {"allow_vision": true}}))
        .await;
    assert_eq!(
        denied_rule(&app, &seer.token, with(hello(), "messages", image), &[]).await,
        None
    );
    app.assert_books_audit().await;
}

#[tokio::test]
async fn the_default_output_cap_is_lowered_by_policy_and_sent_upstream() {
    let app = spawn_app().await;
    let agent = app
        .create_agent(
            "capped",
            "1.00",
            json!({"policy": {"max_output_tokens": 64}}),
        )
        .await;
    assert_eq!(
        app.chat(&agent.token, hello()).await.status(),
        StatusCode::OK
    );
    assert_eq!(app.mock.last_request().unwrap()["max_tokens"], 64);
    let estimate: i64 =
        sqlx::query_scalar("SELECT estimate_micro_usd FROM reservations WHERE agent_id = $1")
            .bind(agent.id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        estimate < 64,
        "the hold is sized by the lowered cap: {estimate}"
    );
}

#[tokio::test]
async fn clamp_max_tokens_lowers_the_cap_to_what_the_budget_affords_instead_of_402() {
    let app = spawn_app().await;
    // 300 micro-USD affords about 490 output tokens at 0.60/M after the prompt.
    let agent = app
        .create_agent(
            "clamped",
            "0.000300",
            json!({"policy": {"clamp_max_tokens": true}}),
        )
        .await;
    assert_eq!(
        app.chat(&agent.token, hello()).await.status(),
        StatusCode::OK
    );
    let cap = app.mock.last_request().unwrap()["max_tokens"]
        .as_u64()
        .unwrap();
    assert!((16..1000).contains(&cap), "clamped cap {cap}");
    let (spent, reserved, budget) = app.books(agent.id).await;
    assert!(spent <= budget && reserved == 0);

    let strict = app.create_agent("strict", "0.000300", json!({})).await;
    assert_eq!(
        app.chat(&strict.token, hello()).await.status(),
        StatusCode::PAYMENT_REQUIRED
    );
}

#[tokio::test]
async fn tenant_default_policy_is_inherited_unless_the_agent_overrides_it() {
    let app = spawn_app().await;
    sqlx::query(
        "UPDATE tenants SET default_policy = '{\"allow_streaming\": false}' WHERE name = 'default'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let inherits = app.create_agent("inherits", "1.00", json!({})).await;
    let overrides = app
        .create_agent(
            "overrides",
            "1.00",
            json!({"policy": {"allow_streaming": true}}),
        )
        .await;
    let stream = with(hello(), "stream", json!(true));
    assert_eq!(
        denied_rule(&app, &inherits.token, stream.clone(), &[])
            .await
            .as_deref(),
        Some("allow_streaming")
    );
    let resp = app.chat(&overrides.token, stream).await;
    assert_eq!(resp.status(), StatusCode::OK);
    resp.text().await.unwrap();
}

#[tokio::test]
async fn a_stored_policy_that_does_not_parse_fails_closed() {
    let app = spawn_app().await;
    let agent = app.create_agent("garbled", "1.00", json!({})).await;
    let calls_before = app.mock.calls();
    // Written behind the admin API's back: `allowed_models` must be a list. Before issue 16 an
    // unreadable policy became the permissive defaults.
    sqlx::query("UPDATE agents SET policy = '{\"allowed_models\": \"everything\"}' WHERE id = $1")
        .bind(agent.id)
        .execute(&app.pool)
        .await
        .unwrap();
    let resp = app.chat(&agent.token, hello()).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "policy_unreadable");
    assert_eq!(
        app.mock.calls(),
        calls_before,
        "the provider was never called"
    );
    assert_eq!(app.books(agent.id).await, (0, 0, 1_000_000));
    assert_eq!(app.execution_states(agent.id).await, ["DENIED"]);
    let models: Value = app
        .get("/v1/models", Some(&agent.token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        models["data"],
        json!([]),
        "an unreadable policy lists no model"
    );

    // The tenant's default policy unreadable: every agent that inherits it is refused too.
    let other = app.create_agent("inheriting", "1.00", json!({})).await;
    sqlx::query(
        "UPDATE tenants SET default_policy = '{\"max_input_tokens\": -1}' WHERE name = 'default'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let resp = app.chat(&other.token, hello()).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.mock.calls(), calls_before);
    assert_eq!(app.books(other.id).await, (0, 0, 1_000_000));
    app.assert_books_audit().await;
}
