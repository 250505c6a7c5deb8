//! Admission batches (issue 17, item 1): the calls a replica admits together share one
//! transaction. A failing member never loses its neighbours' holds, two members of one agent
//! never overspend together and chain their events one after the other, one batch never passes
//! an agent's rate limits, a hold whose caller went away is released, and under load batches form
//! without the budget or the limits ever being passed — proven on the books, the rate windows
//! and by the full audit.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use aex::domain::{AgentId, CallRoute, TenantId};
use aex::gateway::admission::batch::Batched;
use aex::gateway::admission::{self, Admission};
use aex::gateway::pricing::Pricing;
use aex::gateway::ticket::{Target, Ticket};
use aex::gateway::Gateway;
use aex::money::MicroUsd;
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::helpers::{hello, poll, spawn_app, Agent, TestApp, PATIENCE};

/// What one tool call of the tests holds.
const COST: i64 = 1_000;

/// An agent with no limits but its budget: its calls go in the batch.
async fn plain_agent(app: &TestApp, name: &str, budget_usd: &str) -> Agent {
    app.create_agent(name, budget_usd, json!({"rpm": null}))
        .await
}

fn gateway(app: &TestApp) -> Arc<Gateway> {
    Arc::clone(&app.server.as_ref().expect("server").state.gateway)
}

async fn tenant_of(app: &TestApp, agent: Uuid) -> Uuid {
    sqlx::query_scalar("SELECT tenant_id FROM agents WHERE id = $1")
        .bind(agent)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// An unkeyed tool call of `agent` costing [`COST`].
fn tool_call<'a>(
    tenant: Uuid,
    agent: Uuid,
    key: &'a str,
    body: &'a Map<String, Value>,
) -> Ticket<'a> {
    Ticket {
        tenant_id: TenantId(tenant),
        agent_id: AgentId(agent),
        route: CallRoute::ToolsExecute,
        key,
        keyed: false,
        fingerprint: "fingerprint",
        pricing: Pricing::Fixed {
            tool: "echo",
            cost: MicroUsd(COST),
        },
        body,
        prompt_tokens: 0,
        choices: 1,
        requested_cap: None,
        default_cap: None,
        stream: false,
        passthrough: false,
        target: Target {
            provider: "tool:test",
            details: json!({"tool": "echo"}),
        },
    }
}

/// Unkeyed tool calls of `agent`, one per key.
fn tool_calls<'a>(
    tenant: Uuid,
    agent: Uuid,
    keys: &'a [String],
    body: &'a Map<String, Value>,
) -> Vec<Ticket<'a>> {
    keys.iter()
        .map(|k| tool_call(tenant, agent, k, body))
        .collect()
}

/// What a batch did with each of its members (the holds now the test's).
fn taken(answers: Vec<admission::batch::Answer>) -> Vec<Batched> {
    answers.into_iter().map(|a| a.take()).collect()
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|_| Uuid::now_v7().to_string()).collect()
}

/// (reserved, requests_total) of an agent.
async fn held(app: &TestApp, agent: Uuid) -> (i64, i64) {
    sqlx::query_as("SELECT reserved_micro_usd, requests_total FROM agents WHERE id = $1")
        .bind(agent)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_failing_member_rolls_its_batch_back_and_its_neighbours_are_still_admitted() {
    let app = spawn_app().await;
    let a = plain_agent(&app, "a", "1.00").await;
    let f = plain_agent(&app, "f", "1.00").await;
    let b = plain_agent(&app, "b", "1.00").await;
    let tenant = tenant_of(&app, a.id).await;
    // This test's own database refuses any reservation of agent f.
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION test_fail_f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           RAISE EXCEPTION 'member f fails'; END; $$; \
         CREATE TRIGGER test_fail_f BEFORE INSERT ON reservations FOR EACH ROW \
           WHEN (NEW.agent_id = '{}') EXECUTE FUNCTION test_fail_f();",
        f.id
    ))
    .execute(&app.pool)
    .await
    .unwrap();
    let gw = gateway(&app);
    let body = Map::new();
    let k = keys(6);
    let agents = [a.id, f.id, b.id];
    let tickets: Vec<_> = (0..6)
        .map(|i| tool_call(tenant, agents[i % 3], &k[i], &body))
        .collect();

    // The batch alone: it fails as a whole, writes nothing, and says so to every member.
    let answers = admission::write_one_batch(&gw, &tickets[0..3])
        .await
        .unwrap();
    for answer in answers {
        assert!(matches!(answer.take(), Batched::Alone));
    }
    for agent in [a.id, f.id, b.id] {
        assert_eq!(
            held(&app, agent).await,
            (0, 0),
            "the failed batch wrote nothing"
        );
    }

    // The same batch, then every member its own way: f fails alone, a and b are held.
    let admitted = admission::admit_as_one_batch(&gw, &tickets[3..6])
        .await
        .unwrap();
    assert!(matches!(admitted[0], Ok(Admission::Reserved(_))));
    assert!(admitted[1].is_err(), "the failing member fails");
    assert!(matches!(admitted[2], Ok(Admission::Reserved(_))));
    assert_eq!(held(&app, a.id).await, (COST, 1));
    assert_eq!(held(&app, b.id).await, (COST, 1));
    assert_eq!(held(&app, f.id).await, (0, 0));
    assert_eq!(app.execution_states(a.id).await, vec!["DISPATCHED"]);
    assert_eq!(app.execution_states(b.id).await, vec!["DISPATCHED"]);
    assert!(app.execution_states(f.id).await.is_empty());
    app.assert_books_audit().await;
}

