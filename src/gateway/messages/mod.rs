//! Anthropic's Messages API (`/v1/messages`, `/v1/messages/count_tokens`) as a governed call.
//!
//! An alias served by an `anthropic` provider goes through the pipeline as [`CallRoute::Messages`]
//! (the body sent as it is, the model and `max_tokens` rewritten; usage from the answer or from
//! `message_start`/`message_delta`). An alias served by an OpenAI-compatible provider is
//! translated: the request to a chat completion ([`to_chat`]), governed as one, and its answer —
//! JSON or server-sent events — back to a message ([`from_chat`]). Either way the call is held,
//! settled and ledgered as every other; errors are put in Anthropic's shape at the HTTP edge.

mod from_chat;
mod to_chat;

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::bound::Bound;
use super::call;
use super::call_types::{CallInput, CallOutput};
use super::{models, prepare, Gateway, GatewayError};
use crate::config::ProviderKind;
use crate::domain::{AgentId, CallRoute, TenantId};

/// Runs one Messages call: natively, or translated for an OpenAI-compatible provider.
pub async fn execute(gw: Arc<Gateway>, mut input: CallInput) -> Result<CallOutput, GatewayError> {
    let model = alias_of(&input.body).and_then(|alias| gw.routing().model(alias).cloned());
    match model {
        Some(m) if m.provider.kind == ProviderKind::Openai => {
            input.body = to_chat::translate(&input.body, &m)?;
            input.route = CallRoute::ChatCompletions;
            let out = call::execute(gw, input).await?;
            Ok(from_chat::translate(out))
        }
        // An `anthropic` provider, or an alias that does not exist (the pipeline says so).
        _ => {
            input.route = CallRoute::Messages;
            call::execute(gw, input).await
        }
    }
}

fn alias_of(body: &Map<String, Value>) -> Option<&str> {
    body.get("model").and_then(Value::as_str)
}

/// `/v1/messages/count_tokens`: the input tokens AEX would hold for this request on the alias —
/// its own bound (an exact count for tiktoken models, one token per byte otherwise), never less
/// than the provider counts. Nothing is sent upstream or charged.
pub async fn count_tokens(
    gw: &Gateway,
    tenant_id: TenantId,
    agent_id: AgentId,
    body: &Map<String, Value>,
) -> Result<Value, GatewayError> {
    let alias = match alias_of(body) {
        Some(a) if !a.is_empty() => a,
        _ => {
            return Err(GatewayError::invalid(
                "you must provide a `model` string",
                Some("model"),
            ))
        }
    };
    let routing = gw.routing();
    let visible = models::visible_models(&gw.pool, &routing, tenant_id, agent_id).await?;
    let model = visible
        .iter()
        .any(|m| m.id == alias)
        .then(|| routing.model(alias).cloned())
        .flatten()
        .ok_or_else(|| GatewayError::ModelNotFound(alias.to_owned()))?;
    match body.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() && m.iter().all(Value::is_object) => {}
        _ => {
            return Err(GatewayError::invalid(
                "`messages` is required and must be a non-empty array of message objects",
                Some("messages"),
            ))
        }
    }
    // The shape is read as for a call; the cap does not change the input bound.
    let mut shaped = body.clone();
    shaped.insert("max_tokens".into(), Value::from(1));
    shaped.remove("thinking");
    let shape = prepare::read_shape(CallRoute::Messages, &shaped)?;
    let bound = Bound::for_model(CallRoute::Messages, &shape, &model, &shaped)?;
    Ok(json!({"input_tokens": bound.prompt_tokens}))
}
