//! Recovery: executions of a lost replica are settled by another, and the lost one's late
//! settlement changes nothing.

use std::sync::atomic::Ordering;
use std::time::Duration;

use aex::cluster::reconciler;
use serde_json::json;

use crate::helpers::{hello, spawn_app};

#[tokio::test]
async fn a_lost_replicas_dispatched_execution_is_failed_and_released_exactly_once() {
    let app = spawn_app().await;
    let agent = app.create_agent("orphan", "1.00", json!({})).await;
    app.mock.delay_ms.store(1_500, Ordering::SeqCst);
    let inflight = app.spawn_chat(&agent.token);
    for _ in 0..100 {
        if app.execution_states(agent.id).await == vec!["DISPATCHED"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.execution_states(agent.id).await, vec!["DISPATCHED"]);
    let (_, held, _) = app.books(agent.id).await;
    assert!(held > 0);

    // The replica is declared lost (as if its heartbeat had stopped long ago).
    sqlx::query("UPDATE replicas SET heartbeat_at = now() - interval '1 hour'")
        .execute(&app.pool)
        .await
        .unwrap();
    let gw = &app.server.as_ref().unwrap().gateway;
    let report = reconciler::reconcile_once(gw).await.unwrap();
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
    let report = reconciler::reconcile_once(gw).await.unwrap();
    assert_eq!(report.failed + report.released, 0);
}

#[tokio::test]
async fn an_execution_reclaimed_before_dispatch_is_never_sent_to_the_provider() {
    let app = spawn_app().await;
    let agent = app.create_agent("reclaimed", "1.00", json!({})).await;
    // An execution that the reconciler already settled (here: released by a failed call).
    app.mock.status.store(500, Ordering::SeqCst);
    assert_eq!(app.chat(&agent.token, hello()).await.status(), 502);
    let (id, key): (uuid::Uuid, String) =
        sqlx::query_as("SELECT id, execution_key FROM executions WHERE agent_id = $1")
            .bind(agent.id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let gw = &app.server.as_ref().unwrap().gateway;
    let reservation = aex::gateway::admission::Reservation {
        execution_id: id,
        execution_key: key,
        attempt: 1,
        tenant_id: aex::domain::DEFAULT_TENANT,
        agent_id: aex::domain::AgentId(agent.id),
        model_alias: "gpt-4o-mini".into(),
        estimate: aex::gateway::estimate::Estimate {
            prompt_tokens: 1,
            output_cap: None,
            cost: aex::money::MicroUsd(1),
        },
        clamped: false,
        holds_tenant: false,
        remaining_after: 0,
        quota: Default::default(),
    };
    let marked =
        aex::gateway::call::mark_dispatched_or_release(gw, &reservation, "mock", json!({})).await;
    assert!(
        matches!(marked, Err(aex::gateway::GatewayError::Unavailable(_))),
        "{marked:?}"
    );
    assert_eq!(
        app.execution_states(agent.id).await,
        vec!["RELEASED"],
        "nothing changed"
    );
    app.assert_books_audit().await;
}