#[tokio::test]
async fn two_members_of_one_agent_chain_their_events_and_never_overspend_together() {
    let app = spawn_app().await;
    // Room for two holds and a half.
    let agent = plain_agent(&app, "two", "0.002500").await;
    let tenant = tenant_of(&app, agent.id).await;
    let gw = gateway(&app);
    let body = Map::new();
    let k = keys(3);
    let tickets = tool_calls(tenant, agent.id, &k, &body);

    let answers = admission::write_one_batch(&gw, &tickets[0..2])
        .await
        .unwrap();
    let batched = taken(answers);
    assert!(
        batched.iter().all(|b| matches!(b, Batched::Reserved(_))),
        "{batched:?}"
    );
    assert_eq!(
        held(&app, agent.id).await,
        (2 * COST, 2),
        "both holds are on the books"
    );
    // Both holds' four events, one after the other on the agent's chain.
    let chain: Vec<(i64, String, String, String)> = sqlx::query_as(
        "SELECT seq, prev_hash, event_hash, event_type FROM event_log \
         WHERE chain_id = $1 ORDER BY seq",
    )
    .bind(format!("agent:{}", agent.id))
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let held_events: Vec<_> = chain
        .iter()
        .filter(|e| e.3 == "reservation.reserved" || e.3 == "execution.dispatched")
        .collect();
    let types: Vec<_> = held_events.iter().map(|e| e.3.as_str()).collect();
    assert_eq!(
        types,
        [
            "reservation.reserved",
            "execution.dispatched",
            "reservation.reserved",
            "execution.dispatched"
        ]
    );
    for pair in chain.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1);
        assert_eq!(pair[1].1, pair[0].2, "each event links to the one before");
    }

    // A third hold does not fit beside them: in one batch with... nothing else, it is refused,
    // by the general way, and recorded.
    drop(batched);
    let admitted = admission::admit_as_one_batch(&gw, &tickets[2..3])
        .await
        .unwrap();
    assert!(matches!(admitted[0], Ok(Admission::Refused(_))));
    app.assert_books_audit().await;
}

