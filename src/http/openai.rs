//! Handlers of the OpenAI-compatible routes. Thin: extract, call the gateway, render.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::OpenAiError;
use super::extract::{AgentCaller, OpenAiBody};
use crate::app_state::AppState;
use crate::config::Secret;
use crate::domain::CallRoute;
use crate::gateway::call_types::{CallBody, CallInput, CallOutput};
use crate::gateway::models::{self, ModelObject};
use crate::gateway::GatewayError;
use crate::gateway::{call, messages, tool_call};

fn header_text(headers: &HeaderMap, name: &str) -> Result<Option<String>, GatewayError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.to_owned())).map_err(|_| {
            GatewayError::invalid(format!("header {name} must be printable ASCII"), None)
        }),
    }
}

/// Runs a governed call for `route` and renders its result with the AEX headers.
pub(super) async fn governed(
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
    let gw = state.gateway.clone();
    let out = match route {
        CallRoute::ToolsExecute => tool_call::execute(gw, input).await?,
        CallRoute::Messages => messages::execute(gw, input).await?,
        _ => call::execute(gw, input).await?,
    };
    Ok(render(out))
}

fn render(out: CallOutput) -> Response {
    let status = StatusCode::from_u16(out.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = match out.body {
        CallBody::Full(bytes) => Body::from(bytes),
        // Each relayed event is its own frame: hyper writes it out as soon as it is yielded.
        CallBody::Stream(rx) => {
            Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), rx))
            }))
        }
    };
    let mut response = (status, body).into_response();
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
    let q = out.quota;
    for (name, value) in [
        ("x-ratelimit-limit-requests", q.limit_requests),
        ("x-ratelimit-remaining-requests", q.remaining_requests),
        ("x-ratelimit-limit-tokens", q.limit_tokens),
        ("x-ratelimit-remaining-tokens", q.remaining_tokens),
        ("retry-after", out.retry_after_seconds),
    ] {
        if let Some(v) = value {
            put(name, v.to_string());
        }
    }
    if out.content_type.starts_with("text/event-stream") {
        put("cache-control", "no-cache".to_owned());
    }
    response
}

/// The headers and error statuses every governed `/v1` POST route documents.
macro_rules! governed_route {
    ($name:ident, $path:literal, $route:expr, $summary:literal) => {
        #[doc = $summary]
        #[utoipa::path(
            post,
            path = $path,
            tag = "openai",
            request_body(content = Object, description = "The OpenAI request body; unknown fields are passed through to the provider"),
            params(
                ("Idempotency-Key" = Option<String>, Header, description = "Execution identity for idempotent replay (at most 255 printable characters)"),
                ("X-AEX-Execution-Id" = Option<String>, Header, description = "Alternative to Idempotency-Key"),
                ("X-AEX-Provider-Key" = Option<String>, Header, description = "Bring-your-own provider key (agents with allow_passthrough only)"),
                ("X-AEX-Tenant-Id" = Option<String>, Header, description = "Must match the token's tenant when present"),
            ),
            responses(
                (status = 200, description = "The provider's answer with `model` as the alias; `text/event-stream` when `stream` is true", body = Object),
                (status = 400, description = "Invalid request (OpenAI error shape)", body = Object),
                (status = 401, description = "Missing, invalid, expired or revoked token", body = Object),
                (status = 402, description = "The estimate does not fit the remaining budget", body = Object),
                (status = 403, description = "Scope or policy refused the request", body = Object),
                (status = 404, description = "Unknown model alias", body = Object),
                (status = 409, description = "Idempotency conflict or execution in progress", body = Object),
                (status = 413, description = "Body too large", body = Object),
                (status = 423, description = "Agent not READY", body = Object),
                (status = 429, description = "Rate limit exceeded", body = Object),
                (status = 502, description = "Provider failed; reservation released", body = Object),
                (status = 503, description = "Database unreachable or draining; nothing charged", body = Object),
                (status = 504, description = "Provider timed out; reservation released", body = Object),
            ),
            security(("bearer" = []))
        )]
        pub async fn $name(
            State(state): State<AppState>,
            caller: AgentCaller,
            headers: HeaderMap,
            OpenAiBody(body): OpenAiBody,
        ) -> Result<Response, OpenAiError> {
            governed(state, caller, headers, $route, body).await
        }
    };
}

governed_route!(
    create_chat_completion,
    "/v1/chat/completions",
    CallRoute::ChatCompletions,
    "Create a chat completion (OpenAI-compatible), governed by budget, policy and the ledger."
);
governed_route!(
    create_response,
    "/v1/responses",
    CallRoute::Responses,
    "Create a response (OpenAI Responses API), streaming or not."
);
governed_route!(
    create_embedding,
    "/v1/embeddings",
    CallRoute::Embeddings,
    "Create embeddings; the reservation holds the input only."
);
governed_route!(
    execute_tool,
    "/v1/tools/execute",
    CallRoute::ToolsExecute,
    "Run a registered tool plugin (`tool_name`, `arguments`) at its declared cost under the agent's budget, policy and rate limits; answers `execution_id`, `tool_name`, `result`, `stdout`, `stderr`."
);

/// OpenAI's list shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelObject>,
}

/// The model aliases this token may use.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "openai",
    responses((status = 200, body = ModelList), (status = 401, description = "Invalid token", body = Object)),
    security(("bearer" = []))
)]
pub async fn list_models(
    State(state): State<AppState>,
    caller: AgentCaller,
) -> Result<Json<ModelList>, OpenAiError> {
    let data = models::visible_models(
        &state.pool,
        &state.routing.current(),
        caller.tenant_id,
        caller.agent_id,
    )
    .await?;
    Ok(Json(ModelList {
        object: "list",
        data,
    }))
}

/// One model alias, if this token may use it.
#[utoipa::path(
    get,
    path = "/v1/models/{model}",
    tag = "openai",
    params(("model" = String, Path, description = "Model alias")),
    responses((status = 200, body = ModelObject), (status = 404, description = "Unknown or not allowed", body = Object)),
    security(("bearer" = []))
)]
pub async fn get_model(
    State(state): State<AppState>,
    caller: AgentCaller,
    Path(model): Path<String>,
) -> Result<Json<ModelObject>, OpenAiError> {
    let data = models::visible_models(
        &state.pool,
        &state.routing.current(),
        caller.tenant_id,
        caller.agent_id,
    )
    .await?;
    data.into_iter()
        .find(|m| m.id == model)
        .map(Json)
        .ok_or_else(|| GatewayError::ModelNotFound(model).into())
}
