//! Settlement tells the truth against a provider that misbehaves on purpose (issue 14): ambiguous
//! failures are paid, AEX's own count never passes the caps it sent, absurd usage still ends the
//! execution, answers are read by their content type, a stream's books are committed before its
//! last event, tenants' books are always kept, and the audit fails on books edited by hand.

use std::sync::atomic::Ordering;

use futures::StreamExt;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{execution_id, hello, spawn_app, TestApp};

fn header_i64(resp: &reqwest::Response, name: &str) -> i64 {
    resp.headers()[name].to_str().unwrap().parse().unwrap()
}

/// `(state, reason, actual)` of an execution, and its reservation's `(state, estimate, actual)`.
async fn settled(app: &TestApp, key: &str) -> ((String, Option<String>), (String, i64, i64)) {
    let execution: (String, Option<String>) =
        sqlx::query_as("SELECT state, reason FROM executions WHERE execution_key = $1")
            .bind(key)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let reservation: (String, i64, Option<i64>) = sqlx::query_as(
        "SELECT r.state, r.estimate_micro_usd, r.actual_micro_usd FROM reservations r \
         JOIN executions e ON e.id = r.execution_id AND e.attempt = r.attempt \
         WHERE e.execution_key = $1",
    )
    .bind(key)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    (
        execution,
        (reservation.0, reservation.1, reservation.2.unwrap_or(-1)),
    )
}

#[tokio::test]
async fn eight_sequential_timeouts_commit_eight_holds_as_ambiguous() {
    let app = spawn_app().await;
    let agent = app.create_agent("timed-out", "1.00", json!({})).await;
    app.mock.delay_ms.store(1_300, Ordering::SeqCst);
    let mut body = hello();
    body["model"] = json!("slow-model"); // its provider times out after 1 s
    let mut charged = 0;
    for _ in 0..8 {
        let resp = app.chat(&agent.token, body.clone()).await;
        assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
        let id = execution_id(&resp);
        let cost = header_i64(&resp, "x-aex-cost-micro-usd");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "upstream_timeout");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("{cost} micro-USD was charged")),
            "the body says what was charged: {message}"
        );
        let ((state, reason), (r_state, estimate, actual)) = settled(&app, &id).await;
        assert_eq!(
            (state.as_str(), reason.as_deref()),
            ("FAILED", Some("upstream_timeout"))
        );
        assert_eq!((r_state.as_str(), actual), ("COMMITTED", estimate));
        assert_eq!(cost, estimate);
        let commit = app.ledger_event(&id, "usage.commit").await;
        assert_eq!(commit["usage"], "ambiguous");
        assert_eq!(commit["actual_micro_usd"], estimate);
        charged += estimate;
    }
    assert!(charged > 0);
    assert_eq!(app.mock.calls(), 8, "every call reached the provider");
    let (spent, reserved, _) = app.books(agent.id).await;
    assert_eq!((spent, reserved), (charged, 0));
    assert_eq!(app.ledger_payloads("usage.commit").await.len(), 8);
    assert!(app.ledger_payloads("reservation.released").await.is_empty());
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_provider_that_ignores_the_cap_and_reports_no_usage_is_billed_at_most_the_cap() {
    let app = spawn_app().await;
    let agent = app.create_agent("uncapped", "1.00", json!({})).await;
    app.mock.omit_usage.store(true, Ordering::SeqCst);
    app.mock.ignore_cap.store(true, Ordering::SeqCst);
    app.mock.completion_tokens.store(200, Ordering::SeqCst);
    for stream in [false, true] {
        let mut body = hello();
        body["max_tokens"] = json!(7);
        body["stream"] = json!(stream);
        let resp = app.chat(&agent.token, body).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let id = execution_id(&resp);
        let text = resp.text().await.unwrap();
        assert!(text.len() > 200, "the provider sent far more than 7 tokens");
        let commit = app.ledger_event(&id, "usage.commit").await;
        assert_eq!(commit["usage"], "estimated", "stream: {stream}");
        assert_eq!(commit["completion_tokens"], 7, "stream: {stream}");
        assert_eq!(commit["completion_cap"], 7);
        assert!(commit["overrun"].is_null(), "stream: {stream}: {commit}");
        let hold = app.ledger_event(&id, "reservation.reserved").await["estimate_micro_usd"]
            .as_i64()
            .unwrap();
        assert!(commit["actual_micro_usd"].as_i64().unwrap() <= hold);
    }

    // A stream the client cuts after a few events: counted from what was received, capped too.
    app.mock.chunks.store(40, Ordering::SeqCst);
    app.mock.chunk_delay_ms.store(50, Ordering::SeqCst);
    let mut body = hello();
    body["max_tokens"] = json!(7);
    body["stream"] = json!(true);
    let resp = app.chat(&agent.token, body).await;
    let id = execution_id(&resp);
    let mut events = resp.bytes_stream();
    let mut received = String::new();
    while let Some(Ok(chunk)) = events.next().await {
        received.push_str(&String::from_utf8_lossy(&chunk));
        if received.matches("data: ").count() >= 6 {
            break;
        }
    }
    drop(events);
    let commit = app.await_ledger_event(&id, "usage.commit").await;
    assert_eq!(commit["stream_end"], "client_disconnected");
    assert_eq!(commit["usage"], "estimated");
    assert_eq!(commit["completion_tokens"], 7, "{commit}");
    assert_eq!(app.books(agent.id).await.1, 0);
    app.assert_books_audit().await;
}

