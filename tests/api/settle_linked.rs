//! A lone settlement in one round trip (`store::settlements`, `aex_settle_linked`): its event is
//! linked after the chain tail it predicts — its own hold's `execution.dispatched` — and written
//! with the books in one statement; a wrong prediction (the chain moved on, another hold, an
//! overrun budget the payload must report) writes nothing and the settlement reads the tail and
//! links again. Proven on the chains and the books, and by how often the event was linked.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value};

use aex::domain::AgentId;
use aex::ledger::link::settlement_event;
use aex::store::hot::HotPool;
use aex::store::settle_batch::SettlementJob;
use aex::store::settlements::{settle, Predicted, SettledHold};

use crate::helpers::{hello, spawn_app, TestApp};
use crate::settle_batch::{committing, held, hot, owner, reservation};

/// The tail of the agent's chain now, as the settlement of its last hold predicts it.
async fn tail(app: &TestApp, agent: AgentId, estimate: i64) -> Predicted {
    let (seq, hash): (i64, String) = sqlx::query_as(
        "SELECT seq, event_hash FROM event_log WHERE chain_id = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(format!("agent:{}", agent.0))
    .fetch_one(&app.pool)
    .await
    .unwrap();
    Predicted {
        estimate_micro_usd: estimate,
        holds_tenant: false,
        tail_seq: seq,
        tail_hash: hash,
    }
}

/// Settles `job`; what it returned, and how many times its event was linked (once when the
/// prediction held, twice when the tail had to be read).
async fn settle_counting(pool: &HotPool, job: &SettlementJob) -> (Option<SettledHold>, usize) {
    let links = AtomicUsize::new(0);
    let settled = settle(pool, &job.settlement(), |s, b| {
        links.fetch_add(1, Ordering::SeqCst);
        settlement_event(s, b)
    })
    .await
    .expect("settles");
    (settled, links.load(Ordering::SeqCst))
}

/// Lone settlements this process wrote after a right prediction (`hit`) or a wrong one (tests
/// run in parallel in one process: the counters only ever grow, so a test reads its own
/// increase as "at least").
fn predictions(outcome: &str) -> u64 {
    let m = aex::metrics::METRICS.as_ref().expect("metrics");
    m.settlement_predictions.with_label_values(&[outcome]).get()
}

/// `(seq, prev_hash, event_type, payload)` of the last event of the agent's chain.
async fn last_event(app: &TestApp, agent: AgentId) -> (i64, String, String, Value) {
    let (seq, prev, kind, payload): (i64, String, String, String) = sqlx::query_as(
        "SELECT seq, prev_hash, event_type, payload FROM event_log WHERE chain_id = $1 \
         ORDER BY seq DESC LIMIT 1",
    )
    .bind(format!("agent:{}", agent.0))
    .fetch_one(&app.pool)
    .await
    .unwrap();
    (seq, prev, kind, serde_json::from_str(&payload).unwrap())
}

#[tokio::test]
async fn a_settlement_that_predicts_its_tail_is_linked_once_and_written_after_it() {
    let app = spawn_app().await;
    let a = app.create_agent("predicted", "1.00", json!({})).await;
    let who = owner(&app, a.id).await;
    let mut job = committing(held(&app, who, "p-1", 1_000).await, 800);
    let predicted = tail(&app, who.1, 1_000).await;
    job.predicted = Some(predicted.clone());
    let pool = hot(&app).await;

    let hits = predictions("hit");
    let (settled, links) = settle_counting(&pool, &job).await;
    let settled = settled.expect("settled");
    assert_eq!(links, 1, "linked once, after the predicted tail");
    assert!(predictions("hit") > hits, "written the one-statement way");
    assert_eq!(settled.estimate_micro_usd, 1_000);
    assert_eq!(settled.remaining_micro_usd, 1_000_000 - 800);
    assert_eq!(
        reservation(&app, "p-1").await,
        ("COMMITTED".into(), Some(800))
    );
    assert_eq!(app.books(a.id).await, (800, 0, 1_000_000));
    let (seq, prev, kind, payload) = last_event(&app, who.1).await;
    assert_eq!((seq, prev), (predicted.tail_seq + 1, predicted.tail_hash));
    assert_eq!(kind, "usage.commit");
    assert_eq!(payload["budget_overrun"], json!(false));
    assert_eq!(payload["estimate_micro_usd"], json!(1_000));

    // Settled again with the same prediction: nothing is written.
    let (again, _) = settle_counting(&pool, &job).await;
    assert!(again.is_none());
    assert_eq!(last_event(&app, who.1).await.0, seq);
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_wrong_prediction_writes_nothing_and_the_settlement_links_after_the_real_tail() {
    let app = spawn_app().await;
    let a = app.create_agent("moved-on", "0.010000", json!({})).await;
    let who = owner(&app, a.id).await;
    let pool = hot(&app).await;

    // The chain moved on: another hold of the agent came after this one's.
    let mut first = committing(held(&app, who, "m-1", 1_000).await, 900);
    first.predicted = Some(tail(&app, who.1, 1_000).await);
    let second = held(&app, who, "m-2", 2_000).await;
    let stale = predictions("stale");
    let (settled, links) = settle_counting(&pool, &first).await;
    assert_eq!(
        links, 2,
        "linked after the prediction, then after the tail it read"
    );
    assert_eq!(
        settled.expect("settled").remaining_micro_usd,
        10_000 - 900 - 2_000
    );
    let (seq, _, kind, _) = last_event(&app, who.1).await;
    assert_eq!(kind, "usage.commit");

    // A hold it did not make (the estimate it predicts is not the reservation's).
    let mut wrong_hold = second;
    wrong_hold.predicted = Some(tail(&app, who.1, 1_999).await);
    let (settled, links) = settle_counting(&pool, &wrong_hold).await;
    assert_eq!(links, 2);
    assert_eq!(settled.expect("released").estimate_micro_usd, 2_000);
    assert_eq!(last_event(&app, who.1).await.0, seq + 1);

    // The budget is overrun after this charge: the payload must say so, which the prediction
    // (not overrun) cannot.
    let mut overrun = committing(held(&app, who, "m-3", 1_000).await, 9_500);
    overrun.payload["overrun"] = json!("provider");
    overrun.predicted = Some(tail(&app, who.1, 1_000).await);
    let (settled, links) = settle_counting(&pool, &overrun).await;
    assert_eq!(links, 2);
    assert_eq!(
        settled.expect("settled").remaining_micro_usd,
        10_000 - 900 - 9_500
    );
    let (_, _, kind, payload) = last_event(&app, who.1).await;
    assert_eq!(kind, "usage.commit");
    assert_eq!(payload["budget_overrun"], json!(true));

    assert_eq!(app.books(a.id).await, (10_400, 0, 10_000));
    let commits = app
        .count("SELECT count(*) FROM event_log WHERE event_type IN ('usage.commit', 'reservation.released')")
        .await;
    assert_eq!(commits, 3, "each settlement written exactly once");
    assert!(predictions("stale") >= stale + 3);
    app.assert_books_audit().await;
}

#[tokio::test]
async fn one_client_calling_in_turn_is_settled_in_one_round_trip_each_time() {
    let app = spawn_app().await;
    let a = app.create_agent("in-turn", "1.00", json!({})).await;
    let hits = predictions("hit");
    for _ in 0..3 {
        let resp = app.chat(&a.token, hello()).await;
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().contains_key("x-aex-cost-micro-usd"));
    }
    assert!(
        predictions("hit") >= hits + 3,
        "each call's hold was its chain's tail"
    );
    let commits = app
        .count("SELECT count(*) FROM event_log WHERE event_type = 'usage.commit'")
        .await;
    assert_eq!(commits, 3);
    app.assert_books_audit().await;
}
