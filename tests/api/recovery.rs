//! Recovery: executions of a lost replica are settled by another, and the lost one's late
//! settlement changes nothing.

use std::sync::atomic::Ordering;
use std::time::Duration;

use aex::cluster::reconciler;
use serde_json::json;

use crate::helpers::{hello, spawn_app, TestApp};

/// Declares the app's replica lost (as if its heartbeat had stopped long ago) and runs one pass
/// of the reconciler.
async fn declare_lost_and_reconcile(app: &TestApp) -> reconciler::ReconcileReport {
    sqlx::query("UPDATE replicas SET heartbeat_at = now() - interval '1 hour'")
        .execute(&app.pool)
        .await
        .unwrap();
    reconcile(app).await
}

/// One pass of the reconciler on the app's books.
async fn reconcile(app: &TestApp) -> reconciler::ReconcileReport {
    let books = &app.server.as_ref().unwrap().state.gateway.books;
    let stale_after = Duration::from_secs(app.settings.cluster.stale_after_seconds);
    reconciler::reconcile_once(books, stale_after)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_lost_replicas_dispatched_execution_is_failed_and_released_exactly_once() {
    let app = spawn_app().await;
    let agent = app.create_agent("orphan", "1.00", json!({})).await;
    // The provider holds the call until the test lets it answer.
    app.mock.gate_closed.store(true, Ordering::SeqCst);
    let inflight = app.spawn_chat(&agent.token);
    app.await_execution_states(agent.id, &["DISPATCHED"]).await;
    let (_, held, _) = app.books(agent.id).await;
    assert!(held > 0);

    // The replica is declared lost (as if its heartbeat had stopped long ago).
    let report = declare_lost_and_reconcile(&app).await;
    assert_eq!(report.failed, 1);
    assert_eq!(app.execution_states(agent.id).await, vec!["FAILED"]);
    assert_eq!(app.books(agent.id).await.1, 0, "the hold is released");
    let reason: String = sqlx::query_scalar("SELECT payload::jsonb->>'reason' FROM event_log WHERE agent_id = $1 AND event_type = 'reservation.released'")
        .bind(agent.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(reason, "replica_lost");

    // The "lost" replica finishes its call: its settlement finds nothing to settle.
    app.mock.open_gate();
    let resp = inflight.await.unwrap();
    assert_eq!(resp.status(), 200);
    let (spent, reserved, _) = app.books(agent.id).await;
    assert_eq!((spent, reserved), (0, 0));
    assert_eq!(app.execution_states(agent.id).await, vec!["FAILED"]);

    // A live replica's executions are never touched.
    sqlx::query("UPDATE replicas SET heartbeat_at = now()")
        .execute(&app.pool)
        .await
        .unwrap();
    let report = reconcile(&app).await;
    assert_eq!(report.failed + report.released, 0);
}

#[tokio::test]
async fn the_hold_and_the_dispatch_mark_commit_in_one_transaction() {
    // Recovery must know whether the provider may have been called before it is called, and a
    // hold must never exist without its execution: the admission transaction writes the
    // reservation, the DISPATCHED execution and both ledger events together. Postgres stamps
    // every row a transaction writes with its id (`xmin`), so one id across all four proves it.
    let app = spawn_app().await;
    let agent = app.create_agent("one-commit", "1.00", json!({})).await;
    app.mock.gate_closed.store(true, Ordering::SeqCst);
    let inflight = app.spawn_chat(&agent.token);
    app.await_execution_states(agent.id, &["DISPATCHED"]).await;
    let (execution_xid, provider, dispatched): (String, Option<String>, bool) = sqlx::query_as(
        "SELECT xmin::text, provider, dispatched_at IS NOT NULL FROM executions \
         WHERE agent_id = $1 AND state = 'DISPATCHED'",
    )
    .bind(agent.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((provider.as_deref(), dispatched), (Some("mock"), true));
    let writes: Vec<(String, String)> = sqlx::query_as(
        "SELECT 'reservation', xmin::text FROM reservations WHERE agent_id = $1 \
         UNION ALL SELECT event_type, xmin::text FROM event_log \
         WHERE agent_id = $1 AND execution_id IS NOT NULL ORDER BY 1",
    )
    .bind(agent.id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let expected: Vec<(String, String)> = [
        "execution.dispatched",
        "reservation",
        "reservation.reserved",
    ]
    .iter()
    .map(|w| (w.to_string(), execution_xid.clone()))
    .collect();
    assert_eq!(writes, expected);
    app.mock.open_gate();
    assert_eq!(inflight.await.unwrap().status(), 200);
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_lost_replicas_next_attempt_of_a_key_is_found_by_its_hold_and_failed_once() {
    // The reconciler finds open executions through their attempt's RESERVED hold (executions has
    // no index on state, so that settling one is a HOT update): a key's second attempt reuses the
    // execution row, next to the first attempt's released hold, and must be found by the second
    // hold alone, once; a finished execution of the same lost replica is left as it is.
    let app = spawn_app().await;
    let agent = app.create_agent("next-attempt", "1.00", json!({})).await;
    let done = app.create_agent("finished", "1.00", json!({})).await;
    assert_eq!(app.chat(&done.token, hello()).await.status(), 200);
    app.await_execution_states(done.id, &["COMMITTED"]).await;
    let key = [("Idempotency-Key", "lost-second-attempt")];
    app.mock.status.store(503, Ordering::SeqCst);
    let first = app
        .post("/v1/chat/completions", &agent.token, hello(), &key)
        .await;
    assert_eq!(first.status(), 502);
    app.mock.status.store(0, Ordering::SeqCst);
    app.mock.gate_closed.store(true, Ordering::SeqCst);
    let second = app
        .http
        .post(format!("{}/v1/chat/completions", app.base))
        .bearer_auth(&agent.token)
        .header(key[0].0, key[0].1)
        .json(&hello())
        .send();
    let inflight = tokio::spawn(second);
    app.await_execution_states(agent.id, &["DISPATCHED"]).await;

    let report = declare_lost_and_reconcile(&app).await;
    assert_eq!((report.failed, report.released), (1, 0));
    let holds: Vec<(i32, String, Option<String>)> = sqlx::query_as(
        "SELECT attempt, state, reason FROM reservations WHERE agent_id = $1 ORDER BY attempt",
    )
    .bind(agent.id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(holds.len(), 2);
    assert_eq!((holds[0].0, holds[0].1.as_str()), (1, "RELEASED"));
    assert_eq!(
        (holds[1].0, holds[1].1.as_str(), holds[1].2.as_deref()),
        (2, "RELEASED", Some("replica_lost"))
    );
    let (attempt, state): (i32, String) =
        sqlx::query_as("SELECT attempt, state FROM executions WHERE agent_id = $1")
            .bind(agent.id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((attempt, state.as_str()), (2, "FAILED"));
    assert_eq!(app.books(agent.id).await.1, 0, "the hold is released");
    assert_eq!(app.execution_states(done.id).await, vec!["COMMITTED"]);
    // A second pass finds nothing left.
    let again = reconcile(&app).await;
    assert_eq!(again.failed + again.released, 0);

    app.mock.open_gate();
    assert_eq!(inflight.await.unwrap().unwrap().status(), 200);
    let (spent, reserved, _) = app.books(agent.id).await;
    assert_eq!(
        (spent, reserved),
        (0, 0),
        "the late settlement changes nothing"
    );
    sqlx::query("UPDATE replicas SET heartbeat_at = now()")
        .execute(&app.pool)
        .await
        .unwrap();
    app.assert_books_audit().await;
}
