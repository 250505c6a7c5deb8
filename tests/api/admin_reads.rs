//! Reading the books through the admin API: executions and their timelines, the ledger, usage
//! and activity, config, the OpenAPI document and Swagger UI; and the one admin error shape.

use reqwest::Method;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{hello, spawn_app, TestApp};

async fn spend(app: &TestApp) -> (uuid::Uuid, uuid::Uuid) {
    let a1 = app.create_agent("a1", "1.00", json!({})).await;
    let a2 = app.create_agent("a2", "0.000010", json!({})).await;
    for key in ["k1", "k2"] {
        let resp = app
            .post(
                "/v1/chat/completions",
                &a1.token,
                hello(),
                &[("Idempotency-Key", key)],
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = app
        .post(
            "/v1/chat/completions",
            &a2.token,
            hello(),
            &[("Idempotency-Key", "poor")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    (a1.id, a2.id)
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v[key].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn executions_are_listed_with_filters_and_shown_with_their_ledger_timeline() {
    let app = spawn_app().await;
    let (a1, _) = spend(&app).await;
    let all = app
        .op(Method::GET, "/admin/executions", None, StatusCode::OK)
        .await;
    assert_eq!(
        names(&all, "execution_key"),
        ["poor", "k2", "k1"],
        "newest first"
    );
    let mine = app
        .op(
            Method::GET,
            "/admin/executions?agent=a1&state=COMMITTED",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(names(&mine, "execution_key"), ["k2", "k1"]);
    let denied = app
        .op(
            Method::GET,
            "/admin/executions?state=DENIED",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(denied[0]["reason"], "insufficient_budget");
    let page = app
        .op(
            Method::GET,
            "/admin/executions?limit=1",
            None,
            StatusCode::OK,
        )
        .await;
    let before = page[0]["id"].as_str().unwrap();
    let next = app
        .op(
            Method::GET,
            &format!("/admin/executions?limit=5&before={before}&model=gpt-4o-mini"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(names(&next, "execution_key"), ["k2", "k1"]);
    let since = chrono::Utc::now() + chrono::Duration::hours(1);
    let later = app
        .op(
            Method::GET,
            &format!(
                "/admin/executions?since={}",
                since.format("%Y-%m-%dT%H:%M:%SZ")
            ),
            None,
            StatusCode::OK,
        )
        .await;
    assert!(later.as_array().unwrap().is_empty());

    let detail = app
        .op(Method::GET, "/admin/executions/k1", None, StatusCode::OK)
        .await;
    assert_eq!(detail["execution"]["state"], "COMMITTED");
    let by_id = app
        .op(
            Method::GET,
            &format!(
                "/admin/executions/{}",
                detail["execution"]["id"].as_str().unwrap()
            ),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(by_id, detail);
    let expected: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM event_log WHERE agent_id = $1 AND execution_id = 'k1' ORDER BY seq",
    )
    .bind(a1)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(names(&detail["events"], "event_type"), expected);
    assert_eq!(expected.last().map(String::as_str), Some("usage.commit"));
    let commit = detail["events"].as_array().unwrap().last().unwrap();
    assert_eq!(
        commit["payload"]["actual_micro_usd"],
        detail["execution"]["actual_micro_usd"]
    );
    let timeline = app
        .op(
            Method::GET,
            "/admin/replay?execution_id=k1",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(names(&timeline, "event_type"), expected);
    app.op(
        Method::GET,
        "/admin/executions/nope",
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn the_ledger_usage_and_activity_agree_with_the_books() {
    let app = spawn_app().await;
    let (a1, a2) = spend(&app).await;

    // The ledger, read in pages, links every event to the one before it on its chain.
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = app
            .op(
                Method::GET,
                &format!("/admin/ledger/events?limit=3&after_id={after}"),
                None,
                StatusCode::OK,
            )
            .await;
        let page = page.as_array().unwrap().clone();
        let Some(last) = page.last() else { break };
        after = last["id"].as_i64().unwrap();
        events.extend(page);
    }
    let total: i64 = app.count("SELECT count(*) FROM event_log").await;
    assert_eq!(events.len() as i64, total);
    let mut heads = std::collections::HashMap::new();
    for e in &events {
        let chain = e["chain_id"].as_str().unwrap();
        if let Some(prev) = heads.insert(chain.to_owned(), e["event_hash"].clone()) {
            assert_eq!(e["prev_hash"], prev, "event {} links to its chain", e["id"]);
        }
    }
    let commits = app
        .op(
            Method::GET,
            "/admin/ledger/events?agent=a1&event_type=usage.commit",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(commits.as_array().unwrap().len(), 2);
    let verified = app
        .op(Method::GET, "/admin/ledger/verify", None, StatusCode::OK)
        .await;
    assert_eq!(
        (verified["ok"].as_bool(), verified["events"].as_i64()),
        (Some(true), Some(total))
    );

    let written = app
        .op(
            Method::POST,
            "/admin/ledger/checkpoints",
            None,
            StatusCode::OK,
        )
        .await;
    let latest = app
        .op(
            Method::GET,
            "/admin/ledger/checkpoints/latest",
            None,
            StatusCode::OK,
        )
        .await;
    // (A replica's periodic checkpoint may have recorded the same heads a moment before.)
    if !written["checkpoint_id"].is_null() {
        assert_eq!(latest["id"], written["checkpoint_id"]);
    }
    assert_eq!(latest["event_count"], total);
    let signature: String =
        sqlx::query_scalar("SELECT signature FROM ledger_checkpoints WHERE id = $1")
            .bind(latest["id"].as_i64().unwrap())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(!signature.is_empty());

    let usage = app
        .op(Method::GET, "/admin/usage", None, StatusCode::OK)
        .await;
    let (spent,): (i64,) =
        sqlx::query_as("SELECT COALESCE(sum(spent_micro_usd), 0)::bigint FROM agents")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(usage["total"]["executions"], 3);
    assert_eq!(usage["total"]["committed"], 2);
    assert_eq!(usage["total"]["denied"], 1);
    assert_eq!(usage["total"]["spent_micro_usd"], spent);
    let by_agent: Vec<(String, i64)> = usage["by_agent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_owned(),
                l["executions"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(by_agent, [("a1".to_owned(), 2), ("a2".to_owned(), 1)]);
    assert_eq!(usage["by_model"][0]["key"], "gpt-4o-mini");
    let only_a2 = app
        .op(
            Method::GET,
            &format!("/admin/usage?agent={a2}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(only_a2["total"]["executions"], 1);
    let _ = a1;

    let activity = app
        .op(
            Method::GET,
            "/admin/activity?limit=10",
            None,
            StatusCode::OK,
        )
        .await;
    let kinds = names(&activity, "kind");
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("admission.denied"),
        "newest first: {kinds:?}"
    );
    assert_eq!(kinds.iter().filter(|k| *k == "usage.commit").count(), 2);
    assert_eq!(activity[0]["agent_name"], "a2");

    let config = app
        .op(Method::GET, "/admin/config", None, StatusCode::OK)
        .await;
    assert_eq!(config["version"], config["replica_version"]);
    assert!(config["content"].as_str().unwrap().contains("gpt-4o-mini"));
    let versions = app
        .op(Method::GET, "/admin/config/versions", None, StatusCode::OK)
        .await;
    assert_eq!(versions[0]["version"], config["version"]);
}

#[tokio::test]
async fn the_openapi_document_and_swagger_ui_are_served() {
    let app = spawn_app().await;
    let served: Value = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let generated: Value = serde_json::from_str(&aex::http::router::openapi_json()).unwrap();
    assert_eq!(served, generated);
    let page = app
        .http
        .get(format!("{}/docs/", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("swagger-ui"));
    let script = app
        .http
        .get(format!("{}/docs/swagger-ui-bundle.js", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        script.status(),
        StatusCode::OK,
        "the UI is vendored, not fetched from a CDN"
    );
}

#[tokio::test]
async fn admin_errors_come_in_one_shape_and_name_the_field() {
    let app = spawn_app().await;
    let send = |method: Method, path: &str, body: Option<&str>| {
        let mut req = app
            .http
            .request(method, format!("{}{path}", app.base))
            .bearer_auth(&app.operator_token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        req.send()
    };
    type Case<'a> = (
        Method,
        &'a str,
        Option<&'a str>,
        StatusCode,
        Option<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/admin/agents",
            Some("{not json"),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            Method::POST,
            "/admin/agents",
            Some(""),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            Method::POST,
            "/admin/agents",
            Some(r#"{"name": "x", "budget_usd": 5}"#),
            StatusCode::BAD_REQUEST,
            Some("budget_usd"),
        ),
        (
            Method::POST,
            "/admin/agents",
            Some(r#"{"name": "x\u0000", "budget_usd": "5"}"#),
            StatusCode::BAD_REQUEST,
            Some("name"),
        ),
        (
            Method::POST,
            "/admin/agents",
            Some(r#"{"name": "x", "budget_usd": "5", "token_ttl_hours": 4000000000}"#),
            StatusCode::BAD_REQUEST,
            Some("token_ttl_hours"),
        ),
        (
            Method::POST,
            "/admin/agents",
            Some(r#"{"name": "x", "budget_usd": "5", "policy": {"allowed_models": ["\u0000"]}}"#),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            Method::POST,
            "/admin/tokens/not-a-uuid/revoke",
            None,
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            Method::GET,
            "/admin/executions?model=%00",
            None,
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            Method::GET,
            "/admin/executions?since=yesterday",
            None,
            StatusCode::BAD_REQUEST,
            Some("since"),
        ),
        (
            Method::GET,
            "/admin/executions?since=9999-12-31T23:59:59Z&until=0001-01-01T00:00:00Z",
            None,
            StatusCode::BAD_REQUEST,
            Some("until"),
        ),
        (
            Method::GET,
            "/admin/ledger/events?event_type=%00",
            None,
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            Method::GET,
            "/admin/agents?state=ASLEEP",
            None,
            StatusCode::BAD_REQUEST,
            Some("state"),
        ),
        (
            Method::GET,
            "/admin/agents/nobody",
            None,
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            Method::POST,
            "/admin/tenants",
            Some(r#"{"name": "t", "rpm": 99999999999}"#),
            StatusCode::BAD_REQUEST,
            Some("rpm"),
        ),
    ];
    for (method, path, body, status, field) in cases {
        let resp = send(method.clone(), path, body).await.unwrap();
        assert_eq!(resp.status(), status, "{method} {path} {body:?}");
        let err: Value = resp.json().await.unwrap();
        let code = err["error"]["code"].as_str().unwrap();
        assert!(["invalid_request", "not_found"].contains(&code), "{err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{err}"
        );
        if let Some(f) = field {
            assert_eq!(err["error"]["field"], f, "{method} {path}: {err}");
        }
    }
    let agents: i64 = app.count("SELECT count(*) FROM agents").await;
    assert_eq!(agents, 0, "no invalid request created anything");
}
