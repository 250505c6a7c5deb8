//! Tenancy: tenants and their admins. An admin of one tenant sees nothing of another (404, never
//! 403) and cannot spend from it; a tenant's budget and default policy bind all its agents.

use reqwest::Method;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{hello, spawn_app, spawn_app_with, TestApp};

/// Everything an admin of another tenant must not reach, as (method, path, body).
fn foreign_requests(
    b_tenant: &str,
    b_agent: &str,
    b_jti: &str,
    b_exec: &str,
) -> Vec<(Method, String, Option<Value>)> {
    let agent = format!("/admin/agents/{b_agent}");
    vec![
        (Method::GET, format!("/admin/tenants/{b_tenant}"), None),
        (Method::GET, "/admin/tenants/tenant-b".into(), None),
        (Method::GET, agent.clone(), None),
        (Method::GET, format!("{agent}?tenant_id={b_tenant}"), None),
        (Method::GET, "/admin/agents/b-agent".into(), None),
        (Method::PATCH, agent.clone(), Some(json!({"rpm": 1}))),
        (
            Method::POST,
            format!("{agent}/topup"),
            Some(json!({"amount_usd": "100"})),
        ),
        (
            Method::PUT,
            format!("{agent}/budget"),
            Some(json!({"budget_usd": "100"})),
        ),
        (
            Method::POST,
            format!("{agent}/state"),
            Some(json!({"state": "PAUSED"})),
        ),
        (Method::POST, format!("{agent}/decommission"), None),
        (Method::POST, format!("{agent}/rotate_token"), None),
        (Method::POST, format!("{agent}/revoke_tokens"), None),
        (
            Method::POST,
            format!("/admin/agents?tenant_id={b_tenant}"),
            Some(json!({"name": "mole", "budget_usd": "1"})),
        ),
        (
            Method::POST,
            "/admin/tokens".into(),
            Some(json!({"scope": "execution", "agent": b_agent})),
        ),
        (
            Method::POST,
            format!("/admin/tokens?tenant_id={b_tenant}"),
            Some(json!({"scope": "admin"})),
        ),
        (Method::POST, format!("/admin/tokens/{b_jti}/revoke"), None),
        (Method::POST, format!("/admin/tokens/{b_jti}/rotate"), None),
        (Method::GET, format!("/admin/tokens?agent={b_agent}"), None),
        (Method::GET, format!("/admin/executions/{b_exec}"), None),
        (
            Method::GET,
            format!("/admin/executions?agent={b_agent}"),
            None,
        ),
        (
            Method::GET,
            format!("/admin/ledger/events?agent={b_agent}"),
            None,
        ),
        (
            Method::GET,
            format!("/admin/ledger/events?tenant_id={b_tenant}"),
            None,
        ),
        (
            Method::GET,
            format!("/admin/replay?execution_id={b_exec}"),
            None,
        ),
        (Method::POST, "/admin/plugins/b-tool/disable".into(), None),
        (
            Method::GET,
            format!("/admin/plugins?tenant_id={b_tenant}"),
            None,
        ),
        (
            Method::GET,
            format!("/admin/usage?tenant_id={b_tenant}"),
            None,
        ),
        (
            Method::GET,
            format!("/admin/activity?tenant_id={b_tenant}"),
            None,
        ),
    ]
}

async fn b_books(app: &TestApp, agent: &str) -> (i64, String, i64) {
    let (budget, state): (i64, String) =
        sqlx::query_as("SELECT budget_micro_usd, state FROM agents WHERE id = $1::uuid")
            .bind(agent)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let revoked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_tokens WHERE agent_id = $1::uuid AND revoked_at IS NOT NULL",
    )
    .bind(agent)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    (budget, state, revoked)
}

