//! Many requests at once through one agent: the budget is never overspent and every reservation
//! ends terminal, proven on the books.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{hello, spawn_app};

#[tokio::test]
async fn two_hundred_concurrent_requests_never_overspend_one_budget() {
    let app = Arc::new(spawn_app().await);
    // Each request reserves about 600 micro-USD (1000 output tokens at 0.60/M plus the prompt)
    // and really costs 14: the budget holds three at once, and the spend alone binds it — 200
    // calls would spend 2,800 — so some are refused however fast settlement gives holds back
    // (with 30,000 the refusals depended on holds piling up behind slow settlements).
    let agent = app.create_agent("hot", "0.002000", json!({})).await;
    app.mock.delay_ms.store(50, Ordering::SeqCst);

    let sent = 200;
    let results = join_all((0..sent).map(|_| {
        let app = Arc::clone(&app);
        let token = agent.token.clone();
        async move {
            let resp = app.chat(&token, hello()).await;
            let status = resp.status();
            let cost = resp
                .headers()
                .get("x-aex-cost-micro-usd")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i64>().ok());
            (status, cost)
        }
    }))
    .await;

    let admitted = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let denied = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::PAYMENT_REQUIRED)
        .count();
    assert_eq!(
        admitted + denied,
        sent,
        "every request is either served or refused for budget: {results:?}"
    );
    assert!(
        admitted > 0 && denied > 0,
        "the budget must bind: admitted {admitted}, denied {denied}"
    );
    let billed: i64 = results.iter().filter_map(|(_, c)| *c).sum();

    let (spent, reserved, budget) = app.books(agent.id).await;
    println!("concurrency: sent {sent}, admitted {admitted}, denied {denied}, spent {spent} of budget {budget} micro-USD");
    assert!(spent <= budget, "overspent: {spent} > {budget}");
    assert_eq!(reserved, 0, "nothing is held when idle");
    assert_eq!(
        spent, billed,
        "spent equals the sum of the costs reported to clients"
    );
    let states = app.execution_states(agent.id).await;
    assert_eq!(states.len(), sent);
    assert_eq!(
        states.iter().filter(|s| *s == "COMMITTED").count(),
        admitted
    );
    assert_eq!(states.iter().filter(|s| *s == "DENIED").count(), denied);
    assert_eq!(app.mock.calls() as usize, admitted);
    app.assert_books_audit().await;
}
