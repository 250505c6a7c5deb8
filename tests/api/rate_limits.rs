//! Rate limits shared by every replica through Postgres.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{burst, hello, poll, spawn_app, TestApp, PATIENCE};

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

/// Moves the agent's rate window and its executions `seconds` into the past, as if that much
/// time had gone by (rows keep their order and spacing, so the books stay a true timeline).
async fn travel(app: &TestApp, agent: uuid::Uuid, seconds: f64) {
    let mut tx = app.pool.begin().await.unwrap();
    // In two steps, so that no bucket lands on another's key on the way.
    for (sql, by) in [
        ("UPDATE rate_windows SET bucket_start = bucket_start - make_interval(days => 1000), \
          last_at = last_at - make_interval(days => 1000) WHERE subject = $1", 0.0),
        ("UPDATE rate_windows SET bucket_start = bucket_start + make_interval(days => 1000, secs => -$2), \
          last_at = last_at + make_interval(days => 1000, secs => -$2) WHERE subject = $1", seconds),
    ] {
        sqlx::query(sql)
            .bind(format!("agent:{agent}"))
            .bind(by)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    for sql in [
        "UPDATE reservations SET created_at = created_at - make_interval(secs => $2), \
         settled_at = settled_at - make_interval(secs => $2) WHERE agent_id = $1",
        "UPDATE executions SET created_at = created_at - make_interval(secs => $2) WHERE agent_id = $1",
    ] {
        sqlx::query(sql)
            .bind(agent)
            .bind(seconds)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

/// How far the test moves the clock after a refusal with `retry`: to a second before the second
/// Retry-After names, then a tenth of a second per request.
fn jump(retry: i64) -> f64 {
    if retry > 1 {
        (retry - 1) as f64
    } else {
        0.1
    }
}

/// Drives the agent against its limit over three windows' worth of admissions, moving time in
/// the database instead of waiting, and proves on the books that no 60-second span admitted more
/// than `per_window` requests and that every `Retry-After` named the whole second in which the
/// next request was admitted. `which` is the quota header that a refusal empties.
async fn assert_no_span_admits_more_than(
    app: &TestApp,
    agent: &crate::helpers::Agent,
    per_window: usize,
    which: &str,
) {
    // Start late in a second, so the first burst straddles a second boundary: one-second
    // buckets used to let go of a request made late in a second up to a second early.
    poll("the clock to be late in a second", PATIENCE, || async {
        let fraction: f64 =
            sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) % 1)::float8")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        (0.85..0.95).contains(&fraction).then_some(())
    })
    .await;

    // Requests back to back; on a 429, time jumps (`jump`) until one is admitted.
    let mut log: Vec<Option<i64>> = Vec::new();
    while log.iter().filter(|r| r.is_none()).count() < 3 * per_window {
        let resp = app.chat(&agent.token, hello()).await;
        match resp.status() {
            StatusCode::OK => log.push(None),
            StatusCode::TOO_MANY_REQUESTS => {
                let retry: i64 = resp.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=60).contains(&retry), "{retry}");
                assert_eq!(resp.headers()[which], "0");
                log.push(Some(retry));
                travel(app, agent.id, jump(retry)).await;
            }
            other => panic!("unexpected {other}"),
        }
        assert!(
            log.len() < 400,
            "the limit never let a request through again"
        );
    }

    // The books' timeline (times moved with the window), in the order the requests were sent.
    let timeline: Vec<(f64, String)> = sqlx::query_as(
        "SELECT extract(epoch FROM created_at)::float8, state FROM executions \
         WHERE agent_id = $1 ORDER BY created_at",
    )
    .bind(agent.id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(timeline.len(), log.len());
    let admitted: Vec<usize> = (0..timeline.len())
        .filter(|&k| timeline[k].1 == "COMMITTED")
        .collect();
    assert_eq!(admitted.len(), 3 * per_window);
    // Bounds on the books' own times, which move with the clock the test moves. The upper ones
    // leave out the real time the admitted request took: a loaded machine can make that long
    // without the limiter holding anything back.
    for i in per_window..admitted.len() {
        let opened = timeline[admitted[i - per_window]].0;
        let span = timeline[admitted[i]].0 - opened;
        println!("admission {i}: {span:.3} s after the one {per_window} before it");
        assert!(
            span > 60.0,
            "{} admitted within {span:.3} s",
            per_window + 1
        );
        // Never held back more than its bucket's second and one step: when the request just
        // before it was refused, the clock was not moved past that.
        let before = admitted[i] - 1;
        if let Some(retry) = log[before] {
            let reached = timeline[before].0 + jump(retry) - opened;
            assert!(
                reached < 61.2,
                "admission {i} held back until {reached:.3} s after the one {per_window} before it"
            );
        }
    }
    for (i, retry) in log.iter().enumerate() {
        let Some(retry) = retry else { continue };
        let refused_at = timeline[i].0;
        let next = *admitted.iter().find(|&&k| k > i).unwrap();
        let wait = timeline[next].0 - refused_at;
        assert!(
            wait > (*retry - 1) as f64,
            "refused with Retry-After {retry}, admitted {wait:.3} s later"
        );
        // The second it named was the right one: no refusal after it had passed.
        let last = timeline[next - 1].0 - refused_at;
        assert!(
            last < *retry as f64,
            "refused with Retry-After {retry}, still refused {last:.3} s later"
        );
    }
    app.assert_books_audit().await;
}

#[tokio::test]
async fn no_sixty_second_span_admits_more_than_the_rpm_and_retry_after_says_when() {
    let app = spawn_app().await;
    let agent = app
        .create_agent("sliding", "1.00", json!({"rpm": 10}))
        .await;
    assert_no_span_admits_more_than(&app, &agent, 10, "x-ratelimit-remaining-requests").await;
}

#[tokio::test]
async fn no_sixty_second_span_admits_more_than_the_tpm_and_retry_after_says_when() {
    let app = spawn_app().await;
    // Each answer uses its whole cap, so a request counts about 1,100 tokens at admission and
    // about 1,010 after correction: three fit in 3,300 tokens either way, a fourth does not.
    app.mock
        .completion_tokens
        .store(1000, std::sync::atomic::Ordering::SeqCst);
    let agent = app
        .create_agent("sliding-tokens", "1.00", json!({"tpm": 3300}))
        .await;
    assert_no_span_admits_more_than(&app, &agent, 3, "x-ratelimit-remaining-tokens").await;
}

#[tokio::test]
async fn an_ambiguous_timeout_keeps_its_estimate_in_the_token_window() {
    // The provider may have used every token it was allowed: the charge is the hold, and the TPM
    // window keeps the estimate rather than giving it back as if nothing had been used.
    let app = spawn_app().await;
    let agent = app
        .create_agent("timed-out", "1.00", json!({"tpm": 100000}))
        .await;
    app.mock.delay_ms.store(1_300, Ordering::SeqCst);
    let mut body = hello();
    body["model"] = json!("slow-model"); // its provider times out after 1 s
    let resp = app.chat(&agent.token, body).await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    let counted: i64 =
        sqlx::query_scalar("SELECT sum(tokens)::bigint FROM rate_windows WHERE subject = $1")
            .bind(format!("agent:{}", agent.id))
            .fetch_one(&app.pool)
            .await
            .unwrap();
    // Given back, the window would read 0.
    assert!(counted > 0, "the estimate stays counted: {counted}");
}
