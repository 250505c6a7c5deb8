//! A COMMIT that Postgres carried out but whose answer never reached AEX (the connection died in
//! between), made for real by a proxy between the server and Postgres (`commit_proxy`). An
//! admission's holds committed that way are dispatched as decided — never leaked on the agent,
//! never held a second time — on every way a call is admitted: a batch of several, a batch of
//! one, and the general way. A settlement committed that way is not written twice. Proven on the
//! books and by the full audit.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aex::config::Secret;
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::commit_proxy::CommitProxy;
use crate::helpers::{admin_database_url, hello, spawn_app_on, Agent, TestApp, TestDb};

/// A server whose every database connection goes through a [`CommitProxy`] to a fresh database
/// (the test's own pool, `app.pool`, reads the books directly).
async fn app_behind_proxy() -> (TestApp, CommitProxy) {
    let db = TestDb::create().await;
    let postgres = url::Url::parse(&admin_database_url()).unwrap();
    let upstream: SocketAddr = format!(
        "{}:{}",
        postgres.host_str().unwrap(),
        postgres.port().unwrap_or(5432)
    )
    .parse()
    .unwrap();
    let proxy = CommitProxy::start(upstream).await;
    let mut through = url::Url::parse(&db.url).unwrap();
    through.set_host(Some("127.0.0.1")).unwrap();
    through.set_port(Some(proxy.addr.port())).unwrap();
    through.query_pairs_mut().append_pair("sslmode", "disable");
    let through = through.to_string();
    let app = spawn_app_on(db, "", |s| s.database_url = Some(Secret::new(through))).await;
    (app, proxy)
}

/// Bursts of calls of `agents` (6 each) until a transaction that ran `statement` — a batch's,
/// formed by calls arriving while both writers are busy — has lost its COMMIT's answer; how many
/// bursts that took.
async fn batch_loses_its_answer(
    app: &TestApp,
    proxy: &CommitProxy,
    statement: &str,
    agents: &[&Agent],
) -> usize {
    proxy.arm(statement, 1);
    let mut bursts = 0;
    while proxy.armed() > 0 {
        assert!(
            bursts < 10,
            "no {statement} batch formed in {bursts} bursts"
        );
        calls(app, agents, 6).await;
        bursts += 1;
    }
    bursts
}

/// Agents without limits but their budgets, one per name.
async fn plain_agents(app: &TestApp, names: &[&str]) -> Vec<Agent> {
    let mut agents = Vec::new();
    for name in names {
        agents.push(plain_agent(app, name).await);
    }
    agents
}

/// An agent with no limits but its budget: its calls are admitted in batches.
async fn plain_agent(app: &TestApp, name: &str) -> Agent {
    app.create_agent(name, "1.00", json!({"rpm": null})).await
}

/// Calls of `agents` (`calls` each) at once; every one must be answered 200 and told what it
/// was charged (`X-AEX-Cost-Micro-USD`).
async fn calls(app: &TestApp, agents: &[&Agent], calls: usize) {
    let answers = join_all(agents.iter().flat_map(|a| {
        (0..calls).map(move |_| async move {
            let answer = app.chat(&a.token, hello()).await;
            let told = answer.headers().contains_key("x-aex-cost-micro-usd");
            (
                answer.status(),
                told,
                answer.text().await.unwrap_or_default(),
            )
        })
    }))
    .await;
    let wrong: Vec<_> = answers
        .iter()
        .filter(|a| a.0 != StatusCode::OK || !a.1)
        .collect();
    assert!(
        wrong.is_empty(),
        "every call answered once, 200, with its cost: {wrong:?}"
    );
}

