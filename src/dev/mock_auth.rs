//! The mock's door, as a real provider keeps it: when a test sets [`RequiredAuth`], every call
//! (the model list included) must carry the key in exactly the expected header and every fixed
//! header and query parameter the provider wants, or it is refused with 401 in the provider's
//! error shape — Azure wants `api-key` and `api-version`, Anthropic `x-api-key` and
//! `anthropic-version`, and neither accepts a Bearer key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// The door of one mock: what it requires (nothing by default) and the calls it refused.
#[derive(Debug, Default)]
pub struct AuthGate {
    required: Mutex<Option<RequiredAuth>>,
    refused: AtomicU64,
}

impl AuthGate {
    /// From now on, every call must carry `required`.
    pub fn require(&self, required: RequiredAuth) {
        if let Ok(mut r) = self.required.lock() {
            *r = Some(required);
        }
    }

    /// Calls refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }
}

/// What every call must carry.
#[derive(Debug, Clone, Default)]
pub struct RequiredAuth {
    /// The key's header (lower case) and the exact value expected in it (`Bearer k` for a
    /// Bearer key). Every other key header (`authorization`, `api-key`, `x-api-key`) must be
    /// absent: a key sent twice, or in the wrong header, is refused.
    pub header: String,
    pub value: String,
    /// Fixed headers and query parameters that must be present with these values.
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
}

impl RequiredAuth {
    /// Azure OpenAI: `api-key: <key>` and `?api-version=<version>`.
    pub fn azure(key: &str, api_version: &str) -> RequiredAuth {
        RequiredAuth {
            header: "api-key".into(),
            value: key.into(),
            headers: vec![],
            query: vec![("api-version".into(), api_version.into())],
        }
    }

    /// Anthropic: `x-api-key: <key>` and `anthropic-version: <version>`.
    pub fn anthropic(key: &str, version: &str) -> RequiredAuth {
        RequiredAuth {
            header: "x-api-key".into(),
            value: key.into(),
            headers: vec![("anthropic-version".into(), version.into())],
            query: vec![],
        }
    }

    /// Why `req` does not pass, if it does not.
    fn refusal(&self, req: &Request) -> Option<String> {
        let headers = req.headers();
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if text(&self.header) != Some(self.value.as_str()) {
            return Some(format!("missing or invalid {}", self.header));
        }
        for other in ["authorization", "api-key", "x-api-key"] {
            if other != self.header && headers.contains_key(other) {
                return Some(format!("unexpected {other} header"));
            }
        }
        for (name, value) in &self.headers {
            if text(name) != Some(value.as_str()) {
                return Some(format!("missing or invalid {name} header"));
            }
        }
        let query: Vec<(String, String)> =
            form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        for pair in &self.query {
            if !query.contains(pair) {
                return Some(format!("missing or invalid query parameter {}", pair.0));
            }
        }
        None
    }
}

/// The middleware: refuses a call that does not carry what the gate requires.
pub async fn check(State(gate): State<Arc<AuthGate>>, req: Request, next: Next) -> Response {
    let required = gate.required.lock().ok().and_then(|r| r.clone());
    let Some(refusal) = required.and_then(|r| r.refusal(&req)) else {
        return next.run(req).await;
    };
    gate.refused.fetch_add(1, Ordering::SeqCst);
    let body = if req.uri().path().starts_with("/v1/messages") {
        json!({"type": "error", "error": {"type": "authentication_error", "message": refusal}})
    } else {
        json!({"error": {"message": refusal, "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})
    };
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}
