//! Anthropic's Messages API: `POST /v1/messages` and `POST /v1/messages/count_tokens`, governed
//! like chat. Two layers make the route speak Anthropic: the agent token is accepted as
//! `x-api-key` (as Anthropic's SDKs and Claude Code send it) or as a Bearer token — both at once
//! only when they are the same token — and every error leaves in Anthropic's shape
//! `{"type": "error", "error": {"type", "message"}}`, whatever produced it (auth, body, admission,
//! provider).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::OpenAiError;
use super::extract::{AgentCaller, OpenAiBody};
use super::openai::governed;
use crate::app_state::AppState;
use crate::domain::CallRoute;
use crate::gateway::messages;

/// Anthropic's error `type` for an HTTP status.
fn error_type(status: u16) -> &'static str {
    match status {
        400 | 409 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 | 423 => "permission_error",
        404 => "not_found_error",
        408 | 504 => "timeout_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// `body` (any error answer) in Anthropic's shape: an answer already in it (a native provider's)
/// stays as it is; AEX's own code, when there is one, is kept as `error.code`.
pub fn anthropic_error_body(status: u16, body: &[u8]) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if parsed
        .as_ref()
        .is_some_and(|v| v.get("type").and_then(Value::as_str) == Some("error"))
    {
        return body.to_vec();
    }
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    let mut shaped =
        json!({"type": "error", "error": {"type": error_type(status), "message": message}});
    if let Some(code) = error.and_then(|e| e.get("code")).filter(|c| c.is_string()) {
        shaped["error"]["code"] = code.clone();
    }
    shaped.to_string().into_bytes()
}

/// Puts every error answer of the Messages routes in Anthropic's shape.
pub async fn error_shape(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status().as_u16();
    if status < 400 {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Error bodies are small and complete (a stream never starts with an error status).
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let shaped = anthropic_error_body(status, &bytes);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(shaped))
}

/// Accepts the agent token as `x-api-key`: it becomes the Bearer token the agent extractor reads.
/// A request carrying two different credentials is refused, whichever would have passed.
pub async fn x_api_key(mut req: Request, next: Next) -> Response {
    let Some(key) = req.headers().get("x-api-key").cloned() else {
        return next.run(req).await;
    };
    let bearer = key
        .to_str()
        .ok()
        .and_then(|k| HeaderValue::from_str(&format!("Bearer {}", k.trim())).ok());
    let Some(bearer) = bearer else {
        return refuse("x-api-key must be printable ASCII");
    };
    match req.headers().get(header::AUTHORIZATION) {
        None => {
            req.headers_mut().insert(header::AUTHORIZATION, bearer);
        }
        Some(existing) if existing == bearer => {}
        Some(_) => {
            return refuse("x-api-key and Authorization carry different credentials: send one");
        }
    }
    next.run(req).await
}

fn refuse(message: &str) -> Response {
    let body =
        json!({"type": "error", "error": {"type": "authentication_error", "message": message}});
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

/// Create a message (Anthropic Messages API), governed by budget, policy and the ledger.
#[utoipa::path(
    post,
    path = "/v1/messages",
    tag = "anthropic",
    request_body(content = Object, description = "Anthropic's Messages request; `max_tokens` is required and is the hold's output cap"),
    params(
        ("x-api-key" = Option<String>, Header, description = "The agent token (or send it as a Bearer token)"),
        ("Idempotency-Key" = Option<String>, Header, description = "Execution identity for idempotent replay (at most 255 printable characters)"),
        ("X-AEX-Provider-Key" = Option<String>, Header, description = "Bring-your-own provider key (agents with allow_passthrough only)"),
    ),
    responses(
        (status = 200, description = "The message with `model` as the alias; `text/event-stream` of Anthropic's events when `stream` is true, `message_stop` carrying `aex`", body = Object),
        (status = 400, description = "Invalid request (Anthropic error shape), e.g. no `max_tokens`", body = Object),
        (status = 401, description = "Missing, invalid, revoked or conflicting credentials", body = Object),
        (status = 402, description = "The hold does not fit the remaining budget (`billing_error`)", body = Object),
        (status = 403, description = "Scope or policy refused the request", body = Object),
        (status = 404, description = "Unknown model alias", body = Object),
        (status = 409, description = "Idempotency conflict or execution in progress", body = Object),
        (status = 423, description = "Agent not READY", body = Object),
        (status = 429, description = "Rate limit exceeded", body = Object),
        (status = 502, description = "Provider failed; reservation released", body = Object),
        (status = 503, description = "Database unreachable or draining; nothing charged", body = Object),
        (status = 504, description = "Provider timed out", body = Object),
    ),
    security(("bearer" = []))
)]
pub async fn create_message(
    State(state): State<AppState>,
    caller: AgentCaller,
    headers: HeaderMap,
    OpenAiBody(body): OpenAiBody,
) -> Result<Response, OpenAiError> {
    governed(state, caller, headers, CallRoute::Messages, body).await
}

/// Count a Messages request's input tokens as AEX bounds them (nothing is sent upstream or charged).
#[utoipa::path(
    post,
    path = "/v1/messages/count_tokens",
    tag = "anthropic",
    request_body(content = Object, description = "Anthropic's count_tokens request (`model`, `messages`, `system`, `tools`)"),
    responses(
        (status = 200, description = "`{\"input_tokens\": N}`: AEX's input bound on the alias, never below the provider's count", body = Object),
        (status = 400, description = "Invalid request (Anthropic error shape)", body = Object),
        (status = 401, description = "Missing or invalid credentials", body = Object),
        (status = 404, description = "Unknown model alias, or one the policy does not allow", body = Object),
    ),
    security(("bearer" = []))
)]
pub async fn count_tokens(
    State(state): State<AppState>,
    caller: AgentCaller,
    OpenAiBody(body): OpenAiBody,
) -> Result<Json<Value>, OpenAiError> {
    let counted =
        messages::count_tokens(&state.gateway, caller.tenant_id, caller.agent_id, &body).await?;
    Ok(Json(counted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_errors_take_anthropic_shape_and_native_ones_stay() {
        let openai = br#"{"error":{"message":"budget exceeded","type":"insufficient_quota","param":null,"code":"budget_exceeded"}}"#;
        let v: Value = serde_json::from_slice(&anthropic_error_body(402, openai)).unwrap();
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": "billing_error", "message": "budget exceeded", "code": "budget_exceeded"}})
        );
        let native = br#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#;
        assert_eq!(anthropic_error_body(529, native), native.to_vec());
        let text: Value = serde_json::from_slice(&anthropic_error_body(413, b"too big")).unwrap();
        assert_eq!(text["error"]["type"], "request_too_large");
        assert_eq!(text["error"]["message"], "too big");
    }
}
