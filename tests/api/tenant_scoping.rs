//! What a tenant admin sees (SPEC §9), tried as a hostile one: replay, ledger verification,
//! config and metrics name nothing of another tenant; a tenant cannot make a sum of money
//! overflow anyone's view; names that hide characters or pose as ids are refused.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{hello, spawn_app, TestApp};

/// An agent created by a tenant admin, and one call made with it: `(agent id, token)`.
async fn agent_with_a_call(
    app: &TestApp,
    admin: &str,
    name: &str,
    extra: Value,
) -> (String, String) {
    let mut body = json!({"name": name, "budget_usd": "2.00"});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (status, created) = app.admin_post("/admin/agents", admin, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    assert_eq!(app.chat(&token, hello()).await.status(), StatusCode::OK);
    (created["agent"]["id"].as_str().unwrap().to_owned(), token)
}

fn assert_names_none(what: &str, body: &Value, foreign: &[&str]) {
    let text = body.to_string();
    for f in foreign {
        assert!(!text.contains(f), "{what} names {f}: {text}");
    }
}

#[tokio::test]
async fn a_tenant_admin_sees_only_its_own_chains_config_and_metrics_while_another_tenant_is_broken()
{
    let app = spawn_app().await;
    let (a, a_admin) = app.tenant_with_admin("tenant-a", json!({})).await;
    let (b, b_admin) = app.tenant_with_admin("tenant-b", json!({})).await;
    let (a_agent, _) = agent_with_a_call(
        &app,
        &a_admin,
        "a-agent",
        json!({"policy": {"allowed_models": ["gpt-4o-mini"]}}),
    )
    .await;
    let (b_agent, _) = agent_with_a_call(&app, &b_admin, "b-secret-agent", json!({})).await;

    // Break B's chain as someone with the database would.
    let b_event: i64 = sqlx::query_scalar(
        "SELECT min(id) FROM event_log WHERE agent_id = $1::uuid AND event_type = 'usage.commit'",
    )
    .bind(&b_agent)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    app.forge_event(
        b_event,
        "\"actual_micro_usd\":[0-9]+",
        "\"actual_micro_usd\":1",
    )
    .await;
    // The break is real: the operator's whole-ledger verification names B's chain.
    let whole = app
        .op(Method::GET, "/admin/ledger/verify", None, StatusCode::OK)
        .await;
    assert_eq!(whole["ok"], false, "{whole}");
    assert!(whole.to_string().contains(&b_agent), "{whole}");

    let foreign = [b.as_str(), b_agent.as_str(), "b-secret-agent", "tenant-b"];
    let (status, verify) = app
        .admin(Method::GET, "/admin/ledger/verify", &a_admin, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{verify}");
    assert_eq!(verify["ok"], true, "{verify}");
    // A's tenant chain and its agent's chain, nothing else.
    let a_chains = app
        .count(&format!(
            "SELECT count(DISTINCT chain_id) FROM event_log WHERE tenant_id = '{a}'"
        ))
        .await;
    assert_eq!(verify["chains"], a_chains, "{verify}");
    let a_events = app
        .count(&format!(
            "SELECT count(*) FROM event_log WHERE tenant_id = '{a}'"
        ))
        .await;
    assert_eq!(verify["events"], a_events, "{verify}");
    assert_names_none("A's verify", &verify, &foreign);
    let (status, asked) = app
        .admin(
            Method::GET,
            &format!("/admin/ledger/verify?tenant_id={b}"),
            &a_admin,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{asked}");

    let (status, replay) = app
        .admin(Method::GET, "/admin/replay", &a_admin, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{replay}");
    assert_eq!(replay["ok"], true, "{replay}");
    assert_eq!(replay["ledger"]["chains"], a_chains);
    assert_eq!(replay["agents"].as_array().unwrap().len(), 1);
    assert_eq!(replay["agents"][0]["agent_id"], a_agent.as_str());
    assert_names_none("A's replay", &replay, &foreign);

    let (status, config) = app
        .admin(Method::GET, "/admin/config", &a_admin, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{config}");
    assert_eq!(config["models"], json!(["gpt-4o-mini"]), "{config}");
    assert_eq!(config["prices"][0]["input_micro_usd_per_million"], 150_000);
    assert_eq!(config["prices"][0]["output_micro_usd_per_million"], 600_000);
    assert!(config.get("content").is_none(), "{config}");
    assert_eq!(config["source"], "file", "{config}");
    let models_dir = app.dir.path().to_str().unwrap();
    assert_names_none(
        "A's config",
        &config,
        &[models_dir, "http://", "mock", "pricey", "slow"],
    );
    let (status, versions) = app
        .admin(Method::GET, "/admin/config/versions", &a_admin, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_names_none("A's config versions", &versions, &[models_dir]);
    // The operator still sees the document.
    let full = app
        .op(Method::GET, "/admin/config", None, StatusCode::OK)
        .await;
    assert!(full["content"].as_str().unwrap().contains("base_url"));

    let (status, metrics) = app
        .admin(Method::GET, "/admin/metrics", &a_admin, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{metrics}");
    assert_eq!(metrics["totals"]["agents"], 1);
    assert!(
        metrics["ledger"]["last_verification"].is_null(),
        "{metrics}"
    );
    assert_names_none("A's metrics", &metrics, &foreign);
}

#[tokio::test]
async fn two_agents_with_the_largest_budget_overflow_no_one_s_metrics() {
    let app = spawn_app().await;
    let (_, admin) = app.tenant_with_admin("greedy", json!({})).await;
    let largest = "9223372036854.775807";
    for name in ["whale-1", "whale-2"] {
        let (status, created) = app
            .admin_post(
                "/admin/agents",
                &admin,
                json!({"name": name, "budget_usd": largest}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
    }
    let operator_agent = app.create_agent("ordinary", "1.00", json!({})).await;
    assert_eq!(
        app.chat(&operator_agent.token, hello()).await.status(),
        StatusCode::OK
    );
    let twice = 2 * u64::try_from(i64::MAX).unwrap();

    let (status, own) = app.admin(Method::GET, "/admin/metrics", &admin, None).await;
    assert_eq!(status, StatusCode::OK, "{own}");
    assert_eq!(
        own["totals"]["budget_micro_usd"].as_u64(),
        Some(twice),
        "{own}"
    );
    assert_eq!(own["totals"]["remaining_micro_usd"].as_u64(), Some(twice));

    // Every tenant's view: past 64 bits, exact (read as text: a JSON parser would round it).
    let all = app
        .http
        .get(format!("{}/admin/metrics", app.base))
        .bearer_auth(&app.operator_token)
        .send()
        .await
        .unwrap();
    assert_eq!(all.status(), StatusCode::OK);
    let all = all.text().await.unwrap();
    let expected = 2 * i128::from(i64::MAX) + 1_000_000;
    assert!(
        all.contains(&format!("\"budget_micro_usd\":{expected}")),
        "{all}"
    );
    for path in ["/admin/usage", "/admin/agents", "/admin/tenants"] {
        app.op(Method::GET, path, None, StatusCode::OK).await;
    }
    assert_eq!(app.get("/metrics", None).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn names_that_hide_characters_or_pose_as_ids_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let (_, admin) = app.tenant_with_admin("names", json!({})).await;
    let bad = [
        String::new(),
        "x".repeat(129),
        "invoice\u{202E}fdp.exe".to_owned(),
        "admin\u{200B}".to_owned(),
        "bell\u{0007}".to_owned(),
        "\u{2066}isolate\u{2069}".to_owned(),
        uuid::Uuid::new_v4().to_string(),
        "00000000-0000-0000-0000-000000000001".to_owned(),
    ];
    let (tenants, agents) = (
        app.count("SELECT count(*) FROM tenants").await,
        app.count("SELECT count(*) FROM agents").await,
    );
    for name in &bad {
        let (status, err) = app
            .admin_post("/admin/tenants", &app.operator_token, json!({"name": name}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "tenant {name:?}: {err}");
        assert_eq!(err["error"]["field"], "name", "{err}");
        let (status, err) = app
            .admin_post(
                "/admin/agents",
                &admin,
                json!({"name": name, "budget_usd": "1"}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "agent {name:?}: {err}");
        assert_eq!(err["error"]["field"], "name", "{err}");
    }
    assert_eq!(app.count("SELECT count(*) FROM tenants").await, tenants);
    assert_eq!(app.count("SELECT count(*) FROM agents").await, agents);
    // 128 characters of any script are a name.
    let (status, err) = app
        .admin_post(
            "/admin/agents",
            &admin,
            json!({"name": "é".repeat(128), "budget_usd": "1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{err}");
}
