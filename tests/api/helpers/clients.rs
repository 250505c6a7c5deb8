//! Calls made as a client makes them: agents created through the admin API, governed calls and
//! admin calls over HTTP.

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::server::TestApp;

/// An agent created through the admin API.
pub struct Agent {
    pub id: uuid::Uuid,
    pub token: String,
}

/// The chat request most tests send: one short user message to `gpt-4o-mini`.
pub fn hello() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello to the ledger"}]})
}

/// `base` with the fields of `extra` added (both JSON objects).
pub fn merged(mut base: Value, extra: &Value) -> Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    base
}

/// The execution id a governed call's answer names (`x-aex-execution-id`).
pub fn execution_id(resp: &reqwest::Response) -> String {
    resp.headers()["x-aex-execution-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Creates an agent through the admin API of the server at `base`.
pub async fn create_agent_at(
    base: &str,
    operator_token: &str,
    name: &str,
    budget_usd: &str,
    extra: Value,
) -> Agent {
    let body = merged(
        json!({"name": name, "budget_usd": budget_usd, "rpm": 100000}),
        &extra,
    );
    let resp = reqwest::Client::new()
        .post(format!("{base}/admin/agents"))
        .bearer_auth(operator_token)
        .json(&body)
        .send()
        .await
        .expect("create agent");
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    let v: Value = resp.json().await.expect("json");
    Agent {
        id: v["agent"]["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("uuid"),
        token: v["token"].as_str().expect("token").to_owned(),
    }
}

/// Sends `count` chat requests at once, spread round-robin over the servers at `bases`; the
/// statuses in order.
pub async fn burst(bases: &[String], token: &str, count: usize) -> Vec<StatusCode> {
    let http = reqwest::Client::new();
    futures::future::join_all((0..count).map(|i| {
        let req = http
            .post(format!("{}/v1/chat/completions", bases[i % bases.len()]))
            .bearer_auth(token)
            .json(&hello());
        async move { req.send().await.expect("request sent").status() }
    }))
    .await
}

impl TestApp {
    pub async fn create_agent(&self, name: &str, budget_usd: &str, extra: Value) -> Agent {
        create_agent_at(&self.base, &self.operator_token, name, budget_usd, extra).await
    }

    pub async fn chat(&self, token: &str, body: Value) -> reqwest::Response {
        self.post("/v1/chat/completions", token, body, &[]).await
    }

    pub async fn post(
        &self,
        path: &str,
        token: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("request sent")
    }

    /// A POST of `body` with `token`: the status and the answer as JSON (`null` when it is not).
    pub async fn send_json(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let resp = self.post(path, token, body, &[]).await;
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A GET, with a bearer token when given.
    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request sent")
    }

    /// Starts a chat completion on its own task, to look at the books while it is in flight.
    pub fn spawn_chat(&self, token: &str) -> tokio::task::JoinHandle<reqwest::Response> {
        let req = self
            .http
            .post(format!("{}/v1/chat/completions", self.base))
            .bearer_auth(token)
            .json(&hello());
        tokio::spawn(async move { req.send().await.expect("request sent") })
    }

    /// An admin API call with `token`: the status and the JSON body (`Null` when empty).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("admin request sent");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `admin` with a POST body.
    pub async fn admin_post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.admin(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    /// `admin` with the operator token, asserting the expected status.
    pub async fn op(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        expect: StatusCode,
    ) -> Value {
        let (status, value) = self.admin(method, path, &self.operator_token, body).await;
        assert_eq!(status, expect, "{path}: {value}");
        value
    }

    /// Creates a tenant and an admin token for it; returns `(tenant id, admin token)`.
    pub async fn tenant_with_admin(&self, name: &str, extra: Value) -> (String, String) {
        let body = merged(json!({"name": name}), &extra);
        let t = self
            .op(
                reqwest::Method::POST,
                "/admin/tenants",
                Some(body),
                StatusCode::CREATED,
            )
            .await;
        let id = t["id"].as_str().expect("tenant id").to_owned();
        let issued = self
            .op(
                reqwest::Method::POST,
                &format!("/admin/tokens?tenant_id={id}"),
                Some(json!({"scope": "admin", "subject": format!("{name}-admin")})),
                StatusCode::CREATED,
            )
            .await;
        (id, issued["token"].as_str().expect("token").to_owned())
    }
}
