//! Bad input: every malformed request is a clear 4xx in the documented shape, and nothing is
//! written — no execution, no ledger event, no money moved, no provider call.

use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{hello, spawn_app_with_models, Agent, TestApp, PATIENCE};

/// A model without an output limit of its own: only the request bounds its cap.
const UNBOUNDED: &str = r#"
[models."unbounded"]
provider = "mock"
upstream_model = "mock-unbounded"
input_usd_per_million = "0.15"
output_usd_per_million = "0.60"
capabilities = ["chat", "streaming", "responses"]
"#;

/// Everything a refused request must leave untouched.
#[derive(Debug, PartialEq, Eq)]
struct Written {
    events: i64,
    executions: i64,
    books: (i64, i64, i64),
    provider_calls: u64,
}

async fn written(app: &TestApp, agent: &Agent) -> Written {
    let (events, executions): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM event_log), (SELECT count(*) FROM executions)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    Written {
        events,
        executions,
        books: app.books(agent.id).await,
        provider_calls: app.mock.calls(),
    }
}

async fn setup() -> (TestApp, Agent, Written) {
    let app = spawn_app_with_models(UNBOUNDED).await;
    let agent = app.create_agent("fuzzed", "1.00", json!({})).await;
    let before = written(&app, &agent).await;
    (app, agent, before)
}

/// Sends raw bytes with an optional content type; returns the status and the JSON body.
async fn send(
    app: &TestApp,
    path: &str,
    token: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let mut req = app
        .http
        .post(format!("{}{path}", app.base))
        .bearer_auth(token)
        .body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The OpenAI error shape with this status, code and param.
fn assert_openai_error(
    got: &(u16, Value),
    status: u16,
    code: &str,
    param: Option<&str>,
    what: &str,
) {
    let (s, body) = got;
    assert_eq!(*s, status, "{what}: {body}");
    let e = &body["error"];
    assert_eq!(e["code"], code, "{what}: {body}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()) && e["type"].is_string(),
        "{what}: {body}"
    );
    assert_eq!(e["param"].as_str(), param, "{what}: {body}");
}

#[tokio::test]
async fn unparseable_bodies_and_wrong_content_types_are_400_and_write_nothing() {
    let (app, agent, before) = setup().await;
    let deep_array = format!(
        "{{\"model\": \"gpt-4o-mini\", \"messages\": [{{\"role\": \"user\", \"content\": {}\"x\"{}}}]}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let deep_object = format!(
        "{{\"model\": \"gpt-4o-mini\", \"messages\": [{{\"role\": \"user\", \"content\": \"x\"}}], \"metadata\": {}1{}}}",
        "{\"a\": ".repeat(200),
        "}".repeat(200)
    );
    let bad_utf8 =
        b"{\"model\": \"gpt-4o-mini\", \"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\xc3\"}]}"
            .to_vec();
    let json = Some("application/json");
    for (what, body) in [
        ("arrays nested 10,000 deep", deep_array.into_bytes()),
        ("objects nested 200 deep", deep_object.into_bytes()),
        ("invalid UTF-8 in a string", bad_utf8),
        ("an empty body", Vec::new()),
        ("a lone string", b"\"hello\"".to_vec()),
        ("null", b"null".to_vec()),
        (
            "trailing garbage",
            b"{\"model\": \"gpt-4o-mini\"} {}".to_vec(),
        ),
    ] {
        for path in ["/v1/chat/completions", "/v1/responses", "/v1/embeddings"] {
            let got = send(&app, path, &agent.token, json, body.clone()).await;
            assert_openai_error(
                &got,
                400,
                "invalid_request",
                None,
                &format!("{what} on {path}"),
            );
        }
    }
    let valid = serde_json::to_vec(&hello()).unwrap();
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonx"),
    ] {
        for path in [
            "/v1/chat/completions",
            "/openai/v1/responses",
            "/v1/embeddings",
        ] {
            let got = send(&app, path, &agent.token, ct, valid.clone()).await;
            assert_openai_error(
                &got,
                400,
                "invalid_request",
                None,
                &format!("{ct:?} on {path}"),
            );
        }
    }
    assert_eq!(written(&app, &agent).await, before);
    // The check is on the media type only: parameters and case are fine.
    let got = send(
        &app,
        "/v1/chat/completions",
        &agent.token,
        Some("Application/JSON; charset=utf-8"),
        valid,
    )
    .await;
    assert_eq!(got.0, 200, "{}", got.1);
}

