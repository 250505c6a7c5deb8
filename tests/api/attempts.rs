//! One attempt per Idempotency-Key at a time, on any replica (SPEC §5.1): copies of a key that
//! arrive while an attempt is in flight wait for it and get its outcome, failure included; only a
//! request that arrives after the attempt ended starts the next one. Proven against a provider
//! that holds its answer until the test has seen every copy waiting, counting the provider's
//! calls and the attempts on the books.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use aex::gateway::Gateway;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{hello, poll, spawn_app, spawn_app_with_models, TestApp, PATIENCE};

/// One copy's answer: status, whether it was replayed, body.
pub type Answer = (StatusCode, bool, String);

fn send_copy(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: &str,
    key: &str,
    body: &Value,
) -> tokio::task::JoinHandle<Answer> {
    let req = http
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body);
    tokio::spawn(async move {
        let resp = req.send().await.expect("request sent");
        let replayed = resp.headers().get("idempotent-replayed").is_some();
        (resp.status(), replayed, resp.text().await.expect("body"))
    })
}

/// The replicas a wave of copies is spread over: their addresses and gateways.
pub struct Replicas {
    bases: Vec<String>,
    gateways: Vec<Arc<Gateway>>,
}

impl Replicas {
    pub fn one(app: &TestApp) -> Self {
        Replicas {
            bases: vec![app.base.clone()],
            gateways: vec![Arc::clone(
                &app.server.as_ref().expect("server").state.gateway,
            )],
        }
    }

    fn waiting(&self) -> usize {
        self.gateways.iter().map(|g| g.duplicates_waiting()).sum()
    }
}

/// Sends one copy, waits until its attempt is at the provider (held there by the closed gate),
/// then sends `copies - 1` more spread over the replicas and waits until every one of them waits
/// for that attempt: all of them provably arrived while it was in flight. `release` then lets the
/// attempt end; the answers come back in sending order.
#[allow(clippy::too_many_arguments)]
pub async fn wave(
    app: &TestApp,
    replicas: &Replicas,
    (path, body): (&str, &Value),
    token: &str,
    key: &str,
    copies: usize,
    at_provider: impl Fn() -> bool,
    release: impl FnOnce(),
) -> Vec<Answer> {
    let first = send_copy(&app.http, &replicas.bases[0], path, token, key, body);
    poll(
        "the first copy's attempt to reach the provider",
        PATIENCE,
        || {
            let reached = at_provider();
            async move { reached.then_some(()) }
        },
    )
    .await;
    let waiting_before = replicas.waiting();
    let rest: Vec<_> = (1..copies)
        .map(|i| {
            let base = &replicas.bases[i % replicas.bases.len()];
            send_copy(&app.http, base, path, token, key, body)
        })
        .collect();
    poll(
        "every other copy to wait for the attempt in flight",
        PATIENCE,
        || {
            let waiting = replicas.waiting();
            async move { (waiting == waiting_before + copies - 1).then_some(()) }
        },
    )
    .await;
    release();
    let mut answers = vec![first.await.expect("first copy")];
    for copy in rest {
        answers.push(copy.await.expect("copy"));
    }
    answers
}

/// `(attempt, state)` of the execution under `key`, and its reservations' states by attempt.
async fn attempts_on_the_books(app: &TestApp, key: &str) -> ((i32, String), Vec<String>) {
    let execution: (i32, String) =
        sqlx::query_as("SELECT attempt, state FROM executions WHERE execution_key = $1")
            .bind(key)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let holds: Vec<String> = sqlx::query_scalar(
        "SELECT r.state FROM reservations r JOIN executions e ON e.id = r.execution_id \
         WHERE e.execution_key = $1 ORDER BY r.attempt",
    )
    .bind(key)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    (execution, holds)
}

/// The key had one attempt, and it ended after a timeout: released, or (when a timeout is an
/// ambiguous outcome, charged) FAILED with its hold committed.
pub async fn assert_one_ended_attempt(app: &TestApp, key: &str) {
    let ((n, state), holds) = attempts_on_the_books(app, key).await;
    assert_eq!(n, 1);
    assert!(["RELEASED", "FAILED"].contains(&state.as_str()), "{state}");
    assert_eq!(holds.len(), 1);
    assert_ne!(holds[0], "RESERVED");
}

/// No two attempts of the key held money at the same time: each reservation was settled before
/// the next one was made.
async fn assert_attempts_never_overlapped(app: &TestApp, key: &str) {
    let overlapping = app
        .count(&format!(
            "SELECT count(*) FROM reservations a JOIN reservations b \
               ON a.execution_id = b.execution_id AND b.attempt = a.attempt + 1 \
             JOIN executions e ON e.id = a.execution_id \
             WHERE e.execution_key = '{key}' AND (a.settled_at IS NULL OR b.created_at < a.settled_at)"
        ))
        .await;
    assert_eq!(overlapping, 0, "attempts of one key overlapped");
}

pub fn assert_all_the_same(answers: &[Answer], status: StatusCode) {
    let (_, _, body) = &answers[0];
    for (i, (s, replayed, b)) in answers.iter().enumerate() {
        assert_eq!(*s, status, "copy {i}: {b}");
        assert_eq!(b, body, "copy {i} got another outcome than the attempt's");
        assert_eq!(
            *replayed,
            i > 0,
            "copy {i}: only the first caused the attempt"
        );
    }
}