/// Executions not settled yet, once they had a few seconds to be.
async fn open_executions(app: &TestApp) -> Vec<(Uuid, String)> {
    let started = Instant::now();
    loop {
        let open: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT id, state FROM executions \
             WHERE state IN ('RESERVING', 'RESERVED', 'DISPATCHED')",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap();
        if open.is_empty() || started.elapsed() > Duration::from_secs(10) {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `agent`'s books after `made` calls were answered 200: nothing held, one execution per call,
/// each COMMITTED, and spent the sum of what they were charged.
async fn assert_books(app: &TestApp, agent: &Agent, made: usize) {
    let (spent, reserved, _) = app.books(agent.id).await;
    assert_eq!(reserved, 0, "nothing is held once every call is answered");
    let states = app.execution_states(agent.id).await;
    assert_eq!(
        states,
        vec!["COMMITTED"; made],
        "one execution per call, each settled once"
    );
    let charged = app
        .count(&format!(
            "SELECT COALESCE(sum(actual_micro_usd), 0)::bigint FROM executions \
             WHERE agent_id = '{}'",
            agent.id
        ))
        .await;
    assert_eq!(spent, charged, "spent is what the settlements charged");
}

#[tokio::test]
async fn holds_committed_without_an_answer_are_dispatched_once_on_every_way() {
    let (app, proxy) = app_behind_proxy().await;
    let plain = plain_agents(&app, &["a", "b", "c", "d"]).await;
    let plain: Vec<&Agent> = plain.iter().collect();

    // A batch of several: the next batch's COMMIT loses its answer.
    let bursts = batch_loses_its_answer(&app, &proxy, "aex_hold_batch", &plain).await;
    // A batch of one (a call alone), then the general way (a keyed call): a hold written alone
    // loses its COMMIT's answer, on the money pool, then on sqlx's.
    let keyed = plain_agent(&app, "keyed").await;
    proxy.arm("aex_hold_hashed", 1);
    calls(&app, &[plain[0]], 1).await;
    assert_eq!(proxy.armed(), 0, "the call's COMMIT lost its answer");
    proxy.arm("aex_hold_hashed", 1);
    let key = [("Idempotency-Key", "lost-ack-general")];
    let answer = app
        .post("/v1/chat/completions", &keyed.token, hello(), &key)
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(proxy.armed(), 0, "the keyed call's COMMIT lost its answer");

    assert_eq!(proxy.dropped(), 3, "three connections died after COMMIT");
    assert_eq!(proxy.committed(), 3, "and Postgres committed all three");
    let open = open_executions(&app).await;
    assert!(open.is_empty(), "executions left held: {open:?}");
    for (i, agent) in plain.iter().enumerate() {
        let single = usize::from(i == 0);
        assert_books(&app, agent, 6 * bursts + single).await;
    }
    assert_books(&app, &keyed, 1).await;
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_settlement_committed_without_an_answer_is_written_once() {
    let (app, proxy) = app_behind_proxy().await;
    let agent = plain_agent(&app, "settled").await;
    proxy.arm("aex_settle", 1);
    let answer = app.chat(&agent.token, hello()).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!((proxy.dropped(), proxy.committed()), (1, 1));
    // The settlement is retried on a new connection, finds its reservation settled, and reads
    // back what it charged: the client is told, as if the answer had arrived.
    let told: i64 = answer
        .headers()
        .get("x-aex-cost-micro-usd")
        .expect("the cost header of a settlement whose answer was lost")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(open_executions(&app).await.is_empty());
    assert_books(&app, &agent, 1).await;
    let (spent, _, _) = app.books(agent.id).await;
    assert_eq!(told, spent, "told what was charged");

    // A batch of several settlements loses its COMMIT's answer: each member retries its own,
    // finds it settled and is told what it charged.
    let plain = plain_agents(&app, &["p", "q", "r"]).await;
    let plain: Vec<&Agent> = plain.iter().collect();
    let bursts = batch_loses_its_answer(&app, &proxy, "aex_settle_batch", &plain).await;
    assert_eq!((proxy.dropped(), proxy.committed()), (2, 2));
    assert!(open_executions(&app).await.is_empty());
    for agent in &plain {
        assert_books(&app, agent, 6 * bursts).await;
    }
    let commits = app
        .count("SELECT count(*) FROM event_log WHERE event_type = 'usage.commit'")
        .await;
    let calls = 1 + 3 * 6 * bursts;
    assert_eq!(commits, calls as i64, "one settlement event per call");
    app.assert_books_audit().await;
}
