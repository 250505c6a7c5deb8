//! Rate limits shared by every replica through Postgres.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{burst, hello, spawn_app};

#[tokio::test]
async fn requests_over_the_rpm_get_429_with_retry_after_and_quota_headers() {
    let app = spawn_app().await;
    let agent = app.create_agent("limited", "1.00", json!({"rpm": 3})).await;
    for i in 0..3 {
        let resp = app.chat(&agent.token, hello()).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-ratelimit-limit-requests"], "3");
        assert_eq!(
            resp.headers()["x-ratelimit-remaining-requests"],
            (2 - i).to_string().as_str()
        );
    }
    let resp = app.chat(&agent.token, hello()).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: i64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(resp.headers()["x-ratelimit-remaining-requests"], "0");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(app.mock.calls(), 3);
    let reason: String = sqlx::query_scalar(
        "SELECT reason FROM executions WHERE agent_id = $1 AND state = 'DENIED'",
    )
    .bind(agent.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(reason, "rate_limit_agent");
    let denied: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE agent_id = $1 AND kind = 'admission.denied' AND reason = 'rate_limit_agent'")
        .bind(agent.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(denied, 1, "recorded in the projection");
    app.assert_books_audit().await;
}

#[tokio::test]
async fn requests_refused_for_budget_or_policy_do_not_consume_quota() {
    let app = spawn_app().await;
    let agent = app
        .create_agent(
            "frugal",
            "0.000700",
            json!({"rpm": 2, "policy": {"allow_streaming": false}}),
        )
        .await;
    let mut stream = hello();
    stream["stream"] = json!(true);
    for _ in 0..3 {
        assert_eq!(
            app.chat(&agent.token, stream.clone()).await.status(),
            StatusCode::FORBIDDEN
        );
    }
    // A request fits the budget (about 605 of 700 micro-USD held); one for the pricey model
    // (about 6,000) does not, and leaves the second request of the minute unused.
    assert_eq!(
        app.chat(&agent.token, hello()).await.status(),
        StatusCode::OK
    );
    let mut pricey = hello();
    pricey["model"] = json!("pricey");
    assert_eq!(
        app.chat(&agent.token, pricey).await.status(),
        StatusCode::PAYMENT_REQUIRED
    );
    let used: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(requests), 0)::bigint FROM rate_windows WHERE subject = $1",
    )
    .bind(format!("agent:{}", agent.id))
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(used, 1);
    assert_eq!(
        app.chat(&agent.token, hello()).await.status(),
        StatusCode::OK,
        "the second request of the minute"
    );
    assert_eq!(
        app.chat(&agent.token, hello()).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn tokens_per_minute_count_the_estimate_then_the_actual_tokens() {
    let app = spawn_app().await;
    // Each request holds about 10 prompt + 1000 output tokens of TPM at admission.
    let agent = app
        .create_agent("wordy", "1.00", json!({"tpm": 1500}))
        .await;
    let first = app.chat(&agent.token, hello()).await;
    assert_eq!(first.status(), StatusCode::OK);
    let v: Value = first.json().await.unwrap();
    let actual = v["usage"]["total_tokens"].as_i64().unwrap();
    let counted: i64 =
        sqlx::query_scalar("SELECT sum(tokens)::bigint FROM rate_windows WHERE subject = $1")
            .bind(format!("agent:{}", agent.id))
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        counted, actual,
        "corrected to the actual tokens at settlement"
    );
    // Without the correction, 1,035 tokens would be held and a second 1,035-token estimate would
    // not fit the 1,500 TPM; with it, it does.
    assert_eq!(
        app.chat(&agent.token, hello()).await.status(),
        StatusCode::OK
    );
    // Two large holds in flight do not fit together: the estimate counts at admission.
    app.mock
        .delay_ms
        .store(300, std::sync::atomic::Ordering::SeqCst);
    let (a, b) = tokio::join!(
        app.chat(&agent.token, hello()),
        app.chat(&agent.token, hello())
    );
    let mut statuses = vec![a.status(), b.status()];
    statuses.sort();
    assert_eq!(
        statuses,
        vec![StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]
    );
}

#[tokio::test]
async fn two_replicas_on_one_database_enforce_one_rpm_limit() {
    let app = Arc::new(spawn_app().await);
    let (second, second_base) = app.spawn_replica().await;
    let limit = 20;
    let agent = app
        .create_agent("shared", "1.00", json!({"rpm": limit}))
        .await;
    let sent = 60;
    let bases = [app.base.clone(), second_base.clone()];
    let results = burst(&bases, &agent.token, sent).await;
    let admitted = results.iter().filter(|s| **s == StatusCode::OK).count();
    let limited = results
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    println!("two-instance rate limit: limit {limit}/min, sent {sent} across 2 replicas, admitted {admitted}, limited {limited}");
    assert_eq!(
        admitted, limit as usize,
        "exactly the limit is admitted across both replicas"
    );
    assert_eq!(admitted + limited, sent);
    assert_eq!(app.mock.calls() as usize, admitted);
    second.shutdown();
    second.wait().await.unwrap();
    app.assert_books_audit().await;
}