#[tokio::test]
async fn ten_to_the_eighteen_reported_tokens_end_the_execution_and_the_audit_names_it() {
    let app = spawn_app().await;
    let agent = app.create_agent("absurd", "1.00", json!({})).await;
    app.mock
        .reported_completion_tokens
        .store(1_000_000_000_000_000_000, Ordering::SeqCst);
    let resp = app.chat(&agent.token, hello()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let id = execution_id(&resp);
    let cost = header_i64(&resp, "x-aex-cost-micro-usd");
    assert_eq!(cost, aex::gateway::pricing::MAX_CHARGE_MICRO_USD);
    let ((state, _), (r_state, _, actual)) = settled(&app, &id).await;
    assert_eq!(
        (state.as_str(), r_state.as_str()),
        ("COMMITTED", "COMMITTED")
    );
    assert_eq!(actual, cost);
    let commit = app.ledger_event(&id, "usage.commit").await;
    assert_eq!(commit["cost_saturated"], true);
    assert_eq!(commit["overrun"], "provider");
    assert_eq!(commit["budget_overrun"], true);
    let (spent, reserved, _) = app.books(agent.id).await;
    assert_eq!((spent, reserved), (cost, 0), "nothing stays reserved");
    // Over budget: the next call is refused, and the books still add up.
    assert_eq!(
        app.chat(&agent.token, hello()).await.status(),
        StatusCode::PAYMENT_REQUIRED
    );
    let report = aex::admin::audit::audit(&app.pool, 5, &app.settings.auth.keys)
        .await
        .unwrap();
    assert!(report.ok, "{report:#?}");
    assert!(
        report.provider_overruns.iter().any(|o| o.starts_with(&id)),
        "the audit names it: {:?}",
        report.provider_overruns
    );
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_settlement_that_cannot_be_written_ends_failed_with_the_hold_committed_and_a_cost_header()
{
    let app = spawn_app().await;
    let agent = app.create_agent("unwritable", "1.00", json!({})).await;
    refuse_settlements_with_reported_usage(&app).await;
    let resp = app.chat(&agent.token, hello()).await;
    assert_eq!(resp.status(), StatusCode::OK, "the client gets its answer");
    let id = execution_id(&resp);
    let cost = header_i64(&resp, "x-aex-cost-micro-usd");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["model"], "gpt-4o-mini");
    let ((state, reason), (r_state, estimate, actual)) = settled(&app, &id).await;
    assert_eq!(
        (state.as_str(), reason.as_deref()),
        ("FAILED", Some("settlement_failed"))
    );
    assert_eq!((r_state.as_str(), actual), ("COMMITTED", estimate));
    assert_eq!(cost, estimate);
    let commit = app.ledger_event(&id, "usage.commit").await;
    assert_eq!(
        (&commit["usage"], &commit["reason"]),
        (&json!("ambiguous"), &json!("settlement_failed"))
    );
    assert_eq!(app.books(agent.id).await, (estimate, 0, 1_000_000));
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_json_answer_to_a_stream_request_is_billed_from_its_usage_with_the_alias() {
    let app = spawn_app().await;
    let agent = app.create_agent("json-for-stream", "1.00", json!({})).await;
    app.mock.swap_content_type.store(true, Ordering::SeqCst);
    let mut body = hello();
    body["stream"] = json!(true);
    let resp = app.chat(&agent.token, body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let id = execution_id(&resp);
    let cost = header_i64(&resp, "x-aex-cost-micro-usd");
    let text = resp.text().await.unwrap();
    assert!(!text.contains("mock-gpt-4o-mini"), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["model"], "gpt-4o-mini");
    let commit = app.ledger_event(&id, "usage.commit").await;
    assert_eq!(commit["usage"], "reported");
    assert_eq!(commit["completion_tokens"], v["usage"]["completion_tokens"]);
    assert_eq!(cost, crate::helpers::mini_cost(&v["usage"]));
    assert_eq!(app.books(agent.id).await.0, cost);
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_stream_answer_to_a_plain_request_is_relayed_and_billed_from_its_usage_with_the_alias() {
    let app = spawn_app().await;
    let agent = app.create_agent("stream-for-json", "1.00", json!({})).await;
    app.mock.swap_content_type.store(true, Ordering::SeqCst);
    let resp = app.chat(&agent.token, hello()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let id = execution_id(&resp);
    let text = resp.text().await.unwrap();
    assert!(!text.contains("mock-gpt-4o-mini"), "{text}");
    assert!(text.contains("\"model\":\"gpt-4o-mini\""));
    let final_chunk = final_json_event(&text);
    let commit = app.ledger_event(&id, "usage.commit").await;
    assert_eq!(commit["usage"], "reported");
    assert_eq!(commit["completion_tokens"], 20);
    assert_eq!(
        final_chunk["aex"]["cost_micro_usd"], commit["actual_micro_usd"],
        "{final_chunk}"
    );
    assert_eq!(
        app.books(agent.id).await.0,
        commit["actual_micro_usd"].as_i64().unwrap()
    );
    app.assert_books_audit().await;
}

/// The last `data:` line of an SSE body that is JSON.
fn final_json_event(text: &str) -> Value {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .next_back()
        .unwrap()
}

#[tokio::test]
async fn a_streams_books_are_committed_before_its_last_event_which_carries_them() {
    let app = spawn_app().await;
    let agent = app
        .create_agent("read-your-writes", "1.00", json!({}))
        .await;
    let cases = [
        ("/v1/chat/completions", {
            let mut b = hello();
            b["stream"] = json!(true);
            b
        }),
        ("/v1/chat/completions", {
            let mut b = hello();
            b["stream"] = json!(true);
            b["stream_options"] = json!({"include_usage": true});
            b
        }),
        (
            "/v1/responses",
            json!({"model": "gpt-4o-mini", "input": "Write one line", "stream": true}),
        ),
    ];
    let mut spent = 0;
    for (path, body) in cases {
        let resp = app.post(path, &agent.token, body.clone(), &[]).await;
        let id = execution_id(&resp);
        let text = resp.text().await.unwrap();
        // No wait and no poll: the client holds the last byte, so the books are written.
        let (now_spent, reserved, _) = app.books(agent.id).await;
        let commit = app.ledger_event(&id, "usage.commit").await;
        let cost = commit["actual_micro_usd"].as_i64().unwrap();
        assert!(cost > 0);
        assert_eq!((now_spent, reserved), (spent + cost, 0), "{path} {body}");
        spent = now_spent;
        let last = final_json_event(&text);
        assert_eq!(last["aex"]["cost_micro_usd"], cost, "{path}: {last}");
        assert_eq!(
            last["aex"]["budget_remaining_micro_usd"],
            1_000_000 - spent,
            "{path}"
        );
        match path {
            "/v1/responses" => assert_eq!(last["type"], "response.completed"),
            _ if body.get("stream_options").is_some() => {
                assert_eq!(last["choices"], json!([]), "the usage chunk carries it");
                assert!(last["usage"].is_object());
            }
            _ => assert_eq!(last["choices"][0]["finish_reason"], "stop"),
        }
        let aex_events = text.matches("\"aex\"").count();
        assert_eq!(aex_events, 1, "only the final event: {text}");
        if path.contains("chat") {
            assert!(text.ends_with("data: [DONE]\n\n"));
        }
    }
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_tenants_spent_counts_every_commit_with_or_without_a_budget() {
    let app = spawn_app().await;
    let (tenant, token) = tenant_with_agent(&app, "unbudgeted", "worker").await;
    let tenant_books = || async {
        let t = app
            .op(
                Method::GET,
                &format!("/admin/tenants/{tenant}"),
                None,
                StatusCode::OK,
            )
            .await;
        (
            t["spent_micro_usd"].as_i64().unwrap(),
            t["reserved_micro_usd"].as_i64().unwrap(),
        )
    };
    for _ in 0..3 {
        assert_eq!(app.chat(&token, hello()).await.status(), StatusCode::OK);
    }
    let agent_spent: i64 =
        sqlx::query_scalar("SELECT spent_micro_usd FROM agents WHERE name = 'worker'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(agent_spent > 0);
    assert_eq!(tenant_books().await, (agent_spent, 0), "without a budget");
    app.assert_books_audit().await;

    // A budget set later starts from the truth.
    app.op(
        Method::PATCH,
        &format!("/admin/tenants/{tenant}"),
        Some(json!({"budget_usd": "1.00"})),
        StatusCode::OK,
    )
    .await;
    assert_eq!(tenant_books().await, (agent_spent, 0));
    assert_eq!(app.chat(&token, hello()).await.status(), StatusCode::OK);
    let (t_spent, _) = tenant_books().await;
    assert!(t_spent > agent_spent);
    let replay = app
        .op(Method::GET, "/admin/replay", None, StatusCode::OK)
        .await;
    let row = replay["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "unbudgeted")
        .unwrap()
        .clone();
    assert_eq!(row["ledger"]["spent_micro_usd"], t_spent, "{row}");
    assert_eq!(row["matches"], true);
    app.assert_books_audit().await;
}

/// A new tenant without a budget, and the token of a new agent of it with 5.00 USD.
async fn tenant_with_agent(app: &TestApp, tenant: &str, agent: &str) -> (String, String) {
    let (tenant, admin) = app.tenant_with_admin(tenant, json!({})).await;
    let (_, created) = app
        .admin_post(
            "/admin/agents",
            &admin,
            json!({"name": agent, "budget_usd": "5.00"}),
        )
        .await;
    (tenant, created["token"].as_str().unwrap().to_owned())
}

/// The failing checks of an audit, as `(invariant, name)`.
async fn failing_checks(app: &TestApp) -> Vec<(u8, String)> {
    let report = aex::admin::audit::audit(&app.pool, 5, &app.settings.auth.keys)
        .await
        .unwrap();
    report
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| (c.invariant, c.name.to_owned()))
        .collect()
}

#[tokio::test]
async fn the_audit_fails_on_an_execution_charged_above_its_hold_by_hand() {
    let app = spawn_app().await;
    let agent = app.create_agent("tampered", "1.00", json!({})).await;
    let resp = app.chat(&agent.token, hello()).await;
    let id = execution_id(&resp);
    resp.text().await.unwrap();
    assert!(failing_checks(&app).await.is_empty());
    // A tamperer with SQL raises one execution's cost above its hold, and keeps the agent's
    // counters consistent with it so the per-agent sums still agree.
    sqlx::raw_sql(&format!(
        "UPDATE reservations SET actual_micro_usd = estimate_micro_usd + 1000 \
           WHERE execution_id = (SELECT id FROM executions WHERE execution_key = '{id}'); \
         UPDATE agents SET spent_micro_usd = (SELECT sum(actual_micro_usd) FROM reservations \
           WHERE agent_id = agents.id AND state = 'COMMITTED'), \
           lifetime_spent_micro_usd = (SELECT sum(actual_micro_usd) FROM reservations \
           WHERE agent_id = agents.id AND state = 'COMMITTED') WHERE id = '{}';",
        agent.id
    ))
    .execute(&app.pool)
    .await
    .unwrap();
    let failing = failing_checks(&app).await;
    assert!(
        failing
            .iter()
            .any(|(n, name)| *n == 6 && name.contains("execution")),
        "{failing:?}"
    );
    assert!(
        !failing
            .iter()
            .any(|(n, name)| *n == 2 || name.starts_with("tenant spent")),
        "the live sums agree; the execution check (and the ledger fold) see it: {failing:?}"
    );
    let (ok, out) = run_cli_audit(&app).await;
    assert!(!ok, "aex audit exits non-zero: {out}");
    assert!(out.contains(&id), "{out}");
}

#[tokio::test]
async fn the_audit_fails_on_a_tenant_whose_spent_differs_from_its_agents() {
    let app = spawn_app().await;
    let agent = app.create_agent("honest", "1.00", json!({})).await;
    assert_eq!(
        app.chat(&agent.token, hello()).await.status(),
        StatusCode::OK
    );
    assert!(failing_checks(&app).await.is_empty());
    // A tenant's spent is the sum of its agents' lifetime counters: move one behind the books.
    sqlx::query(
        "UPDATE agents SET lifetime_spent_micro_usd = lifetime_spent_micro_usd - 1 WHERE id = $1",
    )
    .bind(agent.id)
    .execute(&app.pool)
    .await
    .unwrap();
    let failing = failing_checks(&app).await;
    assert_eq!(
        failing.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec![8, 8],
        "the live sums and the ledger fold both disagree: {failing:?}"
    );
    let (ok, out) = run_cli_audit(&app).await;
    assert!(!ok, "aex audit exits non-zero: {out}");
    assert!(out.contains("default: spent"), "{out}");
}

#[tokio::test]
async fn the_audit_fails_on_a_tenant_over_its_budget_without_a_provider_overrun() {
    let app = spawn_app().await;
    let (tenant, token) = tenant_with_agent(&app, "capped", "spender").await;
    for _ in 0..3 {
        assert_eq!(app.chat(&token, hello()).await.status(), StatusCode::OK);
    }
    // A budget set below what was already spent: those commits were never held against it.
    app.op(
        Method::PATCH,
        &format!("/admin/tenants/{tenant}"),
        Some(json!({"budget_usd": "0.000001"})),
        StatusCode::OK,
    )
    .await;
    assert!(failing_checks(&app).await.is_empty());
    // A tamperer makes those commits look as if the tenant's budget had held them.
    sqlx::query("UPDATE reservations SET holds_tenant = true WHERE tenant_id = $1::uuid")
        .bind(&tenant)
        .execute(&app.pool)
        .await
        .unwrap();
    let failing = failing_checks(&app).await;
    assert!(
        failing
            .iter()
            .any(|(n, name)| *n == 6 && name.starts_with("a tenant's spent")),
        "{failing:?}"
    );
}

/// Runs `aex audit` (the binary) against the test database: whether it succeeded, and its output.
async fn run_cli_audit(app: &TestApp) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_aex"))
        .arg("audit")
        .env("AEX_DATABASE_URL", &app.db.url)
        .env("AEX_AUTH__KEYS__K1", crate::helpers::KEY)
        .env("AEX_HOME", app.dir.path())
        .output()
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test]
async fn a_key_whose_settlement_fell_back_is_not_run_and_charged_again() {
    let app = spawn_app().await;
    let agent = app
        .create_agent("unwritable-keyed", "1.00", json!({}))
        .await;
    refuse_settlements_with_reported_usage(&app).await;
    let key = [("Idempotency-Key", "answered-once")];
    let first = app
        .post("/v1/chat/completions", &agent.token, hello(), &key)
        .await;
    assert_eq!(first.status(), StatusCode::OK, "the client got its answer");
    let charged = app.books(agent.id).await.0;
    // The client retries (it lost the answer): the provider must not be called again.
    let again = app
        .post("/v1/chat/completions", &agent.token, hello(), &key)
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let v: Value = again.json().await.unwrap();
    assert_eq!(v["error"]["code"], "idempotency_conflict");
    assert_eq!(app.mock.calls(), 1, "one provider call for the key");
    assert_eq!(app.books(agent.id).await.0, charged, "charged once");
    app.assert_books_audit().await;
}

/// A fault in the database: any settlement with the provider's usage is refused.
async fn refuse_settlements_with_reported_usage(app: &crate::helpers::TestApp) {
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_reported() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.usage_source = 'reported' THEN RAISE EXCEPTION 'injected fault'; END IF; \
           RETURN NEW; END $$; \
         CREATE TRIGGER refuse_reported BEFORE UPDATE ON executions \
           FOR EACH ROW EXECUTE FUNCTION refuse_reported();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
}