#[tokio::test]
async fn an_admin_of_one_tenant_gets_404_for_everything_of_another_and_cannot_spend_from_it() {
    let app = spawn_app_with(|s| s.tools.allowed_http_hosts = vec!["127.0.0.1:9".into()]).await;
    let (_a, a_admin) = app.tenant_with_admin("tenant-a", json!({})).await;
    let (b, b_admin) = app
        .tenant_with_admin("tenant-b", json!({"budget_usd": "10"}))
        .await;

    let (status, created) = app
        .admin_post(
            "/admin/agents",
            &b_admin,
            json!({"name": "b-agent", "budget_usd": "2.00"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let b_agent = created["agent"]["id"].as_str().unwrap().to_owned();
    let b_jti = created["token_id"].as_str().unwrap().to_owned();
    let b_token = created["token"].as_str().unwrap().to_owned();
    let resp = app
        .post(
            "/v1/chat/completions",
            &b_token,
            hello(),
            &[("Idempotency-Key", "b-exec")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    // An operator installs B's plugin; B's admin runs it from there.
    let plugin = json!({"name": "b-tool", "version": "1", "kind": "http", "cost_usd": "0.001",
                        "manifest": {"url": "http://127.0.0.1:9/tool", "secret_env": "B_TOOL_SECRET"}});
    let (status, _) = app
        .admin(
            Method::POST,
            &format!("/admin/plugins?tenant_id={b}"),
            &app.operator_token,
            Some(plugin),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, listed) = app
        .admin(Method::GET, "/admin/plugins", &b_admin, None)
        .await;
    assert_eq!(
        (status, listed[0]["name"].as_str()),
        (StatusCode::OK, Some("b-tool"))
    );
    let before = b_books(&app, &b_agent).await;
    let events_before: i64 = app.count("SELECT count(*) FROM event_log").await;

    for (method, path, body) in foreign_requests(&b, &b_agent, &b_jti, "b-exec") {
        let (status, value) = app.admin(method.clone(), &path, &a_admin, body).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{method} {path} as tenant A's admin: {value}"
        );
        assert_eq!(value["error"]["code"], "not_found", "{method} {path}");
    }
    // Listings of A's own tenant show nothing of B's.
    for path in [
        "/admin/tenants",
        "/admin/agents",
        "/admin/tokens",
        "/admin/executions",
        "/admin/ledger/events",
        "/admin/plugins",
        "/admin/activity",
    ] {
        let (status, list) = app.admin(Method::GET, path, &a_admin, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let text = list.to_string();
        assert!(
            !text.contains(&b) && !text.contains(&b_agent),
            "{path} leaks tenant B: {text}"
        );
    }
    let (_, usage) = app.admin(Method::GET, "/admin/usage", &a_admin, None).await;
    assert_eq!(usage["total"]["executions"], 0);
    // The tenant header must name the token's own tenant.
    let resp = app
        .http
        .get(format!("{}/admin/agents", app.base))
        .bearer_auth(&a_admin)
        .header("X-AEX-Tenant-Id", &b)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // Nothing of B changed, and the ledger recorded nothing: every attempt was refused.
    assert_eq!(b_books(&app, &b_agent).await, before);
    let events_after: i64 = app.count("SELECT count(*) FROM event_log").await;
    assert_eq!(events_after, events_before);
    assert_eq!(app.chat(&b_token, hello()).await.status(), StatusCode::OK);
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_reservation_must_fit_the_tenant_budget_as_well_as_the_agent_budget() {
    let app = spawn_app().await;
    let (tenant, admin) = app
        .tenant_with_admin("lean", json!({"budget_usd": "0.000500"}))
        .await;
    let (_, created) = app
        .admin_post(
            "/admin/agents",
            &admin,
            json!({"name": "rich", "budget_usd": "5.00"}),
        )
        .await;
    let token = created["token"].as_str().unwrap().to_owned();

    let resp = app.chat(&token, hello()).await;
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tenant"),
        "{body}"
    );

    let updated = app
        .op(
            Method::PATCH,
            &format!("/admin/tenants/{tenant}"),
            Some(json!({"budget_usd": "1.00"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(updated["budget_micro_usd"], 1_000_000);
    for _ in 0..2 {
        assert_eq!(app.chat(&token, hello()).await.status(), StatusCode::OK);
    }
    let (t_spent, t_reserved): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT sum(lifetime_spent_micro_usd) FROM agents WHERE tenant_id = t.id)::bigint, \
         reserved_micro_usd FROM tenants t WHERE id = $1::uuid",
    )
    .bind(&tenant)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let (a_spent, a_reserved): (i64, i64) = sqlx::query_as(
        "SELECT spent_micro_usd, reserved_micro_usd FROM agents WHERE name = 'rich'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(t_spent > 0);
    assert_eq!((t_spent, t_reserved), (a_spent, a_reserved));

    let changes = app.ledger_payloads("tenant.updated").await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["by"], "test-operator");
    assert_eq!(changes[0]["before"]["budget_micro_usd"], 500);
    assert_eq!(changes[0]["after"]["budget_micro_usd"], 1_000_000);

    // Removing the tenant budget (null) leaves only the agent's.
    let updated = app
        .op(
            Method::PATCH,
            &format!("/admin/tenants/{tenant}"),
            Some(json!({"budget_usd": null})),
            StatusCode::OK,
        )
        .await;
    assert!(updated["budget_micro_usd"].is_null());
    assert_eq!(app.chat(&token, hello()).await.status(), StatusCode::OK);
    app.assert_books_audit().await;
}

#[tokio::test]
async fn operators_manage_tenants_whose_default_policy_agents_inherit() {
    let app = spawn_app().await;
    let (tenant, admin) = app
        .tenant_with_admin(
            "policed",
            json!({"default_policy": {"allowed_models": ["pricey"]}}),
        )
        .await;
    let created = app.ledger_payloads("tenant.created").await;
    assert_eq!(created[0]["by"], "test-operator");
    assert_eq!(created[0]["after"]["name"], "policed");

    // Names are unique and validated; only operators create or change tenants.
    let (status, body) = app
        .admin_post(
            "/admin/tenants",
            &app.operator_token,
            json!({"name": "policed"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = app
        .admin_post("/admin/tenants", &app.operator_token, json!({"name": " "}))
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("name"))
    );
    let (status, _) = app
        .admin_post("/admin/tenants", &admin, json!({"name": "x"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .admin(
            Method::PATCH,
            &format!("/admin/tenants/{tenant}"),
            &admin,
            Some(json!({"budget_usd": "9"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, own) = app.admin(Method::GET, "/admin/tenants", &admin, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(own.as_array().unwrap().len(), 1);
    // An operator names the tenant to act on with X-AEX-Tenant-Id (or ?tenant_id=).
    let resp = app
        .http
        .post(format!("{}/admin/agents", app.base))
        .bearer_auth(&app.operator_token)
        .header("X-AEX-Tenant-Id", &tenant)
        .json(&json!({"name": "placed", "budget_usd": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let placed: Value = resp.json().await.unwrap();
    assert_eq!(placed["agent"]["tenant_id"], tenant);
    let all = app
        .op(Method::GET, "/admin/tenants", None, StatusCode::OK)
        .await;
    assert_eq!(
        all.as_array().unwrap().len(),
        2,
        "default and policed: {all}"
    );

    let (_, agent) = app
        .admin_post(
            "/admin/agents",
            &admin,
            json!({"name": "inheritor", "budget_usd": "1"}),
        )
        .await;
    let token = agent["token"].as_str().unwrap().to_owned();
    let resp = app.chat(&token, hello()).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "policy_violation");

    // A merge patch: `null` removes the default, so the agent may use any model again.
    let updated = app
        .op(
            Method::PATCH,
            "/admin/tenants/policed",
            Some(json!({"default_policy": {"allowed_models": null, "allow_vision": true}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(updated["default_policy"], json!({"allow_vision": true}));
    assert_eq!(app.chat(&token, hello()).await.status(), StatusCode::OK);
    let (status, body) = app
        .admin(
            Method::PATCH,
            "/admin/tenants/policed",
            &app.operator_token,
            Some(json!({"default_policy": {"allow_vision": "yes"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "default_policy");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allow_vision"),
        "{body}"
    );
}
