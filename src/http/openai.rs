//! Handlers of the OpenAI-compatible routes. Thin: extract, call the gateway, render.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::OpenAiError;
use super::extract::{AgentCaller, OpenAiBody};
use super::AppState;
use crate::config::Secret;
use crate::domain::CallRoute;
use crate::gateway::call::{self, CallInput, CallOutput};
use crate::gateway::GatewayError;

fn header_text(headers: &HeaderMap, name: &str) -> Result<Option<String>, GatewayError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.to_owned())).map_err(|_| {
            GatewayError::invalid(format!("header {name} must be printable ASCII"), None)
        }),
    }
}

/// Runs a governed call for `route` and renders its result with the AEX headers.
async fn governed(
    state: AppState,
    caller: AgentCaller,
    headers: HeaderMap,
    route: CallRoute,
    body: serde_json::Map<String, serde_json::Value>,
) -> Result<Response, OpenAiError> {
    caller.require_execution()?;
    if !state.readiness.accepts_traffic() {
        return Err(GatewayError::Unavailable("not ready".into()).into());
    }
    let idempotency_key = match header_text(&headers, "idempotency-key")? {
        Some(k) => Some(k),
        None => header_text(&headers, "x-aex-execution-id")?,
    };
    let passthrough_key = header_text(&headers, "x-aex-provider-key")?.map(Secret::new);
    let input = CallInput {
        tenant_id: caller.tenant_id,
        agent_id: caller.agent_id,
        route,
        body,
        idempotency_key,
        passthrough_key,
    };
    let out = call::execute(state.gateway.clone(), input).await?;
    Ok(render(out))
}

fn render(out: CallOutput) -> Response {
    let status = StatusCode::from_u16(out.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, out.body).into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&out.content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    put("x-aex-execution-id", out.execution_id);
    if let Some(cost) = out.cost_micro_usd {
        put("x-aex-cost-micro-usd", cost.to_string());
    }
    if let Some(remaining) = out.remaining_micro_usd {
        put("x-aex-budget-remaining-micro-usd", remaining.to_string());
    }
    if out.replayed {
        put("idempotent-replayed", "true".to_owned());
    }
    response
}

/// Create a chat completion (OpenAI-compatible), governed by budget, policy and the ledger.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "openai",
    request_body(content = Object, description = "An OpenAI chat completion request; unknown fields are passed through"),
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Execution identity for idempotent replay (at most 255 printable characters)"),
        ("X-AEX-Execution-Id" = Option<String>, Header, description = "Alternative to Idempotency-Key"),
        ("X-AEX-Provider-Key" = Option<String>, Header, description = "Bring-your-own provider key (agents with allow_passthrough only)"),
        ("X-AEX-Tenant-Id" = Option<String>, Header, description = "Must match the token's tenant when present"),
    ),
    responses(
        (status = 200, description = "The provider's chat completion, `model` as the alias", body = Object),
        (status = 400, description = "Invalid request (OpenAI error shape)", body = Object),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = Object),
        (status = 402, description = "The estimate does not fit the remaining budget", body = Object),
        (status = 403, description = "Scope or policy refused the request", body = Object),
        (status = 404, description = "Unknown model alias", body = Object),
        (status = 409, description = "Idempotency conflict or execution in progress", body = Object),
        (status = 413, description = "Body too large", body = Object),
        (status = 423, description = "Agent not READY", body = Object),
        (status = 502, description = "Provider failed; reservation released", body = Object),
        (status = 503, description = "Database unreachable or draining; nothing charged", body = Object),
        (status = 504, description = "Provider timed out; reservation released", body = Object),
    ),
    security(("bearer" = []))
)]
pub async fn create_chat_completion(
    State(state): State<AppState>,
    caller: AgentCaller,
    headers: HeaderMap,
    OpenAiBody(body): OpenAiBody,
) -> Result<Response, OpenAiError> {
    governed(state, caller, headers, CallRoute::ChatCompletions, body).await
}
