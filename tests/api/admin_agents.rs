//! Agents through the admin API: lifecycle (the seed's transitions only), budgets, limits and
//! policy, listing — each change checked in the database and the ledger.

use reqwest::Method;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{hello, spawn_app, TestApp};

async fn agent_row(app: &TestApp, id: uuid::Uuid) -> (String, i64, Option<i32>, Value) {
    let (state, budget, rpm, policy): (String, i64, Option<i32>, sqlx::types::Json<Value>) =
        sqlx::query_as(
            "SELECT state, budget_micro_usd, rpm_limit, policy FROM agents WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    (state, budget, rpm, policy.0)
}

async fn set_state(app: &TestApp, id: uuid::Uuid, state: &str) -> (StatusCode, Value) {
    let path = format!("/admin/agents/{id}/state");
    app.admin_post(
        &path,
        &app.operator_token,
        json!({"state": state, "reason": "test"}),
    )
    .await
}

#[tokio::test]
async fn lifecycle_follows_the_seed_transitions_and_decommissioning_revokes_every_token() {
    let app = spawn_app().await;
    let agent = app.create_agent("life", "1.00", json!({})).await;

    assert_eq!(set_state(&app, agent.id, "PAUSED").await.0, StatusCode::OK);
    let resp = app.chat(&agent.token, hello()).await;
    assert_eq!(resp.status(), StatusCode::LOCKED);
    assert_eq!(set_state(&app, agent.id, "READY").await.0, StatusCode::OK);
    assert_eq!(
        app.chat(&agent.token, hello()).await.status(),
        StatusCode::OK
    );

    // READY -> STOPPED is not a seed transition: refused, nothing changes.
    let (status, body) = set_state(&app, agent.id, "STOPPED").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("RUNNING, PAUSED, QUARANTINED, DECOMMISSIONED"));
    assert_eq!(agent_row(&app, agent.id).await.0, "READY");
    let (status, body) = set_state(&app, agent.id, "SLEEPING").await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("state"))
    );

    // A second token, so that decommissioning has more than one to revoke.
    let second = app
        .op(
            Method::POST,
            "/admin/tokens",
            Some(json!({"scope": "read-only", "agent": "life"})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(set_state(&app, agent.id, "RUNNING").await.0, StatusCode::OK);
    let path = format!("/admin/agents/{}/decommission", agent.id);
    let (status, _) = app
        .admin(Method::POST, &path, &app.operator_token, None)
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "RUNNING cannot be decommissioned"
    );
    assert_eq!(set_state(&app, agent.id, "PAUSED").await.0, StatusCode::OK);
    let done = app
        .op(
            Method::POST,
            &path,
            Some(json!({"reason": "retired"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(done["agent"]["state"], "DECOMMISSIONED");
    assert_eq!(done["revoked_tokens"].as_array().unwrap().len(), 2);
    assert!(done["revoked_tokens"]
        .as_array()
        .unwrap()
        .contains(&second["token_id"]));

    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_tokens WHERE agent_id = $1 AND revoked_at IS NULL",
    )
    .bind(agent.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(live, 0);
    assert_eq!(
        app.chat(&agent.token, hello()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Never deleted: still listed, still readable, but closed.
    let shown = app
        .op(Method::GET, "/admin/agents/life", None, StatusCode::OK)
        .await;
    assert_eq!(shown["state"], "DECOMMISSIONED");
    assert!(shown["spent_micro_usd"].as_i64().unwrap() > 0);
    for (method, p, body) in [
        (
            Method::POST,
            format!("/admin/agents/{}/decommission", agent.id),
            None,
        ),
        (
            Method::POST,
            format!("/admin/agents/{}/topup", agent.id),
            Some(json!({"amount_usd": "1"})),
        ),
        (
            Method::POST,
            format!("/admin/agents/{}/rotate_token", agent.id),
            None,
        ),
        (
            Method::POST,
            "/admin/tokens".to_owned(),
            Some(json!({"scope": "execution", "agent": "life"})),
        ),
    ] {
        let (status, body) = app.admin(method, &p, &app.operator_token, body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{p}: {body}");
    }

    let changes = app.ledger_payloads("agent.state_changed").await;
    let seen: Vec<(String, String)> = changes
        .iter()
        .map(|c| {
            (
                c["before"].as_str().unwrap().into(),
                c["after"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected = [
        ("READY", "PAUSED"),
        ("PAUSED", "READY"),
        ("READY", "RUNNING"),
        ("RUNNING", "PAUSED"),
    ];
    assert_eq!(seen, expected.map(|(a, b)| (a.to_owned(), b.to_owned())));
    assert!(changes
        .iter()
        .all(|c| c["by"] == "test-operator" && c["reason"] == "test"));
    let decommissioned = app.ledger_payloads("agent.decommissioned").await;
    assert_eq!(decommissioned.len(), 1);
    assert_eq!(decommissioned[0]["reason"], "retired");
    assert_eq!(decommissioned[0]["revoked_tokens"], done["revoked_tokens"]);
    app.assert_books_audit().await;
}

#[tokio::test]
async fn budgets_are_topped_up_and_set_with_the_before_and_after_in_the_ledger() {
    let app = spawn_app().await;
    let agent = app.create_agent("saver", "0.000100", json!({})).await;
    assert_eq!(
        app.chat(&agent.token, hello()).await.status(),
        StatusCode::PAYMENT_REQUIRED
    );

    let path = format!("/admin/agents/{}/topup", agent.id);
    let topped = app
        .op(
            Method::POST,
            &path,
            Some(json!({"amount_usd": "1.00"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(topped["budget_micro_usd"], 1_000_100);
    assert_eq!(
        app.chat(&agent.token, hello()).await.status(),
        StatusCode::OK
    );
    let set = app
        .op(
            Method::PUT,
            "/admin/agents/saver/budget",
            Some(json!({"budget_usd": "0.5"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(set["budget_micro_usd"], 500_000);
    assert_eq!(agent_row(&app, agent.id).await.1, 500_000);

    let topups = app.ledger_payloads("budget.topped_up").await;
    assert_eq!(
        topups,
        vec![
            json!({"after": 1_000_100, "amount_micro_usd": 1_000_000, "before": 100, "by": "test-operator"})
        ]
    );
    let sets = app.ledger_payloads("budget.set").await;
    assert_eq!(
        sets,
        vec![
            json!({"after": 500_000, "amount_micro_usd": null, "before": 1_000_100, "by": "test-operator"})
        ]
    );

    for (body, field) in [
        (json!({"amount_usd": "0"}), "amount_usd"),
        (json!({"amount_usd": "-1"}), "amount_usd"),
        (json!({"amount_usd": "1.0000001"}), "amount_usd"),
        (json!({"amount_usd": 5}), "amount_usd"),
        (json!({"amount_usd": "1", "extra": true}), "extra"),
    ] {
        let (status, err) = app
            .admin(Method::POST, &path, &app.operator_token, Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(err["error"]["code"], "invalid_request");
        let named = err["error"]["field"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| {
                err["error"]["message"]
                    .as_str()
                    .filter(|m| m.contains(field))
                    .map(|_| field.to_owned())
            });
        assert_eq!(named.as_deref(), Some(field), "{body}: {err}");
    }
    assert_eq!(agent_row(&app, agent.id).await.1, 500_000);
    app.assert_books_audit().await;
}

#[tokio::test]
async fn limits_and_policy_change_by_merge_patch_and_are_ledgered() {
    let app = spawn_app().await;
    let agent = app
        .create_agent(
            "tuned",
            "1.00",
            json!({"policy": {"allowed_models": ["gpt-4o-mini"], "allow_vision": true}}),
        )
        .await;
    let path = format!("/admin/agents/{}", agent.id);
    let changed = app
        .op(
            Method::PATCH,
            &path,
            Some(json!({"rpm": 5, "policy": {"allowed_models": ["pricey"]}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(changed["rpm_limit"], 5);
    let (_, _, rpm, policy) = agent_row(&app, agent.id).await;
    assert_eq!(
        (rpm, policy),
        (
            Some(5),
            json!({"allowed_models": ["pricey"], "allow_vision": true})
        )
    );
    assert_eq!(
        app.chat(&agent.token, hello()).await.status(),
        StatusCode::FORBIDDEN
    );

    app.op(
        Method::PATCH,
        &path,
        Some(json!({"rpm": null, "policy": {"allowed_models": null}})),
        StatusCode::OK,
    )
    .await;
    let (_, _, rpm, policy) = agent_row(&app, agent.id).await;
    assert_eq!((rpm, policy), (None, json!({"allow_vision": true})));
    assert_eq!(
        app.chat(&agent.token, hello()).await.status(),
        StatusCode::OK
    );

    let updates = app.ledger_payloads("agent.updated").await;
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[0]["before"]["rpm_limit"], 100_000);
    assert_eq!(updates[0]["after"]["rpm_limit"], 5);
    assert_eq!(updates[1]["after"]["rpm_limit"], Value::Null);
    assert_eq!(
        updates[1]["before"]["policy"]["allowed_models"],
        json!(["pricey"])
    );

    for (body, field) in [
        (json!({"rpm": 0}), "rpm"),
        (json!({"tpm": -5}), "tpm"),
        (json!({"policy": {"nonsense": 1}}), "policy"),
        (json!({"period": "weekly"}), "period"),
    ] {
        let (status, err) = app
            .admin(
                Method::PATCH,
                &path,
                &app.operator_token,
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
}

#[tokio::test]
async fn agents_are_listed_with_filters_and_keyset_pages() {
    let app = spawn_app().await;
    for name in ["alpha", "beta", "gamma", "delta", "epsilon"] {
        app.create_agent(name, "1", json!({})).await;
    }
    app.op(
        Method::POST,
        "/admin/agents/gamma/state",
        Some(json!({"state": "PAUSED"})),
        StatusCode::OK,
    )
    .await;
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = app
            .op(
                Method::GET,
                &format!("/admin/agents?limit=2{after}"),
                None,
                StatusCode::OK,
            )
            .await;
        let page = page.as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = format!("&after={}", page.last().unwrap()["id"].as_str().unwrap());
        seen.extend(page.iter().map(|a| a["name"].as_str().unwrap().to_owned()));
    }
    assert_eq!(seen, ["alpha", "beta", "gamma", "delta", "epsilon"]);
    let paused = app
        .op(
            Method::GET,
            "/admin/agents?state=PAUSED",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(paused.as_array().unwrap().len(), 1);
    assert_eq!(paused[0]["name"], "gamma");
    let named = app
        .op(
            Method::GET,
            "/admin/agents?name_contains=lt",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(named[0]["name"], "delta");
    let (status, err) = app
        .admin(
            Method::GET,
            "/admin/agents?limit=abc",
            &app.operator_token,
            None,
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("limit"))
    );
    let (status, err) = app
        .admin(
            Method::GET,
            "/admin/agents?limit=0",
            &app.operator_token,
            None,
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("limit"))
    );
}

#[tokio::test]
async fn changing_the_budget_period_recounts_spent_with_a_ledger_event() {
    let app = spawn_app().await;
    let agent = app.create_agent("recounted", "1.00", json!({})).await;
    assert_eq!(
        app.chat(&agent.token, hello()).await.status(),
        StatusCode::OK
    );
    let (spent, _, _) = app.books(agent.id).await;
    assert!(spent > 0);
    // That commit happened three days ago: it counts for a lifetime budget, not for today's.
    sqlx::query(
        "UPDATE reservations SET settled_at = now() - interval '3 days' WHERE agent_id = $1",
    )
    .bind(agent.id)
    .execute(&app.pool)
    .await
    .unwrap();
    app.assert_books_audit().await;

    let path = format!("/admin/agents/{}", agent.id);
    for (period, expected) in [("daily", 0), ("lifetime", spent)] {
        app.op(
            Method::PATCH,
            &path,
            Some(json!({"period": period})),
            StatusCode::OK,
        )
        .await;
        assert_eq!(app.books(agent.id).await.0, expected, "{period}");
        app.assert_books_audit().await;
    }
    let resets = app.ledger_payloads("budget.period_reset").await;
    let after: Vec<i64> = resets
        .iter()
        .map(|r| r["spent_after_micro_usd"].as_i64().unwrap())
        .collect();
    assert_eq!(after, vec![0, spent]);
    let replay: Value = app
        .op(Method::GET, "/admin/replay", None, StatusCode::OK)
        .await;
    assert_eq!(replay["ok"], true, "{replay}");
}
