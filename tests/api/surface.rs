//! The rest of the OpenAI surface: embeddings, models, the /openai prefix, concurrent
//! duplicates, provider keys and fallbacks.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use aex::dev::mock_upstream::{self, MockControl};
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{hello, spawn_app, spawn_app_with_models};

#[tokio::test]
async fn embeddings_hold_the_input_only_and_charge_the_reported_tokens() {
    let app = spawn_app().await;
    let agent = app.create_agent("embedder", "1.00", json!({})).await;
    let body = json!({"model": "text-embedding-3-small", "input": ["one two three", "four five"]});
    let resp = app.post("/v1/embeddings", &agent.token, body, &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cost: i64 = resp.headers()["x-aex-cost-micro-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["model"], "text-embedding-3-small");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    let tokens = v["usage"]["prompt_tokens"].as_i64().unwrap();
    assert_eq!(cost, (tokens * 20_000 + 999_999) / 1_000_000);
    let estimate: i64 =
        sqlx::query_scalar("SELECT estimate_micro_usd FROM reservations WHERE agent_id = $1")
            .bind(agent.id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    // The bytes of the input plus 32 special-token places per input (the test model's
    // tokenizer is unknown): under a hundred tokens at 0.02/M, and no output.
    assert!(
        estimate <= 2,
        "input only: a few tokens at 0.02/M, got {estimate}"
    );
    assert!(app.mock.last_request().unwrap().get("max_tokens").is_none());
    assert_eq!(app.books(agent.id).await, (cost, 0, 1_000_000));
    app.assert_books_audit().await;
}

#[tokio::test]
async fn models_lists_the_aliases_the_token_may_use_under_both_prefixes() {
    let app = spawn_app().await;
    let open = app.create_agent("open", "1.00", json!({})).await;
    let narrow = app
        .create_agent(
            "narrow",
            "1.00",
            json!({"policy": {"allowed_models": ["gpt-4o-mini"]}}),
        )
        .await;
    let list = |token: String, prefix: &'static str| {
        let app = &app;
        async move {
            let v: Value = app
                .http
                .get(format!("{}{prefix}/v1/models", app.base))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(v["object"], "list");
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(open.token.clone(), "").await,
        vec![
            "gpt-4o-mini",
            "pricey",
            "slow-model",
            "text-embedding-3-small"
        ]
    );
    assert_eq!(
        list(narrow.token.clone(), "/openai").await,
        vec!["gpt-4o-mini"]
    );
    let one = app
        .http
        .get(format!("{}/v1/models/pricey", app.base))
        .bearer_auth(&narrow.token)
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), StatusCode::NOT_FOUND);
    let reader = app
        .create_agent("reader", "1.00", json!({"token_scope": "read-only"}))
        .await;
    assert_eq!(
        list(reader.token, "").await.len(),
        4,
        "a read-only token may list models"
    );
}

#[tokio::test]
async fn twenty_identical_keyed_requests_at_once_make_exactly_one_provider_call() {
    let app = Arc::new(spawn_app().await);
    let agent = app.create_agent("duplicated", "1.00", json!({})).await;
    app.mock.delay_ms.store(300, Ordering::SeqCst);
    let results = join_all((0..20).map(|_| {
        let app = Arc::clone(&app);
        let token = agent.token.clone();
        async move {
            let r = app
                .post(
                    "/v1/chat/completions",
                    &token,
                    hello(),
                    &[("Idempotency-Key", "same-key")],
                )
                .await;
            let replayed = r.headers().get("idempotent-replayed").is_some();
            (r.status(), replayed, r.text().await.unwrap())
        }
    }))
    .await;
    assert_eq!(app.mock.calls(), 1, "exactly one provider call");
    assert!(
        results.iter().all(|(s, _, _)| *s == StatusCode::OK),
        "{results:?}"
    );
    assert_eq!(
        results.iter().filter(|(_, replayed, _)| *replayed).count(),
        19
    );
    assert!(
        results.iter().all(|(_, _, body)| *body == results[0].2),
        "every caller sees the same result"
    );
    let (spent, reserved, _) = app.books(agent.id).await;
    assert_eq!(reserved, 0);
    let committed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM reservations WHERE agent_id = $1 AND state = 'COMMITTED'",
    )
    .bind(agent.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(committed, 1);
    assert!(spent > 0);
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_released_keyed_execution_may_be_retried_as_a_new_attempt() {
    let app = spawn_app().await;
    let agent = app.create_agent("retrier", "1.00", json!({})).await;
    let key = [("Idempotency-Key", "retry-me")];
    app.mock.status.store(500, Ordering::SeqCst);
    assert_eq!(
        app.post("/v1/chat/completions", &agent.token, hello(), &key)
            .await
            .status(),
        StatusCode::BAD_GATEWAY
    );
    app.mock.status.store(0, Ordering::SeqCst);
    let ok = app
        .post("/v1/chat/completions", &agent.token, hello(), &key)
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(ok.headers().get("idempotent-replayed").is_none());
    let attempt: i32 =
        sqlx::query_scalar("SELECT attempt FROM executions WHERE execution_key = 'retry-me'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(attempt, 2);
    app.assert_books_audit().await;
}

#[tokio::test]
async fn provider_keys_come_from_the_environment_and_passthrough_needs_permission() {
    std::env::set_var("MOCK_PROVIDER_KEY_FOR_TESTS", "sk-from-env");
    let app = spawn_app_with_models(
        r#"
[providers.keyed]
kind = "openai"
base_url = "http://{mock}/v1"
api_key_env = "MOCK_PROVIDER_KEY_FOR_TESTS"

[models."keyed-model"]
provider = "keyed"
upstream_model = "mock-keyed"
input_usd_per_million = "1"
output_usd_per_million = "1"
max_output_tokens = 100
capabilities = ["chat"]
"#,
    )
    .await;
    let mut body = hello();
    body["model"] = json!("keyed-model");
    let plain = app.create_agent("plain", "1.00", json!({})).await;
    assert_eq!(
        app.chat(&plain.token, body.clone()).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.mock.auth_headers.lock().unwrap().last().unwrap(),
        "Bearer sk-from-env"
    );

    let byok = [("X-AEX-Provider-Key", "sk-client-own")];
    let denied = app
        .post("/v1/chat/completions", &plain.token, body.clone(), &byok)
        .await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let v: Value = denied.json().await.unwrap();
    assert_eq!(v["error"]["code"], "policy_violation");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("allow_passthrough"));
    assert_eq!(app.mock.calls(), 1);

    let trusted = app
        .create_agent(
            "trusted",
            "1.00",
            json!({"policy": {"allow_passthrough": true}}),
        )
        .await;
    assert_eq!(
        app.post("/v1/chat/completions", &trusted.token, body, &byok)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.mock.auth_headers.lock().unwrap().last().unwrap(),
        "Bearer sk-client-own"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM event_log WHERE payload LIKE '%sk-client-own%' OR payload LIKE '%sk-from-env%'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0, "keys are never stored");
}

#[tokio::test]
async fn a_503_or_a_refused_connection_falls_back_to_the_next_model_and_the_ledger_shows_it() {
    let backup = Arc::new(MockControl::default());
    let backup_addr = mock_upstream::spawn("127.0.0.1:0".parse().unwrap(), Arc::clone(&backup))
        .await
        .unwrap();
    let extra = format!(
        r#"
[providers.backup]
kind = "openai"
base_url = "http://{backup_addr}/v1"

[providers.nowhere]
kind = "openai"
base_url = "http://127.0.0.1:1/v1"

[models."primary"]
provider = "mock"
upstream_model = "mock-primary"
input_usd_per_million = "1"
output_usd_per_million = "2"
max_output_tokens = 100
capabilities = ["chat", "streaming"]
fallbacks = ["backup-model"]

[models."unreachable"]
provider = "nowhere"
upstream_model = "mock-unreachable"
input_usd_per_million = "1"
output_usd_per_million = "2"
max_output_tokens = 100
capabilities = ["chat"]
fallbacks = ["backup-model"]

[models."backup-model"]
provider = "backup"
upstream_model = "mock-backup"
input_usd_per_million = "3"
output_usd_per_million = "4"
max_output_tokens = 100
capabilities = ["chat", "streaming"]
"#
    );
    let app = spawn_app_with_models(&extra).await;
    let agent = app.create_agent("resilient", "1.00", json!({})).await;
    app.mock.status.store(503, Ordering::SeqCst);
    let mut body = hello();
    body["model"] = json!("primary");
    let resp = app.chat(&agent.token, body.clone()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["model"], "primary",
        "the agent sees the alias it asked for"
    );
    assert_eq!((app.mock.calls(), backup.calls()), (1, 1));
    let p = v["usage"]["prompt_tokens"].as_i64().unwrap();
    let c = v["usage"]["completion_tokens"].as_i64().unwrap();
    let at_backup_prices =
        (p * 3_000_000 + 999_999) / 1_000_000 + (c * 4_000_000 + 999_999) / 1_000_000;
    assert_eq!(
        app.books(agent.id).await.0,
        at_backup_prices,
        "charged at the serving model's prices"
    );

    body["model"] = json!("unreachable");
    assert_eq!(app.chat(&agent.token, body).await.status(), StatusCode::OK);
    assert_eq!(backup.calls(), 2);

    let fallbacks: Vec<String> = sqlx::query_scalar("SELECT payload::jsonb->>'reason' FROM event_log WHERE agent_id = $1 AND event_type = 'execution.fallback' ORDER BY id")
        .bind(agent.id)
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(fallbacks, vec!["upstream_status_503", "connect_error"]);
    app.assert_books_audit().await;
}

#[tokio::test]
async fn cached_results_are_pruned_after_retention_and_the_execution_stays() {
    let app = crate::helpers::spawn_app_with(|s| s.gateway.result_retention_hours = 0).await;
    let agent = app.create_agent("forgetful", "1.00", json!({})).await;
    let key = [("Idempotency-Key", "old-result")];
    assert_eq!(
        app.post("/v1/chat/completions", &agent.token, hello(), &key)
            .await
            .status(),
        StatusCode::OK
    );
    aex::cluster::housekeeping::prune(&app.pool, 0)
        .await
        .unwrap();
    let (pruned, has_body): (bool, bool) = sqlx::query_as(
        "SELECT result_pruned_at IS NOT NULL, response_body IS NOT NULL FROM executions WHERE execution_key = 'old-result'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(pruned && !has_body);
    let again = app
        .post("/v1/chat/completions", &agent.token, hello(), &key)
        .await;
    assert_eq!(
        again.status(),
        StatusCode::CONFLICT,
        "never a second charge for a forgotten result"
    );
    let v: Value = again.json().await.unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no longer retained"));
    assert_eq!(app.mock.calls(), 1);
    assert!(
        app.event_types(agent.id)
            .await
            .contains(&"usage.commit".to_owned()),
        "the ledger keeps the execution"
    );
    app.assert_books_audit().await;
}

/// `(attempt, state, pruned, has a body)` of the execution under `key`.
async fn retention_of(app: &crate::helpers::TestApp, key: &str) -> (i32, String, bool, bool) {
    sqlx::query_as(
        "SELECT attempt, state, result_pruned_at IS NOT NULL, response_body IS NOT NULL \
         FROM executions WHERE execution_key = $1",
    )
    .bind(key)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn pruning_marks_every_finished_execution_and_a_next_attempt_is_pruned_in_its_turn() {
    // Pruning finds its rows through executions_unpruned_idx (result_pruned_at IS NULL): a row
    // it does not mark would be read again by every pass, and a next attempt whose mark stayed
    // would keep its result forever.
    let app = crate::helpers::spawn_app_with(|s| s.gateway.result_retention_hours = 0).await;
    let agent = app.create_agent("retained", "1.00", json!({})).await;
    let key = [("Idempotency-Key", "retried-after-pruning")];
    app.mock.status.store(503, Ordering::SeqCst);
    let failed = app
        .post("/v1/chat/completions", &agent.token, hello(), &key)
        .await;
    assert_eq!(failed.status(), StatusCode::BAD_GATEWAY);
    app.mock.status.store(0, Ordering::SeqCst);
    // An execution in flight is not finished: never marked.
    app.mock.gate_closed.store(true, Ordering::SeqCst);
    let inflight = app.spawn_chat(&agent.token);
    app.await_execution_states(agent.id, &["RELEASED", "DISPATCHED"])
        .await;
    aex::cluster::housekeeping::prune(&app.pool, 0)
        .await
        .unwrap();
    let (_, released, pruned, _) = retention_of(&app, key[0].1).await;
    assert_eq!((released.as_str(), pruned), ("RELEASED", true));
    let open: bool = sqlx::query_scalar(
        "SELECT result_pruned_at IS NULL FROM executions WHERE agent_id = $1 AND state = 'DISPATCHED'",
    )
    .bind(agent.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(open, "an execution in flight is not marked");
    app.mock.open_gate();
    assert_eq!(inflight.await.unwrap().status(), StatusCode::OK);

    // The next attempt reuses the row: its result is retained, then pruned in its turn.
    let retried = app
        .post("/v1/chat/completions", &agent.token, hello(), &key)
        .await;
    assert_eq!(retried.status(), StatusCode::OK);
    assert_eq!(
        retention_of(&app, key[0].1).await,
        (2, "COMMITTED".to_owned(), false, true)
    );
    aex::cluster::housekeeping::prune(&app.pool, 0)
        .await
        .unwrap();
    assert_eq!(
        retention_of(&app, key[0].1).await,
        (2, "COMMITTED".to_owned(), true, false)
    );
    let unmarked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM executions WHERE agent_id = $1 AND result_pruned_at IS NULL",
    )
    .bind(agent.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(unmarked, 0, "every finished execution is marked");
    app.assert_books_audit().await;
}
