//! Tokens through the admin API (issue, list, revoke, rotate) and which scope may call which
//! route.

use reqwest::Method;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{hello, spawn_app, TestApp};

async fn revoked(app: &TestApp, jti: &str) -> Option<String> {
    sqlx::query_scalar("SELECT revoked_reason FROM api_tokens WHERE jti = $1::uuid")
        .bind(jti)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Issues a token with `token`'s authority; the response (201).
async fn issue(app: &TestApp, token: &str, body: Value) -> Value {
    let (status, issued) = app.admin_post("/admin/tokens", token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    issued
}

fn ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn tokens_are_issued_listed_rotated_and_revoked_with_ledger_events() {
    let app = spawn_app().await;
    let agent = app.create_agent("holder", "1.00", json!({})).await;
    let issued = app
        .op(
            Method::POST,
            "/admin/tokens",
            Some(json!({"scope": "execution", "agent": "holder", "ttl_hours": 2, "description": "ci"})),
            StatusCode::CREATED,
        )
        .await;
    let token = issued["token"].as_str().unwrap().to_owned();
    let jti = issued["token_id"].as_str().unwrap().to_owned();
    let expires: chrono::DateTime<chrono::Utc> =
        issued["expires_at"].as_str().unwrap().parse().unwrap();
    let ttl = expires - chrono::Utc::now();
    assert!((7100..=7200).contains(&ttl.num_seconds()), "{ttl}");
    assert_eq!(app.chat(&token, hello()).await.status(), StatusCode::OK);
    let listed = app
        .op(
            Method::GET,
            "/admin/tokens?agent=holder",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(
        listed.to_string().find(&token).is_none(),
        "a token itself is never listed"
    );

    let rotated = app
        .op(
            Method::POST,
            &format!("/admin/tokens/{jti}/rotate"),
            None,
            StatusCode::OK,
        )
        .await;
    let new_token = rotated["token"].as_str().unwrap().to_owned();
    let new_jti = rotated["token_id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.chat(&token, hello()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.chat(&new_token, hello()).await.status(), StatusCode::OK);
    assert_eq!(revoked(&app, &jti).await.as_deref(), Some("rotated"));
    let (lifetime,): (f64,) = sqlx::query_as(
        "SELECT extract(epoch FROM expires_at - issued_at)::float8 FROM api_tokens WHERE jti = $1::uuid",
    )
    .bind(&new_jti)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        (7190.0..=7210.0).contains(&lifetime),
        "the successor keeps the lifetime: {lifetime}"
    );
    let (status, _) = app
        .admin(
            Method::POST,
            &format!("/admin/tokens/{jti}/rotate"),
            &app.operator_token,
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a revoked token is not rotated"
    );

    let path = format!("/admin/tokens/{new_jti}/revoke");
    let done = app
        .op(
            Method::POST,
            &path,
            Some(json!({"reason": "leaked"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(done["revoked_reason"], "leaked");
    app.op(Method::POST, &path, None, StatusCode::OK).await;
    assert_eq!(
        app.chat(&new_token, hello()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let revocations = app.ledger_payloads("token.revoked").await;
    assert_eq!(
        revocations.len(),
        1,
        "revoking twice is one event: {revocations:?}"
    );
    assert_eq!(revocations[0]["reason"], "leaked");
    let rotations = app.ledger_payloads("token.rotated").await;
    assert_eq!(
        rotations,
        vec![json!({"after": new_jti, "before": jti, "by": "test-operator"})]
    );

    // The agent as a whole: rotate revokes every live token and issues one.
    let live = app
        .op(
            Method::GET,
            "/admin/tokens?agent=holder",
            None,
            StatusCode::OK,
        )
        .await;
    let all = app
        .op(
            Method::GET,
            "/admin/tokens?agent=holder&include_revoked=true",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        (
            live.as_array().unwrap().len(),
            all.as_array().unwrap().len()
        ),
        (1, 3)
    );
    let path = format!("/admin/agents/{}/rotate_token", agent.id);
    let fresh = app
        .op(
            Method::POST,
            &path,
            Some(json!({"ttl_hours": 1})),
            StatusCode::OK,
        )
        .await;
    let mut replaced: Vec<String> = fresh["revoked_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.as_str().unwrap().to_owned())
        .collect();
    replaced.sort();
    assert_eq!(replaced, ids(&live));
    assert_eq!(
        app.chat(&agent.token, hello()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let fresh_token = fresh["token"].as_str().unwrap();
    assert_eq!(
        app.chat(fresh_token, hello()).await.status(),
        StatusCode::OK
    );
    let path = format!("/admin/agents/{}/revoke_tokens", agent.id);
    let gone = app.op(Method::POST, &path, None, StatusCode::OK).await;
    assert_eq!(gone["revoked_tokens"], json!([fresh["token_id"]]));
    assert_eq!(
        app.chat(fresh_token, hello()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let issued_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_log WHERE event_type = 'token.issued' AND agent_id = $1",
    )
    .bind(agent.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(issued_events, 4, "creation, issue, rotate, agent rotate");
}

#[tokio::test]
async fn token_scopes_decide_which_routes_a_token_may_call() {
    let app = spawn_app().await;
    let (tenant, admin) = app.tenant_with_admin("scoped", json!({})).await;
    let (_, created) = app
        .admin_post(
            "/admin/agents",
            &admin,
            json!({"name": "worker", "budget_usd": "1"}),
        )
        .await;
    let execution = created["token"].as_str().unwrap().to_owned();
    let reader = issue(
        &app,
        &admin,
        json!({"scope": "read-only", "agent": "worker"}),
    )
    .await;
    let reader = reader["token"].as_str().unwrap().to_owned();

    // Agent tokens never reach the admin API.
    for token in [&execution, &reader] {
        let (status, body) = app.admin(Method::GET, "/admin/agents", token, None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden"))
        );
    }
    // An admin token runs its tenant but nothing that spans tenants.
    let operator_only = [
        (
            Method::POST,
            "/admin/tenants".to_owned(),
            Some(json!({"name": "x"})),
        ),
        (
            Method::PATCH,
            format!("/admin/tenants/{tenant}"),
            Some(json!({"rpm": 5})),
        ),
        (Method::POST, "/admin/reload_config".to_owned(), None),
        (Method::POST, "/admin/ledger/checkpoints".to_owned(), None),
        (
            Method::GET,
            "/admin/ledger/checkpoints/latest".to_owned(),
            None,
        ),
        (
            Method::POST,
            "/admin/tokens".to_owned(),
            Some(json!({"scope": "operator"})),
        ),
    ];
    for (method, path, body) in operator_only {
        let (status, err) = app.admin(method.clone(), &path, &admin, body.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {err}");
        let (status, err) = app
            .admin(method.clone(), &path, &app.operator_token, body)
            .await;
        assert!(
            status.is_success(),
            "{method} {path} as operator: {status} {err}"
        );
    }
    for path in [
        "/admin/agents",
        "/admin/tokens",
        "/admin/executions",
        "/admin/ledger/events",
        "/admin/config",
        "/admin/config/versions",
        "/admin/plugins",
        "/admin/usage",
        "/admin/activity",
        "/admin/replay",
        "/admin/ledger/verify",
        "/admin/tenants",
    ] {
        let (status, body) = app.admin(Method::GET, path, &admin, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    issue(&app, &admin, json!({"scope": "admin", "subject": "deputy"})).await;
    // An operator token is invisible to an admin.
    let op = app
        .op(
            Method::POST,
            "/admin/tokens",
            Some(json!({"scope": "operator", "subject": "op2"})),
            StatusCode::CREATED,
        )
        .await;
    let path = format!("/admin/tokens/{}/revoke", op["token_id"].as_str().unwrap());
    assert_eq!(
        app.admin(Method::POST, &path, &admin, None).await.0,
        StatusCode::NOT_FOUND
    );
    // Admin and operator tokens do not spend.
    assert_eq!(
        app.chat(&admin, hello()).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(app.chat(&execution, hello()).await.status(), StatusCode::OK);

    // A revoked admin token is a 401 in the admin shape.
    let (_, mine) = app
        .admin(Method::GET, "/admin/tokens?scope=admin", &admin, None)
        .await;
    for t in mine.as_array().unwrap() {
        let path = format!("/admin/tokens/{}/revoke", t["id"].as_str().unwrap());
        app.op(Method::POST, &path, None, StatusCode::OK).await;
    }
    let resp = app
        .http
        .get(format!("{}/admin/agents", app.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn concurrent_rotations_and_revocations_of_one_token_take_effect_once() {
    let app = spawn_app().await;
    app.create_agent("contended", "1.00", json!({})).await;
    let body = json!({"scope": "execution", "agent": "contended"});
    let jti = issue(&app, &app.operator_token, body.clone()).await["token_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotate = format!("/admin/tokens/{jti}/rotate");
    let statuses = futures::future::join_all(
        (0..8).map(|_| app.admin(Method::POST, &rotate, &app.operator_token, None)),
    )
    .await;
    let ok = statuses
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .count();
    let conflicts = statuses
        .iter()
        .filter(|(s, _)| *s == StatusCode::CONFLICT)
        .count();
    assert_eq!((ok, conflicts), (1, 7), "{statuses:?}");
    assert_eq!(app.ledger_payloads("token.rotated").await.len(), 1);
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_tokens t JOIN agents a ON a.id = t.agent_id \
         WHERE a.name = 'contended' AND t.revoked_at IS NULL",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(live, 2, "the agent's first token and one successor");

    let other = issue(&app, &app.operator_token, body).await["token_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoke = format!("/admin/tokens/{other}/revoke");
    let statuses = futures::future::join_all(
        (0..8).map(|_| app.admin(Method::POST, &revoke, &app.operator_token, None)),
    )
    .await;
    assert!(
        statuses.iter().all(|(s, _)| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(app.ledger_payloads("token.revoked").await.len(), 1);
    app.assert_books_audit().await;
}