/// Requests that are JSON objects but carry a field of the wrong type or value.
fn wrong_types() -> Vec<(&'static str, Value, &'static str)> {
    let chat = |field: &str, v: Value| {
        let mut b = hello();
        b[field] = v;
        b
    };
    let responses = |field: &str, v: Value| {
        let mut b = json!({"model": "gpt-4o-mini", "input": "hi"});
        b[field] = v;
        b
    };
    let embeddings = |v: Value| json!({"model": "text-embedding-3-small", "input": v});
    let c = "/v1/chat/completions";
    let r = "/v1/responses";
    let mut cases = Vec::new();
    for v in [
        json!(7),
        Value::Null,
        json!([]),
        json!({}),
        json!(""),
        json!(true),
    ] {
        cases.push((c, chat("model", v.clone()), "model"));
        cases.push((r, responses("model", v.clone()), "model"));
        cases.push(("/v1/embeddings", json!({"model": v, "input": "x"}), "model"));
    }
    for v in [
        json!("hi"),
        json!({}),
        json!([1]),
        json!(["x"]),
        json!([]),
        Value::Null,
        json!(3),
    ] {
        cases.push((c, chat("messages", v), "messages"));
    }
    for v in [json!("true"), json!(1), json!({}), json!([true])] {
        cases.push((c, chat("stream", v.clone()), "stream"));
        cases.push((r, responses("stream", v), "stream"));
    }
    let bad_caps = [
        json!("5"),
        json!(1.5),
        json!(-1),
        json!(0),
        json!(true),
        json!({}),
        json!([5]),
        json!(1e300),
    ];
    for v in bad_caps.iter().cloned() {
        cases.push((c, chat("max_tokens", v.clone()), "max_tokens"));
        cases.push((
            c,
            chat("max_completion_tokens", v.clone()),
            "max_completion_tokens",
        ));
        cases.push((r, responses("max_output_tokens", v), "max_output_tokens"));
    }
    for v in [
        json!("yes"),
        json!(1),
        json!([]),
        json!(true),
        json!({"include_usage": "yes"}),
    ] {
        let mut streamed = chat("stream", json!(true));
        streamed["stream_options"] = v;
        cases.push((c, streamed, "stream_options"));
    }
    for v in [
        json!(5),
        json!({}),
        json!(""),
        json!([]),
        Value::Null,
        json!(false),
    ] {
        cases.push((r, responses("input", v.clone()), "input"));
        cases.push(("/v1/embeddings", embeddings(v), "input"));
    }
    cases.push((
        "/v1/embeddings",
        json!({"model": "text-embedding-3-small", "input": "x", "stream": true}),
        "stream",
    ));
    cases
}

#[tokio::test]
async fn a_wrong_type_for_any_field_aex_reads_is_400_naming_the_field() {
    let (app, agent, before) = setup().await;
    let rejected = |path: &'static str, body: Value, field: &'static str| {
        let (app, token) = (&app, &agent.token);
        async move {
            let got = send(app, path, token, Some("application/json"), body.to_string()).await;
            let what = format!("{body} on {path}");
            assert_openai_error(&got, 400, "invalid_request", Some(field), &what);
        }
    };
    for (path, body, field) in wrong_types() {
        rejected(path, body, field).await;
    }
    // Output caps beyond any model's limit, on a model that has none of its own.
    for cap in [
        json!(u64::MAX),
        json!(i64::MAX),
        json!(1u64 << 53),
        json!(1u64 << 31),
    ] {
        let mut body = hello();
        body["model"] = json!("unbounded");
        body["max_tokens"] = cap;
        rejected("/v1/chat/completions", body, "max_tokens").await;
    }
    assert_eq!(written(&app, &agent).await, before);
}

