//! `aex doctor --compat --token T`: the seed's compatibility checks against a running server,
//! made as an OpenAI client makes them. Liveness and readiness, a bad token refused in OpenAI's
//! error shape, the token's model list, one tiny chat completion (charged to the token's agent)
//! with the headers AEX promises (SPEC §3), and its idempotent replay.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::Check;

/// A chat completion may take a provider a while; everything else answers at once.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs every check against the server at `base` with the agent token `token`; calls `model`,
/// else the first model the token may use that is not an embedding model.
pub async fn check(base: &str, token: &str, model: Option<&str>) -> Vec<Check> {
    let base = base.trim_end_matches('/');
    let http = match reqwest::Client::builder().timeout(CALL_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            return vec![Check::fail(
                "compat",
                format!("cannot build an HTTP client: {e}"),
                "check the machine's TLS roots",
            )]
        }
    };
    let mut checks = vec![health(&http, base).await];
    if checks[0].status == super::Status::Fail {
        return checks;
    }
    checks.push(ready(&http, base).await);
    checks.push(bad_token(&http, base).await);
    let (list, chosen) = models(&http, base, token, model).await;
    checks.push(list);
    if let Some(model) = chosen {
        checks.extend(chat(&http, base, token, &model).await);
    }
    checks
}

async fn get(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> Result<(StatusCode, Value), String> {
    let mut request = http.get(url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request
        .send()
        .await
        .map_err(|e| crate::telemetry::error_chain(&e))?;
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

async fn health(http: &reqwest::Client, base: &str) -> Check {
    match get(http, &format!("{base}/health"), None).await {
        Ok((StatusCode::OK, body)) if body["status"] == "ok" => Check::ok(
            "health",
            format!(
                "aex {} up, routing table version {}",
                body["version"].as_str().unwrap_or("?"),
                body["config_version"]
            ),
        ),
        Ok((status, body)) => Check::fail(
            "health",
            format!("GET {base}/health answered {status}: {body}"),
            "is this URL an AEX server? (--url, AEX_URL or [cli] url)",
        ),
        Err(e) => Check::fail(
            "health",
            format!("GET {base}/health failed: {e}"),
            "start the server (`aex daemon start`) or pass its address with --url",
        ),
    }
}

async fn ready(http: &reqwest::Client, base: &str) -> Check {
    match get(http, &format!("{base}/ready"), None).await {
        Ok((StatusCode::OK, body)) if body["ready"] == true => {
            if body["checks"]["least_privilege"] == false {
                Check::warn(
                    "ready",
                    "ready, but the server's database role could disable the ledger's triggers",
                    "connect as a runtime role (database_url) and migrate as the owner (migration_database_url)",
                )
            } else {
                Check::ok("ready", "ready to take traffic")
            }
        }
        Ok((status, body)) => {
            let not = body["checks"]
                .as_object()
                .map(|c| {
                    c.iter()
                        .filter(|(k, v)| (*v == false) != (k.as_str() == "draining"))
                        .filter(|(k, _)| k.as_str() != "least_privilege")
                        .map(|(k, _)| k.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            Check::fail(
                "ready",
                format!("GET {base}/ready answered {status}; failing: {not}"),
                "run `aex doctor` where the server runs: it says what each failing check needs",
            )
        }
        Err(e) => Check::fail(
            "ready",
            format!("GET {base}/ready failed: {e}"),
            "check the server's log",
        ),
    }
}

/// A made-up token is refused with 401 and OpenAI's error object, which SDKs turn into their
/// authentication error.
async fn bad_token(http: &reqwest::Client, base: &str) -> Check {
    match get(
        http,
        &format!("{base}/v1/models"),
        Some("aex-doctor-not-a-token"),
    )
    .await
    {
        Ok((StatusCode::UNAUTHORIZED, body)) if body["error"]["message"].is_string() => Check::ok(
            "auth",
            "a bad token is refused with 401 in OpenAI's error shape",
        ),
        Ok((status, body)) => Check::fail(
            "auth",
            format!("a bad token got {status}: {body}"),
            "a proxy in front of AEX may be answering for it; call AEX directly",
        ),
        Err(e) => Check::fail(
            "auth",
            format!("GET {base}/v1/models failed: {e}"),
            "check the server's log",
        ),
    }
}

async fn models(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    wanted: Option<&str>,
) -> (Check, Option<String>) {
    let (status, body) = match get(http, &format!("{base}/v1/models"), Some(token)).await {
        Ok(r) => r,
        Err(e) => {
            return (
                Check::fail(
                    "models",
                    format!("GET {base}/v1/models failed: {e}"),
                    "check the server's log",
                ),
                None,
            )
        }
    };
    if status != StatusCode::OK {
        return (
            Check::fail(
                "models",
                format!("GET /v1/models with the token answered {status}: {}", body["error"]["message"]),
                "use an agent token with execution scope (`aex agent create` prints one; `aex agent rotate-token` gives a new one)",
            ),
            None,
        );
    }
    let ids: Vec<String> = body["data"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|m| m["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let chosen = match wanted {
        Some(m) if ids.iter().any(|id| id == m) => Some(m.to_owned()),
        Some(m) => {
            return (
                Check::fail(
                    "models",
                    format!("the token may not use {m}; it may use: {}", ids.join(", ")),
                    "pick one of those with --model, or allow the model in the agent's policy",
                ),
                None,
            )
        }
        None => ids.iter().find(|id| !id.contains("embed")).cloned(),
    };
    match chosen {
        Some(m) => (
            Check::ok("models", format!("the token may use {} models: {}", ids.len(), ids.join(", "))),
            Some(m),
        ),
        None => (
            Check::fail(
                "models",
                format!("the token may use no chat model (it may use: {})", ids.join(", ")),
                "add a chat model to the routing table or the agent's policy (`aex agent update --models`)",
            ),
            None,
        ),
    }
}

/// One tiny completion and its replay under the same idempotency key.
async fn chat(http: &reqwest::Client, base: &str, token: &str, model: &str) -> Vec<Check> {
    let key = format!("aex-doctor-{}", uuid::Uuid::new_v4());
    let body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "Reply with one word."}],
        "max_tokens": 1
    });
    let send = || {
        http.post(format!("{base}/v1/chat/completions"))
            .bearer_auth(token)
            .header("Idempotency-Key", &key)
            .json(&body)
            .send()
    };
    let first = match send().await {
        Ok(r) => r,
        Err(e) => {
            return vec![Check::fail(
                "chat",
                format!(
                    "POST /v1/chat/completions failed: {}",
                    crate::telemetry::error_chain(&e)
                ),
                "check the server's log",
            )]
        }
    };
    let status = first.status();
    let headers = first.headers().clone();
    let answer: Value = first.json().await.unwrap_or(Value::Null);
    if status != StatusCode::OK {
        let message = answer["error"]["message"]
            .as_str()
            .unwrap_or("no error message");
        let fix = if status == StatusCode::BAD_GATEWAY || status == StatusCode::GATEWAY_TIMEOUT {
            "the provider failed: run `aex doctor` where the server runs (provider keys, base URLs, models)"
        } else if status == StatusCode::PAYMENT_REQUIRED {
            "the agent's budget is spent: `aex agent topup`"
        } else {
            "see the error message; `aex replay --execution <key>` shows what AEX recorded"
        };
        return vec![Check::fail(
            "chat",
            format!("{model}: {status}: {message} (execution {key})"),
            fix,
        )];
    }
    let mut checks = Vec::new();
    let shape_ok = answer["object"] == "chat.completion"
        && answer["choices"][0]["message"].is_object()
        && answer["usage"]["total_tokens"].is_u64()
        && answer["model"] == model;
    checks.push(if shape_ok {
        Check::ok(
            "chat",
            format!("{model} answered a chat completion with usage"),
        )
    } else {
        Check::fail(
            "chat",
            format!(
                "{model} answered 200 but not a chat completion with usage and its alias: {answer}"
            ),
            "the provider behind this model is not OpenAI-compatible",
        )
    });
    checks.push(aex_headers(&headers, &key));
    checks.push(match send().await {
        Ok(again) => {
            let replayed = again
                .headers()
                .get("idempotent-replayed")
                .and_then(|v| v.to_str().ok())
                == Some("true");
            let same = again.json::<Value>().await.ok().as_ref() == Some(&answer);
            if replayed && same {
                Check::ok("idempotency", "the same Idempotency-Key replays the stored answer, not charged again")
            } else {
                Check::fail(
                    "idempotency",
                    format!("a repeat with the same Idempotency-Key was not a replay (Idempotent-Replayed: {replayed}, same body: {same})"),
                    "a proxy in front of AEX may be dropping the Idempotency-Key header",
                )
            }
        }
        Err(e) => Check::fail("idempotency", format!("the repeat failed: {e}"), "check the server's log"),
    });
    checks
}

/// The response headers SPEC §3 promises on a non-streaming call.
fn aex_headers(headers: &HeaderMap, key: &str) -> Check {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut missing = Vec::new();
    for name in ["x-aex-cost-micro-usd", "x-aex-budget-remaining-micro-usd"] {
        if value(name).and_then(|v| v.parse::<i64>().ok()).is_none() {
            missing.push(name.to_owned());
        }
    }
    if value("x-aex-execution-id") != Some(key) {
        missing.push("x-aex-execution-id (the Idempotency-Key)".to_owned());
    }
    if missing.is_empty() {
        Check::ok(
            "headers",
            format!(
                "X-AEX-Execution-Id, X-AEX-Cost-Micro-USD ({}), X-AEX-Budget-Remaining-Micro-USD ({})",
                value("x-aex-cost-micro-usd").unwrap_or_default(),
                value("x-aex-budget-remaining-micro-usd").unwrap_or_default()
            ),
        )
    } else {
        Check::fail(
            "headers",
            format!("missing or malformed: {}", missing.join(", ")),
            "a proxy in front of AEX may be stripping X-AEX-* headers; call AEX directly",
        )
    }
}