#[tokio::test]
async fn one_batch_never_holds_more_than_the_budget() {
    let app = spawn_app().await;
    // Room for two holds and a half, five members.
    let agent = plain_agent(&app, "five", "0.002500").await;
    let tenant = tenant_of(&app, agent.id).await;
    let gw = gateway(&app);
    let body = Map::new();
    let k = keys(5);
    let tickets = tool_calls(tenant, agent.id, &k, &body);
    let admitted = admission::admit_as_one_batch(&gw, &tickets).await.unwrap();
    let reserved = admitted
        .iter()
        .filter(|a| matches!(a, Ok(Admission::Reserved(_))))
        .count();
    let refused = admitted
        .iter()
        .filter(|a| matches!(a, Ok(Admission::Refused(_))))
        .count();
    assert_eq!((reserved, refused), (2, 3));
    let (spent, reserved_money, budget) = app.books(agent.id).await;
    assert_eq!(reserved_money, 2 * COST);
    assert!(spent + reserved_money <= budget);
    let states = app.execution_states(agent.id).await;
    assert_eq!(
        states.iter().filter(|s| *s == "DENIED").count(),
        3,
        "refusals are recorded"
    );
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_hold_whose_caller_went_away_is_released() {
    let app = spawn_app().await;
    let agent = plain_agent(&app, "gone", "1.00").await;
    let tenant = tenant_of(&app, agent.id).await;
    let gw = gateway(&app);
    let body = Map::new();
    let k = keys(2);
    let tickets = tool_calls(tenant, agent.id, &k, &body);
    let answers = admission::write_one_batch(&gw, &tickets).await.unwrap();
    assert_eq!(held(&app, agent.id).await, (2 * COST, 2), "committed");
    // Nobody takes the answers (their callers were cancelled): the holds are given back.
    drop(answers);
    poll("the unclaimed holds to be released", PATIENCE, || async {
        (held(&app, agent.id).await.0 == 0).then_some(())
    })
    .await;
    app.await_execution_states(agent.id, &["RELEASED", "RELEASED"])
        .await;
    app.assert_books_audit().await;
}

/// The `aex_admission_batch_size` histogram's (sum, count), from the server's own metrics.
async fn batch_sizes(app: &TestApp) -> (f64, f64) {
    let text = app.get("/metrics", None).await.text().await.unwrap();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("aex_admission_batch_size_sum "),
        value("aex_admission_batch_size_count "),
    )
}

/// Many calls of `agents` at once through the real gateway; returns each agent's (admitted,
/// refused) after checking its books.
async fn storm(app: &Arc<TestApp>, agents: &[Agent], calls: usize) -> Vec<(usize, usize)> {
    let results = join_all(agents.iter().flat_map(|agent| {
        (0..calls).map(move |_| {
            let app = Arc::clone(app);
            let token = agent.token.clone();
            async move { app.chat(&token, hello()).await.status() }
        })
    }))
    .await;
    let mut per_agent = Vec::new();
    for (i, agent) in agents.iter().enumerate() {
        let statuses = &results[i * calls..(i + 1) * calls];
        let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        let refused = statuses
            .iter()
            .filter(|s| **s == StatusCode::PAYMENT_REQUIRED)
            .count();
        assert_eq!(
            ok + refused,
            calls,
            "served or refused for budget: {statuses:?}"
        );
        let (spent, reserved, budget) = app.books(agent.id).await;
        assert!(spent <= budget, "overspent: {spent} > {budget}");
        assert_eq!(reserved, 0, "nothing is held when idle");
        let states = app.execution_states(agent.id).await;
        assert_eq!(states.iter().filter(|s| *s == "COMMITTED").count(), ok);
        assert_eq!(states.iter().filter(|s| *s == "DENIED").count(), refused);
        per_agent.push((ok, refused));
    }
    per_agent
}

#[tokio::test]
async fn many_calls_of_one_agent_batch_and_never_overspend() {
    let app = Arc::new(spawn_app().await);
    app.mock.delay_ms.store(20, Ordering::SeqCst);
    // About 600 micro-USD held per call: the budget admits some at once, not all.
    let agent = plain_agent(&app, "hot", "0.030000").await;
    let before = batch_sizes(&app).await;
    let per_agent = storm(&app, std::slice::from_ref(&agent), 150).await;
    let (ok, refused) = per_agent[0];
    assert!(
        ok > 0 && refused > 0,
        "the budget binds: {ok} served, {refused} refused"
    );
    let after = batch_sizes(&app).await;
    assert!(after.1 > before.1, "the calls were admitted in batches");
    app.assert_books_audit().await;
}

#[tokio::test]
async fn many_agents_at_once_batch_together_and_never_overspend() {
    let app = Arc::new(spawn_app().await);
    app.mock.delay_ms.store(20, Ordering::SeqCst);
    let mut agents = Vec::new();
    for n in 0..8 {
        agents.push(plain_agent(&app, &format!("agent-{n}"), "0.006000").await);
    }
    let before = batch_sizes(&app).await;
    storm(&app, &agents, 20).await;
    let (sum, count) = batch_sizes(&app).await;
    assert!(count > before.1, "the calls were admitted in batches");
    assert!(
        sum - before.0 > count - before.1,
        "some batch carried more than one call"
    );
    app.assert_books_audit().await;
}

