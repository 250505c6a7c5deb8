//! Settlements batched per replica (issue 17, item 1), proven on the books: a batch whose member
//! fails still commits the others exactly once, members of one chain link to each other, the
//! remaining budget each event reports is the one after that member, and many concurrent calls
//! through the real gateway end with exact books while batches really form.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use aex::domain::{AgentId, TenantId};
use aex::ledger::link::settlement_event;
use aex::store::hot::{lazy_pool, HotPool};
use aex::store::settle_batch::{settle_batch, ChargeJob, SettlementJob};

use crate::helpers::{hello, spawn_app, TestApp};

/// An agent's `(tenant, agent)` ids.
pub(crate) async fn owner(app: &TestApp, agent: Uuid) -> (TenantId, AgentId) {
    let tenant: Uuid = sqlx::query_scalar("SELECT tenant_id FROM agents WHERE id = $1")
        .bind(agent)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    (TenantId(tenant), AgentId(agent))
}

/// Holds `estimate` for a new dispatched execution `key` of the agent, with the hold function a
/// replica of an earlier version calls (its events hashed in SQL, verified alike), and returns
/// the settlement that commits `actual` for it.
pub(crate) async fn held(
    app: &TestApp,
    who: (TenantId, AgentId),
    key: &str,
    estimate: i64,
) -> SettlementJob {
    let (tenant, agent) = who;
    let chain = format!("agent:{}", agent.0);
    let lock_key = aex::ledger::chain_lock_key(&chain);
    let replica: Uuid =
        sqlx::query_scalar("SELECT id FROM replicas WHERE stopped_at IS NULL LIMIT 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let execution = Uuid::now_v7();
    let reserved =
        format!(r#"{{"attempt":1,"estimate_micro_usd":{estimate},"holds_tenant":false}}"#);
    sqlx::query(
        "SELECT aex_hold($1, $2, $3, $4, false, 'chat', 'fp', 'gpt-4o-mini', 'DISPATCHED', 1, \
         false, $5, $6, 'mock', $7, false, 0, $8, $9, $10, '{}')",
    )
    .bind(execution)
    .bind(tenant.0)
    .bind(agent.0)
    .bind(key)
    .bind(replica)
    .bind(estimate)
    .bind(Uuid::now_v7())
    .bind(&chain)
    .bind(lock_key)
    .bind(reserved)
    .execute(&app.pool)
    .await
    .unwrap();
    SettlementJob {
        execution_id: execution,
        attempt: 1,
        tenant_id: tenant,
        agent_id: agent,
        execution_key: key.to_owned(),
        chain_id: chain,
        chain_lock_key: lock_key,
        state: "RELEASED".into(),
        reason: Some("upstream_error".into()),
        charge: None,
        result: Some((200, b"{}".to_vec(), false)),
        event_type: "reservation.released".into(),
        payload: json!({"attempt": 1}),
        model_alias: "gpt-4o-mini".into(),
        rate_subjects: [format!("agent:{}", agent.0), format!("tenant:{}", tenant.0)],
        predicted: None,
    }
}

/// The settlement `job` commits `actual`.
pub(crate) fn committing(mut job: SettlementJob, actual: i64) -> SettlementJob {
    job.charge = Some(ChargeJob {
        actual_micro_usd: actual,
        prompt_tokens: Some(10),
        completion_tokens: Some(20),
        usage_source: "reported".into(),
        latency_ms: 5,
    });
    job.state = "COMMITTED".into();
    job.reason = None;
    job.event_type = "usage.commit".into();
    job.payload = json!({"attempt": 1, "actual_micro_usd": actual, "usage": "reported",
        "prompt_tokens": 10, "completion_tokens": 20});
    job
}

pub(crate) async fn hot(app: &TestApp) -> HotPool {
    lazy_pool(&app.db.url, &app.settings.db).unwrap()
}

/// `(state, actual)` of the reservation of execution `key`.
pub(crate) async fn reservation(app: &TestApp, key: &str) -> (String, Option<i64>) {
    sqlx::query_as(
        "SELECT r.state, r.actual_micro_usd FROM reservations r \
         JOIN executions e ON e.id = r.execution_id WHERE e.execution_key = $1",
    )
    .bind(key)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_batch_with_a_failing_member_commits_the_others_exactly_once() {
    let app = spawn_app().await;
    let a = app.create_agent("batched", "1.00", json!({})).await;
    let who = owner(&app, a.id).await;
    // The middle member fails whenever its execution is written: a trigger of this test's own.
    sqlx::raw_sql(
        "CREATE FUNCTION test_fail() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'this member fails'; END $$; \
         CREATE TRIGGER test_fail BEFORE UPDATE ON executions FOR EACH ROW \
         WHEN (NEW.execution_key = 'bad' AND NEW.state <> 'DISPATCHED') \
         EXECUTE FUNCTION test_fail();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let jobs = vec![
        committing(held(&app, who, "ok-1", 1_000).await, 700),
        committing(held(&app, who, "bad", 2_000).await, 900),
        committing(held(&app, who, "ok-2", 3_000).await, 2_500),
    ];
    let pool = hot(&app).await;
    let results = settle_batch(&pool, jobs.clone(), settlement_event).await;
    assert_eq!(results.len(), 3);
    let first = results[0].as_ref().unwrap().expect("settled");
    assert!(
        results[1].is_err(),
        "the failing member answers its own error"
    );
    let third = results[2].as_ref().unwrap().expect("settled");
    // Settled alone, one after the other: each remaining is the books right after it (the
    // failing member's 2 000 still held).
    assert_eq!(first.remaining_micro_usd, 1_000_000 - 700 - 2_000 - 3_000);
    assert_eq!(third.remaining_micro_usd, 1_000_000 - 700 - 2_500 - 2_000);
    assert_eq!(
        reservation(&app, "ok-1").await,
        ("COMMITTED".into(), Some(700))
    );
    assert_eq!(reservation(&app, "bad").await, ("RESERVED".into(), None));
    assert_eq!(
        reservation(&app, "ok-2").await,
        ("COMMITTED".into(), Some(2_500))
    );
    assert_eq!(app.books(a.id).await, (3_200, 2_000, 1_000_000));

    // Once the fault is gone the member settles; the others, settled again, write nothing.
    sqlx::query("DROP TRIGGER test_fail ON executions")
        .execute(&app.pool)
        .await
        .unwrap();
    let again = settle_batch(&pool, jobs, settlement_event).await;
    assert!(again[0].as_ref().unwrap().is_none());
    assert!(again[1].as_ref().unwrap().is_some());
    assert!(again[2].as_ref().unwrap().is_none());
    assert_eq!(app.books(a.id).await, (4_100, 0, 1_000_000));
    assert_eq!(
        app.count("SELECT count(*) FROM event_log WHERE event_type = 'usage.commit'")
            .await,
        3,
        "money moved exactly once per member"
    );
    app.assert_books_audit().await;
}

#[tokio::test]
async fn members_of_one_chain_in_one_batch_link_to_each_other() {
    let app = spawn_app().await;
    let a = app.create_agent("twice", "0.010000", json!({})).await;
    let b = app.create_agent("once", "1.00", json!({})).await;
    let (wa, wb) = (owner(&app, a.id).await, owner(&app, b.id).await);
    let jobs = vec![
        committing(held(&app, wa, "a-1", 4_000).await, 3_000),
        committing(held(&app, wb, "b-1", 1_000).await, 500),
        held(&app, wa, "a-2", 5_000).await, // released
        committing(held(&app, wa, "a-3", 1_000).await, 8_000), // past the budget
    ];
    // Above its hold: the provider's overrun, as the audit allows it.
    let mut jobs = jobs;
    jobs[3].payload["overrun"] = json!("provider");
    let pool = hot(&app).await;
    let results = settle_batch(&pool, jobs.clone(), settlement_event).await;
    let remaining: Vec<i64> = results
        .iter()
        .map(|r| r.as_ref().unwrap().expect("settled").remaining_micro_usd)
        .collect();
    // Agent a: budget 10 000, 10 000 held; then 3 000 spent, 5 000 released, 8 000 spent.
    assert_eq!(
        remaining,
        vec![
            10_000 - 3_000 - 6_000,
            1_000_000 - 500,
            10_000 - 3_000 - 1_000,
            -1_000
        ]
    );
    assert_eq!(
        app.count("SELECT count(DISTINCT completed_at) FROM executions")
            .await,
        1,
        "one transaction (now() is its start) settled all four"
    );
    assert_eq!(app.books(a.id).await, (11_000, 0, 10_000));
    assert_eq!(app.books(b.id).await, (500, 0, 1_000_000));

    let settled: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT seq, execution_id, payload FROM event_log WHERE chain_id = $1 \
         AND event_type IN ('usage.commit', 'reservation.released') ORDER BY seq",
    )
    .bind(format!("agent:{}", a.id))
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let keys: Vec<_> = settled.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(keys, ["a-1", "a-2", "a-3"], "in batch order");
    let seqs: Vec<_> = settled.iter().map(|e| e.0 - settled[0].0).collect();
    assert_eq!(seqs, [0, 1, 2], "one after the other on the chain");
    let overrun: Vec<Value> = settled
        .iter()
        .map(|e| serde_json::from_str::<Value>(&e.2).unwrap()["budget_overrun"].clone())
        .collect();
    assert_eq!(overrun, [json!(false), Value::Null, json!(true)]);

    // Settled again together: nothing is written.
    let again = settle_batch(&pool, jobs, settlement_event).await;
    assert!(again.iter().all(|r| r.as_ref().unwrap().is_none()));
    app.assert_books_audit().await;
}

/// Observations and members of the settlement-batch histogram so far (process-wide).
fn batches() -> (u64, f64) {
    let m = aex::metrics::METRICS.as_ref().expect("metrics");
    (
        m.settlement_batch.get_sample_count(),
        m.settlement_batch.get_sample_sum(),
    )
}

#[tokio::test]
async fn concurrent_calls_on_one_agent_and_on_many_settle_in_batches_with_exact_books() {
    let app = Arc::new(spawn_app().await);
    let hot_agent = app.create_agent("hot", "10.00", json!({})).await;
    let mut agents = vec![hot_agent];
    for n in 0..8 {
        agents.push(
            app.create_agent(&format!("many-{n}"), "10.00", json!({}))
                .await,
        );
    }
    app.mock.delay_ms.store(20, Ordering::SeqCst);
    let before = batches();
    // 64 calls on the hot agent and 64 spread over eight others, all at once.
    let calls = (0..128).map(|i| {
        let app = Arc::clone(&app);
        let token = if i % 2 == 0 {
            agents[0].token.clone()
        } else {
            agents[1 + i % 8].token.clone()
        };
        async move {
            let resp = app.chat(&token, hello()).await;
            assert_eq!(resp.status(), StatusCode::OK);
            resp.headers()["x-aex-cost-micro-usd"]
                .to_str()
                .unwrap()
                .parse::<i64>()
                .unwrap()
        }
    });
    let billed: i64 = join_all(calls).await.into_iter().sum();
    let after = batches();

    let mut spent = 0;
    for agent in &agents {
        let (s, reserved, _) = app.books(agent.id).await;
        assert_eq!(reserved, 0, "nothing is held when idle");
        spent += s;
    }
    assert_eq!(spent, billed, "spent is the sum of the costs reported");
    assert_eq!(
        app.count("SELECT count(*) FROM reservations WHERE state = 'COMMITTED'")
            .await,
        128
    );
    let (count, members) = (after.0 - before.0, after.1 - before.1);
    println!("settlement batches: {count}, members {members}");
    assert!(
        members > count as f64,
        "some batch carried more than one settlement: {count} batches, {members} members"
    );
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_tenant_threshold_crossed_inside_a_batch_of_two_of_its_agents_raises_its_alert() {
    let app = spawn_app().await;
    let a = app.create_agent("first", "1.00", json!({})).await;
    let b = app.create_agent("second", "1.00", json!({})).await;
    let (wa, wb) = (owner(&app, a.id).await, owner(&app, b.id).await);
    assert_eq!(wa.0, wb.0, "one tenant");
    sqlx::query("UPDATE tenants SET budget_micro_usd = 10000 WHERE id = $1")
        .bind(wa.0 .0)
        .execute(&app.pool)
        .await
        .unwrap();
    let pool = hot(&app).await;
    let before = vec![committing(held(&app, wa, "before", 4_000).await, 4_000)];
    assert!(settle_batch(&pool, before, settlement_event).await[0].is_ok());
    // 40% spent; the batch adds 20% and 20%: one by one, the first crosses 50% and the second
    // 80%. Both agents in one UPDATE, each row's trigger would see 60% before its own 20%.
    let jobs = vec![
        committing(held(&app, wa, "a", 2_000).await, 2_000),
        committing(held(&app, wb, "b", 2_000).await, 2_000),
    ];
    let results = settle_batch(&pool, jobs, settlement_event).await;
    assert!(results.iter().all(|r| r.as_ref().unwrap().is_some()));
    let thresholds: Vec<i32> = sqlx::query_scalar(
        "SELECT threshold FROM alerts WHERE kind = 'tenant_budget' ORDER BY threshold",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(thresholds, [50, 80]);
    app.assert_books_audit().await;
}
