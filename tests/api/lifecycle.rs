//! A PAUSE takes effect on every replica at once: the lifecycle check is inside the reservation
//! transaction, so no admission can slip in after the transition commits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{hello, poll, spawn_app, PATIENCE};

#[tokio::test]
async fn a_pause_during_a_burst_stops_admissions_at_once_on_every_replica() {
    let app = Arc::new(spawn_app().await);
    let (second, second_base) = app.spawn_replica().await;
    let agent = app.create_agent("bursty", "1.00", json!({})).await;
    // Each of the 48 requests left after the twelfth answer takes 50 ms at the provider: the
    // pause has some 600 ms (12 requests per worker) to land mid-burst, even on a loaded machine.
    app.mock.delay_ms.store(50, Ordering::SeqCst);
    let done = Arc::new(AtomicUsize::new(0));

    // Four workers send requests back to back through both replicas; the pause lands mid-burst.
    let workers = (0..4).map(|w| {
        let (app, token, done) = (Arc::clone(&app), agent.token.clone(), Arc::clone(&done));
        let base = if w % 2 == 0 {
            app.base.clone()
        } else {
            second_base.clone()
        };
        async move {
            let mut statuses = Vec::new();
            for _ in 0..15 {
                let r = app
                    .http
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(&token)
                    .json(&hello())
                    .send()
                    .await
                    .unwrap();
                statuses.push(r.status());
                done.fetch_add(1, Ordering::SeqCst);
            }
            statuses
        }
    });
    let pauser = {
        let (app, done) = (Arc::clone(&app), Arc::clone(&done));
        async move {
            poll("twelve requests to be answered", PATIENCE, || async {
                (done.load(Ordering::SeqCst) >= 12).then_some(())
            })
            .await;
            let r = app
                .http
                .post(format!("{}/admin/agents/{}/state", app.base, agent.id))
                .bearer_auth(&app.operator_token)
                .json(&json!({"state": "PAUSED", "reason": "burst test"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let paused_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
                "SELECT ts FROM event_log WHERE agent_id = $1 AND event_type = 'agent.state_changed' ORDER BY id DESC LIMIT 1",
            )
            .bind(agent.id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
            paused_at
        }
    };
    let (results, paused_at) = tokio::join!(join_all(workers), pauser);
    let statuses: Vec<StatusCode> = results.into_iter().flatten().collect();
    let served = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let locked = statuses
        .iter()
        .filter(|s| **s == StatusCode::LOCKED)
        .count();
    assert_eq!(served + locked, 60, "{statuses:?}");
    assert!(
        served >= 12 && locked > 0,
        "served {served}, refused {locked}"
    );

    // Not one reservation was made after the pause committed, on either replica.
    let late: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM reservations WHERE agent_id = $1 AND created_at > $2",
    )
    .bind(agent.id)
    .bind(paused_at)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(late, 0);
    let denied: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM executions WHERE agent_id = $1 AND reason = 'agent_not_ready'",
    )
    .bind(agent.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(denied as usize, locked, "every refusal is recorded");
    second.shutdown();
    second.wait().await.unwrap();
    app.assert_books_audit().await;
}
