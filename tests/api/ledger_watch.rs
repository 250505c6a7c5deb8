//! The running server's ledger check: incremental passes that keep up with appends, events that
//! commit out of id order, and forged events, in the library and on `/metrics`.

use aex::domain::{AgentId, DEFAULT_TENANT};
use aex::ledger::watch::ChainWatch;
use aex::ledger::{self, NewEvent};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{hello, poll, spawn_app_with, TestApp, PATIENCE};

async fn event_count(app: &TestApp) -> u64 {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM event_log")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    u64::try_from(n).unwrap()
}

async fn forge_attempt(app: &TestApp, id: i64) {
    app.forge_event(id, "\"attempt\":1", "\"attempt\":2").await;
}

async fn quiet_app() -> TestApp {
    // The server's own check stays out of the way of the one under test.
    spawn_app_with(|s| s.ledger.verify_interval_seconds = 0).await
}

#[tokio::test]
async fn each_pass_verifies_what_was_appended_including_events_that_committed_late() {
    let app = quiet_app().await;
    let a = app.create_agent("first", "1.00", json!({})).await;
    let b = app.create_agent("second", "1.00", json!({})).await;
    assert_eq!(app.chat(&a.token, hello()).await.status(), StatusCode::OK);

    let mut watch = ChainWatch::default();
    let report = watch.verify_new(&app.pool).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events, event_count(&app).await);

    // An append to a's chain takes its id now but commits only after b's newer events were seen.
    let mut late = app.pool.begin().await.unwrap();
    ledger::append(
        &mut late,
        NewEvent::for_agent(
            DEFAULT_TENANT,
            AgentId(a.id),
            "test.note",
            None,
            json!({"n": 1}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(app.chat(&b.token, hello()).await.status(), StatusCode::OK);
    let report = watch.verify_new(&app.pool).await.unwrap();
    assert!(report.ok);
    late.commit().await.unwrap();
    assert_eq!(app.chat(&a.token, hello()).await.status(), StatusCode::OK);
    let report = watch.verify_new(&app.pool).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(
        report.events,
        event_count(&app).await,
        "the late event was verified through its chain's gap"
    );
    let chains: i64 = sqlx::query_scalar("SELECT count(DISTINCT chain_id) FROM event_log")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(report.chains, u64::try_from(chains).unwrap());
}

#[tokio::test]
async fn a_pass_reads_page_after_page_until_every_new_event_is_verified() {
    let app = quiet_app().await;
    let a = app.create_agent("first", "1.00", json!({})).await;
    let b = app.create_agent("second", "1.00", json!({})).await;
    for token in [&a.token, &b.token, &a.token] {
        assert_eq!(app.chat(token, hello()).await.status(), StatusCode::OK);
    }
    // Pages of 2 events: the chains' events straddle every page boundary.
    let mut watch = ChainWatch::with_page(2);
    let report = watch.verify_new(&app.pool).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events, event_count(&app).await);

    assert_eq!(app.chat(&b.token, hello()).await.status(), StatusCode::OK);
    let report = watch.verify_new(&app.pool).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(
        report.events,
        event_count(&app).await,
        "the next pass starts after the last page"
    );
}

#[tokio::test]
async fn a_chain_whose_ids_run_against_its_seqs_is_still_verified_whole() {
    // Passes read new events in id order. Within a chain ids rise with seq; were they ever
    // not to, each out-of-order event is a gap filled by (chain, seq), not an error.
    let app = quiet_app().await;
    let a = app.create_agent("first", "1.00", json!({})).await;
    assert_eq!(app.chat(&a.token, hello()).await.status(), StatusCode::OK);
    let mut tx = app.pool.begin().await.unwrap();
    for sql in [
        "ALTER TABLE event_log DISABLE TRIGGER event_log_append_only",
        "UPDATE event_log SET id = 1000000 - seq WHERE chain_id = 'agent:' || $1::text",
        "ALTER TABLE event_log ENABLE TRIGGER event_log_append_only",
    ] {
        let q = sqlx::query(sql);
        let q = if sql.contains("$1") { q.bind(a.id) } else { q };
        q.execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();

    let report = ChainWatch::default().verify_new(&app.pool).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events, event_count(&app).await);
}

#[tokio::test]
async fn a_forged_new_event_is_caught_by_the_next_pass_and_an_old_one_by_a_full_pass() {
    let app = quiet_app().await;
    let agent = app.create_agent("forged", "1.00", json!({})).await;
    assert_eq!(
        app.chat(&agent.token, hello()).await.status(),
        StatusCode::OK
    );
    let mut watch = ChainWatch::default();
    assert!(watch.verify_new(&app.pool).await.unwrap().ok);

    // An old, already verified event edited: invisible to incremental passes...
    let old: i64 = sqlx::query_scalar(
        "SELECT id FROM event_log WHERE event_type = 'usage.commit' ORDER BY id LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    forge_attempt(&app, old).await;
    assert!(watch.verify_new(&app.pool).await.unwrap().ok);
    // ...until the periodic full pass.
    watch.reset();
    let report = watch.verify_new(&app.pool).await.unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_bad_event.unwrap().id, old);

    // A new event edited before the next pass is caught by it, and stays reported.
    let app = quiet_app().await;
    let agent = app.create_agent("forged-new", "1.00", json!({})).await;
    let mut watch = ChainWatch::default();
    assert!(watch.verify_new(&app.pool).await.unwrap().ok);
    assert_eq!(
        app.chat(&agent.token, hello()).await.status(),
        StatusCode::OK
    );
    let fresh: i64 =
        sqlx::query_scalar("SELECT id FROM event_log WHERE event_type = 'execution.dispatched'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    forge_attempt(&app, fresh).await;
    let report = watch.verify_new(&app.pool).await.unwrap();
    assert_eq!(report.first_bad_event.as_ref().map(|b| b.id), Some(fresh));
    assert!(!watch.verify_new(&app.pool).await.unwrap().ok);
}

#[tokio::test]
async fn a_forged_event_turns_aex_ledger_verify_ok_to_zero_on_metrics() {
    // Every pass a full one, so the forgery is found wherever the last pass stopped.
    let app = spawn_app_with(|s| {
        s.ledger.verify_interval_seconds = 1;
        s.ledger.full_verify_interval_seconds = 1;
    })
    .await;
    let agent = app.create_agent("watched", "1.00", json!({})).await;
    let scrape = || async { app.get("/metrics", None).await.text().await.unwrap() };
    assert!(scrape().await.contains("\naex_ledger_verify_ok 1\n"));
    assert_eq!(
        app.chat(&agent.token, hello()).await.status(),
        StatusCode::OK
    );
    let commit: i64 =
        sqlx::query_scalar("SELECT id FROM event_log WHERE event_type = 'usage.commit'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    forge_attempt(&app, commit).await;
    poll("aex_ledger_verify_ok to go to 0", PATIENCE, || async {
        scrape()
            .await
            .contains("\naex_ledger_verify_ok 0\n")
            .then_some(())
    })
    .await;
    let m: serde_json::Value = app
        .get("/admin/metrics", Some(&app.operator_token))
        .await
        .json()
        .await
        .unwrap();
    let check = &m["ledger"]["last_verification"];
    assert_eq!(check["ok"], false);
    assert_eq!(check["first_bad_event"]["id"], commit);
}