/// Sends one request over a raw socket (so header bytes reqwest refuses can be sent) and returns
/// the status code and body.
async fn raw_request(app: &TestApp, token: &str, header_lines: &[u8]) -> (u16, String) {
    let addr = app.base.trim_start_matches("http://");
    let body = hello().to_string();
    let mut request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(header_lines);
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body.as_bytes());
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(&request).await.unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        response
    };
    let response = tokio::time::timeout(PATIENCE, exchange)
        .await
        .expect("the server answers a raw request");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn header_injection_attempts_and_oversized_keys_are_refused_before_anything_is_written() {
    let (app, agent, before) = setup().await;
    let url = format!("{}/v1/chat/completions", app.base);
    let long = "k".repeat(256);
    let mut cases: Vec<(&str, HeaderValue, u16, &str)> = Vec::new();
    for name in ["idempotency-key", "x-aex-execution-id"] {
        cases.push((
            name,
            HeaderValue::from_bytes("clé-ünïcode".as_bytes()).unwrap(),
            400,
            "invalid_request",
        ));
        cases.push((
            name,
            HeaderValue::from_bytes(b"tab\there").unwrap(),
            400,
            "invalid_request",
        ));
        cases.push((
            name,
            HeaderValue::from_str(&long).unwrap(),
            400,
            "invalid_request",
        ));
    }
    for v in ["not-a-uuid", "00000000-0000-0000-0000-000000000000"] {
        cases.push((
            "x-aex-tenant-id",
            HeaderValue::from_str(v).unwrap(),
            403,
            "permission_denied",
        ));
    }
    cases.push((
        "x-aex-tenant-id",
        HeaderValue::from_bytes("ténant".as_bytes()).unwrap(),
        403,
        "permission_denied",
    ));
    for (name, value, status, code) in cases {
        let resp = app
            .http
            .post(&url)
            .bearer_auth(&agent.token)
            .header(HeaderName::from_static(name), value.clone())
            .json(&hello())
            .send()
            .await
            .unwrap();
        let got = (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        );
        assert_openai_error(&got, status, code, None, &format!("{name}: {value:?}"));
    }

    // CR, LF-folding and NUL inside a value never reach AEX: the HTTP parser refuses the request.
    for line in [
        &b"Idempotency-Key: abc\rX-Injected: 1\r\n"[..],
        b"Idempotency-Key: abc\r\n folded: 1\r\n",
        b"X-AEX-Execution-Id: a\x00b\r\n",
        b"X-AEX-Tenant-Id: x\r\r\n",
    ] {
        let (status, body) = raw_request(&app, &agent.token, line).await;
        assert_eq!(status, 400, "{:?}: {body}", String::from_utf8_lossy(line));
    }
    // A raw request with sane headers goes through the same socket path, so the above were
    // refused for their bytes and not for the way they were sent.
    let (status, body) = raw_request(&app, &agent.token, b"Idempotency-Key: raw-ok\r\n").await;
    assert_eq!(status, 200, "{body}");
    let after = written(&app, &agent).await;
    assert_eq!(after.executions, before.executions + 1);
    assert_eq!(after.provider_calls, before.provider_calls + 1);
    app.assert_books_audit().await;
}

#[tokio::test]
async fn admin_create_agent_with_wrong_types_is_400_naming_the_field() {
    let (app, agent, before) = setup().await;
    let url = format!("{}/admin/agents", app.base);
    for (body, field) in [
        (json!({"name": 7, "budget_usd": "1.00"}), "name"),
        (json!({"name": "x", "budget_usd": 5}), "budget_usd"),
        (
            json!({"name": "x", "budget_usd": "1.00", "rpm": "ten"}),
            "rpm",
        ),
        (
            json!({"name": "x", "budget_usd": "1.00", "rpm": 1.5}),
            "rpm",
        ),
        (
            json!({"name": "x", "budget_usd": "1.00", "tpm": -0.5}),
            "tpm",
        ),
        (
            json!({"name": "x", "budget_usd": "1.00", "period": 3}),
            "period",
        ),
        (
            json!({"name": "x", "budget_usd": "1.00", "token_ttl_hours": -1}),
            "token_ttl_hours",
        ),
        (
            json!({"name": "x", "budget_usd": "1.00", "policy": "open"}),
            "policy",
        ),
        (
            json!({"name": "x", "budget_usd": "1.00", "policy": {"allow_streaming": "no"}}),
            "policy.allow_streaming",
        ),
        (
            json!({"name": "x", "budget_usd": "1.00", "policy": {"allowed_models": "gpt"}}),
            "policy.allowed_models",
        ),
    ] {
        let resp = app
            .http
            .post(&url)
            .bearer_auth(&app.operator_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_request", "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{body}: {v}");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let agents: i64 = sqlx::query_scalar("SELECT count(*) FROM agents")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(agents, 1, "no agent was created");
    assert_eq!(written(&app, &agent).await, before);
}