/// Two waves of `copies` copies against a provider failing with 5xx: each wave is one attempt
/// and one provider call, and every copy gets that attempt's 502.
async fn two_failing_waves(
    app: &TestApp,
    replicas: &Replicas,
    token: &str,
    key: &str,
    copies: usize,
) {
    for attempt in 1..=2u64 {
        app.mock.gate_closed.store(true, Ordering::SeqCst);
        let answers = wave(
            app,
            replicas,
            ("/v1/chat/completions", &hello()),
            token,
            key,
            copies,
            || app.mock.in_flight.load(Ordering::SeqCst) == 1,
            || app.mock.open_gate(),
        )
        .await;
        assert_all_the_same(&answers, StatusCode::BAD_GATEWAY);
        let error: Value = serde_json::from_str(&answers[0].2).unwrap();
        assert_eq!(error["error"]["code"], "upstream_error");
        assert_eq!(replicas.waiting(), 0, "nobody waits any more");
        assert_eq!(app.mock.calls(), attempt, "one provider call per attempt");
        let ((n, state), holds) = attempts_on_the_books(app, key).await;
        assert_eq!((n, state.as_str()), (attempt as i32, "RELEASED"));
        assert_eq!(holds, vec!["RELEASED"; attempt as usize]);
    }
}

#[tokio::test]
async fn fifty_copies_of_one_key_against_a_failing_provider_make_one_call_per_attempt() {
    let app = spawn_app().await;
    let agent = app.create_agent("failing", "1.00", json!({})).await;
    let replicas = Replicas::one(&app);
    app.mock.status.store(500, Ordering::SeqCst);
    let key = "one-attempt-at-a-time";
    two_failing_waves(&app, &replicas, &agent.token, key, 50).await;
    assert_eq!(app.mock.peak_in_flight.load(Ordering::SeqCst), 1);
    assert_attempts_never_overlapped(&app, key).await;
    assert_eq!(app.books(agent.id).await, (0, 0, 1_000_000));
    app.assert_books_audit().await;
}

#[tokio::test]
async fn fifty_copies_of_one_key_against_a_timing_out_provider_make_one_call() {
    // The provider answers nothing until the test opens the gate; AEX gives up after 5 s, long
    // enough for every copy to be seen waiting first (checked below, not assumed).
    let app = spawn_app_with_models(
        r#"
[providers.stalling]
kind = "openai"
base_url = "http://{mock}/v1"
timeout_seconds = 5

[models."stalling-model"]
provider = "stalling"
upstream_model = "mock-stalling"
input_usd_per_million = "1"
output_usd_per_million = "2"
max_output_tokens = 100
capabilities = ["chat"]
"#,
    )
    .await;
    let agent = app.create_agent("stalled", "1.00", json!({})).await;
    let replicas = Replicas::one(&app);
    let mut body = hello();
    body["model"] = json!("stalling-model");
    let key = "stalled-key";
    app.mock.gate_closed.store(true, Ordering::SeqCst);
    let answers = wave(
        &app,
        &replicas,
        ("/v1/chat/completions", &body),
        &agent.token,
        key,
        50,
        || app.mock.in_flight.load(Ordering::SeqCst) == 1,
        || {},
    )
    .await;
    assert_all_the_same(&answers, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(app.mock.calls(), 1, "one provider call for fifty copies");
    assert_one_ended_attempt(&app, key).await;

    // A copy that arrives after the attempt ended starts the next one.
    app.mock.open_gate();
    let next = app
        .post(
            "/v1/chat/completions",
            &agent.token,
            body.clone(),
            &[("Idempotency-Key", key)],
        )
        .await;
    assert_eq!(next.status(), StatusCode::OK);
    assert!(next.headers().get("idempotent-replayed").is_none());
    assert_eq!(app.mock.calls(), 2);
    let ((n, state), _) = attempts_on_the_books(&app, key).await;
    assert_eq!((n, state.as_str()), (2, "COMMITTED"));
    assert_attempts_never_overlapped(&app, key).await;
    app.assert_books_audit().await;
}

#[tokio::test]
async fn copies_of_one_key_spread_over_two_replicas_make_one_call_per_attempt() {
    let app = spawn_app().await;
    let (second, second_base) = app.spawn_replica().await;
    let agent = app.create_agent("spread", "1.00", json!({})).await;
    let replicas = Replicas {
        bases: vec![app.base.clone(), second_base],
        gateways: vec![
            Arc::clone(&app.server.as_ref().unwrap().state.gateway),
            Arc::clone(&second.state.gateway),
        ],
    };
    app.mock.status.store(503, Ordering::SeqCst);
    let key = "two-replicas";
    two_failing_waves(&app, &replicas, &agent.token, key, 40).await;
    // The provider recovers: the next copy is served and later ones replay it.
    app.mock.status.store(0, Ordering::SeqCst);
    for base in [&app.base, &replicas.bases[1]] {
        let (status, _, _) = send_copy(
            &app.http,
            base,
            "/v1/chat/completions",
            &agent.token,
            key,
            &hello(),
        )
        .await
        .unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(app.mock.calls(), 3);
    assert_eq!(app.mock.peak_in_flight.load(Ordering::SeqCst), 1);
    assert_attempts_never_overlapped(&app, key).await;
    second.shutdown();
    second.wait().await.unwrap();
    app.assert_books_audit().await;
}
