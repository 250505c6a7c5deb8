//! Database faults on a private Postgres cluster, under load: backends terminated, and the
//! server stopped and restarted. Requests fail cleanly (503 `unavailable`, nothing charged), the
//! gateway recovers by itself (requests, `/ready`, the LISTEN/NOTIFY listener) and the books are
//! exact.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{hello, poll, spawn_app_on, Agent, TestApp, TestDb, PATIENCE};
use crate::load::{committed_keys, keys_with, Load, Outcome};
use crate::private_pg::PrivatePg;

/// A server on a fresh database of `pg`, with short cluster timings, and two agents: one for the
/// load, one whose token is revoked after the fault.
async fn setup(pg: &PrivatePg) -> (TestApp, Agent, Agent) {
    let db = TestDb::create_on(&pg.admin_url).await;
    let app = spawn_app_on(db, "", |s| {
        s.db.max_connections = 10;
        s.db.acquire_timeout_seconds = 2;
        s.cluster.heartbeat_seconds = 1;
        s.cluster.stale_after_seconds = 3;
        s.cluster.reconcile_interval_seconds = 1;
    })
    .await;
    app.mock.delay_ms.store(300, Ordering::SeqCst);
    let worker = app.create_agent("worker", "10.00", json!({})).await;
    let spare = app.create_agent("spare", "10.00", json!({})).await;
    (app, worker, spare)
}

fn start_load(app: &TestApp, agent: &Agent) -> Load {
    let mut load = Load::default();
    for i in 0..6 {
        load.add_worker(&app.base, 0, &agent.token, &format!("w{i}"));
    }
    load
}

async fn wait_for_successes(load: &Load, at_least: usize) {
    poll("successes", Duration::from_secs(30), || async {
        (load.count(|o| o.status == 200) >= at_least).then_some(())
    })
    .await;
}

/// Polls until a new request succeeds and `/ready` is 200; returns how long that took.
async fn wait_recovered(app: &TestApp, agent: &Agent) -> Duration {
    let started = Instant::now();
    poll(
        "requests and /ready to succeed again",
        Duration::from_secs(60),
        || async {
            let chat = app.chat(&agent.token, hello()).await.status();
            let ready = app.http.get(format!("{}/ready", app.base)).send().await;
            let ready = ready.map(|r| r.status()).ok();
            (chat == StatusCode::OK && ready == Some(StatusCode::OK)).then_some(())
        },
    )
    .await;
    started.elapsed()
}

