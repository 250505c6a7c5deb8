//! The governed chat path, non-streaming.

use std::sync::atomic::Ordering;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{execution_id, hello, mini_cost, poll, spawn_app, PATIENCE};

#[tokio::test]
async fn a_chat_completion_is_charged_exactly_its_reported_usage() {
    let app = spawn_app().await;
    let agent = app.create_agent("happy", "1.00", json!({})).await;

    let resp = app.chat(&agent.token, hello()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let execution_id = execution_id(&resp);
    let cost: i64 = resp.headers()["x-aex-cost-micro-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let remaining: i64 = resp.headers()["x-aex-budget-remaining-micro-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = resp.json().await.unwrap();

    assert_eq!(
        body["model"], "gpt-4o-mini",
        "the upstream name never leaks"
    );
    assert_eq!(
        app.mock.last_request().unwrap()["model"],
        "mock-gpt-4o-mini",
        "the alias is rewritten upstream"
    );
    let expected = mini_cost(&body["usage"]);
    assert_eq!(cost, expected);
    let (spent, reserved, budget) = app.books(agent.id).await;
    assert_eq!((spent, reserved), (expected, 0));
    assert_eq!(remaining, budget - spent);
    assert_eq!(app.execution_states(agent.id).await, vec!["COMMITTED"]);
    assert_eq!(
        app.event_types(agent.id).await,
        vec![
            "agent.created",
            "token.issued",
            "reservation.reserved",
            "execution.dispatched",
            "usage.commit"
        ]
    );
    let commit: String = sqlx::query_scalar(
        "SELECT payload FROM event_log WHERE execution_id = $1 AND event_type = 'usage.commit'",
    )
    .bind(&execution_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let commit: Value = serde_json::from_str(&commit).unwrap();
    assert_eq!(commit["actual_micro_usd"], expected);
    assert_eq!(commit["usage"], "reported");
    app.assert_books_audit().await;
}

#[tokio::test]
async fn unknown_request_fields_pass_through_and_the_output_cap_is_always_sent() {
    let app = spawn_app().await;
    let agent = app.create_agent("passthrough", "1.00", json!({})).await;
    let mut body = hello();
    body["seed"] = json!(7);
    body["user"] = json!("u-1");
    body["metadata"] = json!({"k": "v"});
    body["parallel_tool_calls"] = json!(false);
    let resp = app.chat(&agent.token, body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let sent = app.mock.last_request().unwrap();
    assert_eq!(sent["seed"], 7);
    assert_eq!(sent["user"], "u-1");
    assert_eq!(sent["metadata"], json!({"k": "v"}));
    assert_eq!(sent["parallel_tool_calls"], false);
    // A non-OpenAI upstream name gets the widely supported `max_tokens`.
    assert_eq!(
        sent["max_tokens"], 1000,
        "the model's cap, reserved for, is sent upstream"
    );

    let mut capped = hello();
    capped["max_tokens"] = json!(5);
    app.chat(&agent.token, capped).await;
    assert_eq!(app.mock.last_request().unwrap()["max_tokens"], 5);
}

#[tokio::test]
async fn a_request_over_budget_is_402_and_holds_nothing() {
    let app = spawn_app().await;
    // 1000 output tokens at 0.60/M alone is 600 micro-USD.
    let agent = app.create_agent("poor", "0.000100", json!({})).await;
    let resp = app.chat(&agent.token, hello()).await;
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_budget");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("estimated at") && message.contains("100 micro-USD remaining"),
        "{message}"
    );
    assert_eq!(app.books(agent.id).await, (0, 0, 100));
    assert_eq!(app.execution_states(agent.id).await, vec!["DENIED"]);
    assert!(app
        .event_types(agent.id)
        .await
        .contains(&"execution.denied".to_owned()));
    assert_eq!(app.mock.calls(), 0, "the provider is never called");
    app.assert_books_audit().await;
}

#[tokio::test]
async fn an_upstream_500_releases_the_hold_and_is_a_502() {
    let app = spawn_app().await;
    let agent = app.create_agent("unlucky", "1.00", json!({})).await;
    app.mock.status.store(500, Ordering::SeqCst);
    let resp = app.chat(&agent.token, hello()).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_error");
    let (spent, reserved, _) = app.books(agent.id).await;
    assert_eq!((spent, reserved), (0, 0));
    assert_eq!(app.execution_states(agent.id).await, vec!["RELEASED"]);
    assert!(app
        .event_types(agent.id)
        .await
        .contains(&"reservation.released".to_owned()));
    app.assert_books_audit().await;
}

#[tokio::test]
async fn an_upstream_timeout_charges_the_hold_as_ambiguous_and_is_a_504() {
    let app = spawn_app().await;
    let agent = app.create_agent("patient", "1.00", json!({})).await;
    app.mock.delay_ms.store(2_500, Ordering::SeqCst);
    let mut body = hello();
    body["model"] = json!("slow-model"); // its provider times out after 1 s
    let resp = app.chat(&agent.token, body).await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_timeout");
    // The request was sent: the provider may have done (and will bill) the whole work.
    let (spent, reserved, _) = app.books(agent.id).await;
    assert!(spent > 0);
    assert_eq!(reserved, 0);
    assert_eq!(app.execution_states(agent.id).await, vec!["FAILED"]);
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_provider_client_error_is_returned_as_it_is_after_release() {
    let app = spawn_app().await;
    let agent = app.create_agent("sloppy", "1.00", json!({})).await;
    app.mock.status.store(400, Ordering::SeqCst);
    let resp = app.chat(&agent.token, hello()).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["error"]["message"], "mock failure 400",
        "the provider's own body"
    );
    assert_eq!(app.books(agent.id).await.1, 0);
    app.assert_books_audit().await;
}

#[tokio::test]
async fn settlement_completes_when_the_client_disconnects_before_the_answer() {
    let app = spawn_app().await;
    let agent = app.create_agent("impatient", "1.00", json!({})).await;
    // The provider holds the call until the test has seen it arrive and the client has gone;
    // then it still takes 700 ms to answer, time for the server to see the connection closed.
    app.mock.gate_closed.store(true, Ordering::SeqCst);
    app.mock.delay_ms.store(700, Ordering::SeqCst);
    let call = app.spawn_chat(&agent.token);
    poll("the call to reach the provider", PATIENCE, || async {
        (app.mock.calls() == 1).then_some(())
    })
    .await;
    call.abort();
    assert!(
        call.await.unwrap_err().is_cancelled(),
        "the client gave up first"
    );
    app.mock.open_gate();
    // The provider still answers and the call is booked from its usage.
    app.await_execution_states(agent.id, &["COMMITTED"]).await;
    let id: String = sqlx::query_scalar("SELECT execution_key FROM executions WHERE agent_id = $1")
        .bind(agent.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        app.ledger_event(&id, "usage.commit").await["usage"],
        "reported"
    );
    let (spent, reserved, _) = app.books(agent.id).await;
    assert!(spent > 0);
    assert_eq!(reserved, 0);
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_keyed_retry_replays_without_a_second_charge_and_a_different_body_conflicts() {
    let app = spawn_app().await;
    let agent = app.create_agent("careful", "1.00", json!({})).await;
    let key = [("Idempotency-Key", "order-42")];
    let first = app
        .post("/v1/chat/completions", &agent.token, hello(), &key)
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["x-aex-execution-id"], "order-42");
    let first_body = first.text().await.unwrap();
    let spent_once = app.books(agent.id).await.0;

    let again = app
        .post("/v1/chat/completions", &agent.token, hello(), &key)
        .await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.unwrap(), first_body);
    assert_eq!(app.mock.calls(), 1, "no second provider call");
    assert_eq!(app.books(agent.id).await.0, spent_once, "no second charge");

    let mut other = hello();
    other["messages"][0]["content"] = json!("something else");
    let conflict = app
        .post("/v1/chat/completions", &agent.token, other, &key)
        .await;
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    let body: Value = conflict.json().await.unwrap();
    assert_eq!(body["error"]["code"], "idempotency_conflict");

    // The same key on the /openai prefix is the same execution.
    let aliased = app
        .post("/openai/v1/chat/completions", &agent.token, hello(), &key)
        .await;
    assert_eq!(aliased.headers()["idempotent-replayed"], "true");
    app.assert_books_audit().await;
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let app = spawn_app().await;
    let agent = app.create_agent("clumsy", "1.00", json!({})).await;
    let url = format!("{}/v1/chat/completions", app.base);
    let send = |body: &'static str| {
        app.http
            .post(&url)
            .bearer_auth(&agent.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for (body, status, code) in [
        ("{not json", 400, "invalid_request"),
        ("[1, 2]", 400, "invalid_request"),
        ("{\"model\": \"gpt-4o-mini\"}", 400, "invalid_request"),
        ("{\"model\": \"gpt-4o-mini\", \"messages\": []}", 400, "invalid_request"),
        ("{\"model\": 7, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", 400, "invalid_request"),
        ("{\"model\": \"nope\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", 404, "model_not_found"),
        ("{\"model\": \"gpt-4o-mini\", \"max_tokens\": 5000, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", 400, "invalid_request"),
        ("{\"model\": \"gpt-4o-mini\", \"max_tokens\": -1, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", 400, "invalid_request"),
    ] {
        let resp = send(body).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{body}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let huge = format!("{{\"model\": \"gpt-4o-mini\", \"messages\": [{{\"role\": \"user\", \"content\": \"{}\"}}]}}", "x".repeat(5 * 1024 * 1024));
    let resp = app
        .http
        .post(&url)
        .bearer_auth(&agent.token)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "request_too_large");

    let long_key = "k".repeat(256);
    let resp = app
        .post(
            "/v1/chat/completions",
            &agent.token,
            hello(),
            &[("Idempotency-Key", &long_key)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    assert_eq!(app.mock.calls(), 0);
    assert!(
        app.execution_states(agent.id).await.is_empty(),
        "nothing was written"
    );
    assert_eq!(app.books(agent.id).await.0, 0);
}