/// What the agent's rate window holds: (requests, tokens) of its buckets.
async fn window(app: &TestApp, agent: Uuid) -> (i64, i64) {
    sqlx::query_as(
        "SELECT COALESCE(sum(requests), 0)::bigint, COALESCE(sum(tokens), 0)::bigint \
         FROM rate_windows WHERE subject = $1",
    )
    .bind(format!("agent:{agent}"))
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn one_batch_never_admits_more_than_the_agents_rpm_and_counts_what_it_admits() {
    let app = spawn_app().await;
    // Money for all five; requests for three.
    let agent = app.create_agent("limited", "1.00", json!({"rpm": 3})).await;
    let tenant = tenant_of(&app, agent.id).await;
    let gw = gateway(&app);
    let body = Map::new();
    let k = keys(5);
    let tickets = tool_calls(tenant, agent.id, &k, &body);

    // The batch itself: the first three in arrival order are held, the other two are left to
    // the general way — and the three are counted in the window in the same transaction.
    let answers = admission::write_one_batch(&gw, &tickets[0..5])
        .await
        .unwrap();
    let batched = taken(answers);
    let held_members = batched
        .iter()
        .take_while(|b| matches!(b, Batched::Reserved(_)))
        .count();
    assert_eq!(held_members, 3, "{batched:?}");
    assert!(batched[3..].iter().all(|b| matches!(b, Batched::General)));
    assert_eq!(held(&app, agent.id).await, (3 * COST, 3));
    assert_eq!(
        window(&app, agent.id).await,
        (3, 0),
        "counted with the holds"
    );
    let counted: Vec<i64> =
        sqlx::query_scalar("SELECT rate_tokens FROM reservations WHERE agent_id = $1")
            .bind(agent.id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(counted, vec![0, 0, 0], "a tool call charges no tokens");
    drop(batched);

    // Another batch of the same agent sees those three: nothing more fits, and the general way
    // refuses and records both with a 429's reason, counting nothing.
    let admitted = admission::admit_as_one_batch(&gw, &tickets[3..5])
        .await
        .unwrap();
    for a in &admitted {
        assert!(
            matches!(a, Ok(Admission::Refused(r)) if r.status == 429),
            "refused for the rpm"
        );
    }
    assert_eq!(window(&app, agent.id).await, (3, 0));
    assert_eq!(held(&app, agent.id).await, (3 * COST, 3));
    app.assert_books_audit().await;
}

#[tokio::test]
async fn many_calls_of_rate_limited_agents_batch_and_never_pass_their_limits() {
    let app = Arc::new(spawn_app().await);
    app.mock.delay_ms.store(20, Ordering::SeqCst);
    // Plenty of money; 12 requests a minute, and tokens for fewer calls than that on one agent.
    let rpm = app.create_agent("rpm", "1000.00", json!({"rpm": 12})).await;
    let tpm = app
        .create_agent("tpm", "1000.00", json!({"rpm": 1000, "tpm": 2000}))
        .await;
    let before = batch_sizes(&app).await;
    let calls = [&rpm, &tpm].into_iter().flat_map(|agent| {
        let (id, token) = (agent.id, agent.token.clone());
        let app = Arc::clone(&app);
        (0..40).map(move |_| {
            let (app, token) = (Arc::clone(&app), token.clone());
            async move { (id, app.chat(&token, hello()).await.status()) }
        })
    });
    let statuses = join_all(calls).await;
    let (sum, count) = batch_sizes(&app).await;
    assert!(
        sum - before.0 > count - before.1,
        "some batch carried more than one call"
    );
    for agent in [&rpm, &tpm] {
        let mine: Vec<_> = statuses
            .iter()
            .filter(|(a, _)| *a == agent.id)
            .map(|(_, s)| *s)
            .collect();
        let ok = mine.iter().filter(|s| **s == StatusCode::OK).count();
        let limited = mine
            .iter()
            .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
            .count();
        assert_eq!(ok + limited, mine.len(), "served or limited: {mine:?}");
        assert!(ok > 0 && limited > 0, "the limit binds: {ok} served");
        let states = app.execution_states(agent.id).await;
        assert_eq!(states.iter().filter(|s| *s == "COMMITTED").count(), ok);
        let (requests, tokens) = window(&app, agent.id).await;
        assert_eq!(requests, ok as i64, "every admission counted once");
        if agent.id == rpm.id {
            assert_eq!(ok, 12, "exactly the rpm is admitted in the minute");
        } else {
            // Settlement corrected each estimate to the tokens used; what was admitted fit the
            // window as estimated, so what it holds now is within the limit.
            assert!(tokens <= 2000, "the tpm binds: {tokens}");
        }
    }
    app.assert_books_audit().await;
}