/// Revokes `agent`'s token and measures how long until it is refused: the periodic resync is an
/// hour away (test_settings), so only a listener that reconnected by itself can bring it.
async fn revocation_latency(app: &TestApp, agent: &Agent) -> Duration {
    let jti = app.signer.verify(&agent.token).unwrap().jti;
    let mut tx = app.pool.begin().await.unwrap();
    aex::store::tokens::revoke_token(&mut tx, None, jti, "fault test")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let revoked = Instant::now();
    poll("the revocation to reach the server", PATIENCE, || async {
        (app.chat(&agent.token, hello()).await.status() == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    revoked.elapsed()
}

async fn states_of(app: &TestApp, ids: &[Uuid]) -> BTreeMap<String, usize> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT state, COALESCE(reason, '') FROM executions WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    rows.into_iter()
        .fold(BTreeMap::new(), |mut m, (state, reason)| {
            *m.entry(format!("{state} {reason}").trim().to_owned())
                .or_default() += 1;
            m
        })
}

/// After the load: nothing in flight, every answer a 200 or a 503 `unavailable`, every 200
/// committed and no 503 committed, and the audit passes. Returns the answers by kind.
async fn assert_clean(app: &TestApp, outcomes: &[Outcome]) -> BTreeMap<String, usize> {
    poll("every execution to be terminal", Duration::from_secs(60), || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM executions WHERE state IN ('RESERVING', 'RESERVED', 'DISPATCHED')",
        )
        .fetch_one(&app.pool)
        .await
        .ok()?;
        (open == 0).then_some(())
    })
    .await;
    let mut kinds = BTreeMap::new();
    for o in outcomes {
        let kind = format!("{} {}", o.status, o.code.as_deref().unwrap_or(""))
            .trim()
            .to_owned();
        *kinds.entry(kind).or_default() += 1;
    }
    assert!(
        kinds.keys().all(|k| k == "200" || k == "503 unavailable"),
        "only successes and clean 503s: {kinds:?}"
    );
    let committed = committed_keys(&app.pool).await;
    let answered = keys_with(outcomes, 200);
    let missing: Vec<String> = answered.difference(&committed).cloned().collect();
    let missing_states: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT execution_key, state, reason FROM executions WHERE execution_key = ANY($1)",
    )
    .bind(&missing)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(
        missing.is_empty(),
        "answered 200 but not charged: {missing_states:?}"
    );
    let charged: Vec<_> = keys_with(outcomes, 503)
        .into_iter()
        .filter(|k| committed.contains(k))
        .collect();
    assert!(charged.is_empty(), "answered 503 but charged: {charged:?}");
    app.assert_books_audit().await;
    kinds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_fail_requests_cleanly_and_the_gateway_recovers_by_itself() {
    let pg = PrivatePg::start().await;
    let (app, worker, spare) = setup(&pg).await;
    let load = start_load(&app, &worker);
    wait_for_successes(&load, 10).await;
    let mut terminated = 0;
    for _ in 0..10 {
        terminated += sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        // Let the load make progress on fresh connections before the next round.
        let before = load.count(|_| true);
        poll(
            "progress after a termination",
            Duration::from_secs(30),
            || async { (load.count(|_| true) >= before + 3).then_some(()) },
        )
        .await;
    }
    assert!(terminated > 0, "no backend of the gateway was terminated");
    let recovered_in = wait_recovered(&app, &worker).await;
    let revoked_in = revocation_latency(&app, &spare).await;
    let outcomes = load.stop().await;
    let kinds = assert_clean(&app, &outcomes).await;
    println!(
        "terminate backends: {terminated} backends terminated in 10 rounds; answers {kinds:?}; \
         a request and /ready succeeded {recovered_in:?} after the last round; \
         a revocation took {revoked_in:?}"
    );
}

/// Stops the database under load for `outage`, starts it again, and checks that the gateway
/// failed cleanly and recovered by itself.
async fn restart_under_load(outage: Duration) {
    let pg = PrivatePg::start().await;
    let (app, worker, spare) = setup(&pg).await;
    let load = start_load(&app, &worker);
    wait_for_successes(&load, 10).await;

    let open: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM executions WHERE state IN ('RESERVING', 'RESERVED', 'DISPATCHED')",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    pg.stop().await;
    let stopped = Instant::now();
    poll(
        "/ready to report the outage",
        Duration::from_secs(10),
        || async {
            let r = app
                .http
                .get(format!("{}/ready", app.base))
                .send()
                .await
                .ok()?;
            (r.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(())
        },
    )
    .await;
    // A new request is refused cleanly (the load's own requests may all be waiting to settle).
    let refused = app.chat(&worker.token, hello()).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert_eq!(body["error"]["type"], "server_error");
    // The fault itself: the database stays down for `outage`.
    tokio::time::sleep_until((stopped + outage).into()).await;
    pg.restart().await;
    let restarted = Instant::now();
    let recovered_in = wait_recovered(&app, &worker).await;
    let revoked_in = revocation_latency(&app, &spare).await;
    let outcomes = load.stop().await;
    let kinds = assert_clean(&app, &outcomes).await;
    let first_load_success = outcomes
        .iter()
        .filter(|o| o.status == 200 && o.at > restarted)
        .map(|o| o.at - restarted)
        .min();
    let during = outcomes
        .iter()
        .filter(|o| o.at > stopped && o.at < restarted)
        .count();
    println!(
        "restart: database down {:?}; {during} answers during the outage; answers {kinds:?}; \
         {} executions in flight at the stop ended {:?}; after the restart a new request and \
         /ready succeeded within {recovered_in:?}, the load's first success came after \
         {first_load_success:?}; a revocation took {revoked_in:?}",
        restarted - stopped,
        open.len(),
        states_of(&app, &open).await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_fails_requests_cleanly_and_the_gateway_recovers_by_itself() {
    // Longer than stale_after_seconds: every heartbeat is stale when the database returns.
    restart_under_load(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_through_a_long_database_outage_are_settled_when_it_returns() {
    // Longer than any fixed settlement retry budget: settlement must wait for the database.
    restart_under_load(Duration::from_secs(35)).await;
}
