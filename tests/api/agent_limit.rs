//! The limit on agents per tenant (`gateway.max_agents_per_tenant`): a tenant's `spent` is a sum
//! over all its agents, so a tenant admin creating agents without end would slow every call of
//! the tenant and load the shared database. Past the limit a creation is a 409
//! `agent_limit_reached` that writes nothing, also when many race for the last slots.

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{spawn_app_with, TestApp};
use crate::processes::Fleet;

/// What a tenant has in the books: agents, tokens and ledger events.
#[derive(Debug, PartialEq, Eq)]
struct Footprint {
    agents: i64,
    tokens: i64,
    events: i64,
}

async fn footprint(pool: &sqlx::PgPool, tenant: Uuid) -> Footprint {
    let (agents, tokens, events): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM agents WHERE tenant_id = $1), \
                (SELECT count(*) FROM api_tokens WHERE tenant_id = $1), \
                (SELECT count(*) FROM event_log WHERE tenant_id = $1)",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await
    .unwrap();
    Footprint {
        agents,
        tokens,
        events,
    }
}

async fn create(app: &TestApp, token: &str, name: &str) -> (StatusCode, Value) {
    app.admin_post(
        "/admin/agents",
        token,
        json!({"name": name, "budget_usd": "1.00"}),
    )
    .await
}

fn assert_limit_refusal(status: StatusCode, body: &Value, limit: u32) {
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "agent_limit_reached", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("limit of {limit} agents")),
        "{body}"
    );
}

#[tokio::test]
async fn a_tenant_admin_past_the_agent_limit_is_refused_and_nothing_is_written() {
    let app = spawn_app_with(|s| s.gateway.max_agents_per_tenant = 3).await;
    let (tenant, admin) = app.tenant_with_admin("capped", json!({})).await;
    let tenant: Uuid = tenant.parse().unwrap();
    for name in ["a1", "a2", "a3"] {
        let (status, body) = create(&app, &admin, name).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // A decommissioned agent still counts: its spend stays in the tenant's sum.
    app.op(
        Method::POST,
        &format!("/admin/agents/a3/decommission?tenant_id={tenant}"),
        None,
        StatusCode::OK,
    )
    .await;
    let before = footprint(&app.pool, tenant).await;
    assert_eq!(before.agents, 3);

    for name in ["a4", "a5"] {
        let (status, body) = create(&app, &admin, name).await;
        assert_limit_refusal(status, &body, 3);
    }
    // The operator is held to the limit as well.
    let (status, body) = app
        .admin_post(
            &format!("/admin/agents?tenant_id={tenant}"),
            &app.operator_token,
            json!({"name": "by-operator", "budget_usd": "1.00"}),
        )
        .await;
    assert_limit_refusal(status, &body, 3);
    assert_eq!(
        footprint(&app.pool, tenant).await,
        before,
        "nothing written"
    );

    // The limit is per tenant: another tenant creates as before.
    let (_, other) = app.tenant_with_admin("roomy", json!({})).await;
    let (status, body) = create(&app, &other, "a4").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn creations_racing_for_the_last_slots_end_with_exactly_the_limit() {
    let app = spawn_app_with(|s| s.gateway.max_agents_per_tenant = 8).await;
    let (tenant, admin) = app.tenant_with_admin("racing", json!({})).await;
    let tenant: Uuid = tenant.parse().unwrap();
    for i in 0..3 {
        let (status, body) = create(&app, &admin, &format!("early-{i}")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    // Twenty creations at once for the five slots left.
    let results = join_all((0..20).map(|i| {
        let (app, admin) = (&app, &admin);
        async move { create(app, admin, &format!("racer-{i}")).await }
    }))
    .await;
    let created = results
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .count();
    for (status, body) in results.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
        assert_limit_refusal(*status, body, 8);
    }
    assert_eq!(created, 5, "exactly the free slots are taken");

    // Every agent has its one token and its `agent.created` event; the losers left nothing.
    let books = footprint(&app.pool, tenant).await;
    assert_eq!(books.agents, 8);
    assert_eq!(
        books.tokens,
        1 + 8,
        "the tenant's admin token and one per agent"
    );
    let created_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_log WHERE tenant_id = $1 AND event_type = 'agent.created'",
    )
    .bind(tenant)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(created_events, 8);
}

#[tokio::test]
async fn the_agent_limit_comes_from_the_environment_of_aex_serve() {
    let fleet = Fleet::new(&[("AEX_GATEWAY__MAX_AGENTS_PER_TENANT", "2")]).await;
    let server = fleet.spawn("capped").await;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    let mut last = Value::Null;
    for name in ["e1", "e2", "e3"] {
        let resp = http
            .post(format!("{}/admin/agents", server.base))
            .bearer_auth(&fleet.operator_token)
            .json(&json!({"name": name, "budget_usd": "1.00"}))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status());
        last = resp.json().await.unwrap();
    }
    assert_eq!(
        statuses,
        [
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::CONFLICT
        ]
    );
    assert_limit_refusal(StatusCode::CONFLICT, &last, 2);
    let agents: i64 = sqlx::query_scalar("SELECT count(*) FROM agents")
        .fetch_one(&fleet.pool)
        .await
        .unwrap();
    assert_eq!(agents, 2);
}
