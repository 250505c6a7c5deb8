//! Checking and pricing a request before admission: the model route and its fallbacks, the
//! route's required fields, the output cap, the prompt tokens and the fingerprint.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::call::CallInput;
use super::estimate::{self, Estimate};
use super::{idempotency, Gateway, GatewayError};
use crate::config::{Capability, ModelRoute, TokenizerKind};
use crate::domain::CallRoute;

/// The request, checked and priced, ready for admission.
pub struct Prepared {
    pub route: CallRoute,
    pub key: String,
    pub keyed: bool,
    pub fingerprint: String,
    /// The alias the agent asked for, then its fallbacks in order.
    pub candidates: Vec<Arc<ModelRoute>>,
    pub prompt_tokens: u64,
    pub requested_cap: Option<u64>,
    pub default_cap: Option<u64>,
    /// The body field that carries the output cap, when the route has one.
    pub cap_field: Option<&'static str>,
    pub stream: bool,
    /// For a streamed chat: whether the client itself asked for the usage chunk.
    pub client_wants_usage: bool,
}

impl Prepared {
    pub fn model(&self) -> &Arc<ModelRoute> {
        &self.candidates[0]
    }
}

fn capability_of(route: CallRoute) -> Capability {
    match route {
        CallRoute::Responses => Capability::Responses,
        CallRoute::Embeddings => Capability::Embeddings,
        _ => Capability::Chat,
    }
}

/// The largest output cap accepted: no model generates more, and every sum of tokens and every
/// price product stays far from overflowing.
pub const MAX_OUTPUT_CAP: u64 = i32::MAX as u64;

/// Reads an output cap: a positive integer up to [`MAX_OUTPUT_CAP`]; `Err` names the field.
fn output_cap(body: &Map<String, Value>, field: &str) -> Result<Option<u64>, GatewayError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 && n <= MAX_OUTPUT_CAP => Ok(Some(n)),
            _ => Err(GatewayError::invalid(
                format!("`{field}` must be a positive integer of at most {MAX_OUTPUT_CAP}"),
                Some(field),
            )),
        },
    }
}

/// `stream_options`, when present, is an object whose `include_usage` is a boolean: AEX reads it
/// and adds to it, so a value of another type would otherwise reach the provider after the hold.
fn check_stream_options(body: &Map<String, Value>) -> Result<(), GatewayError> {
    let ok = match body.get("stream_options") {
        None | Some(Value::Null) => true,
        Some(Value::Object(o)) => o
            .get("include_usage")
            .is_none_or(|u| u.is_boolean() || u.is_null()),
        Some(_) => false,
    };
    if ok {
        return Ok(());
    }
    Err(GatewayError::invalid(
        "`stream_options` must be an object whose `include_usage` is a boolean",
        Some("stream_options"),
    ))
}

fn check_input(route: CallRoute, body: &Map<String, Value>) -> Result<(), GatewayError> {
    let field = if route == CallRoute::ChatCompletions {
        "messages"
    } else {
        "input"
    };
    let ok = match (route, body.get(field)) {
        (CallRoute::ChatCompletions, Some(Value::Array(m))) => {
            !m.is_empty() && m.iter().all(Value::is_object)
        }
        (CallRoute::ChatCompletions, _) => false,
        (_, Some(Value::String(s))) => !s.is_empty(),
        (_, Some(Value::Array(a))) => !a.is_empty(),
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let shape = if field == "messages" {
        "a non-empty array of message objects"
    } else {
        "a non-empty string or array"
    };
    Err(GatewayError::invalid(
        format!("`{field}` is required and must be {shape}"),
        Some(field),
    ))
}

pub fn prepare(gw: &Gateway, input: &CallInput) -> Result<Prepared, GatewayError> {
    let (key, keyed) = idempotency::execution_key(input.idempotency_key.as_deref())?;
    let body = &input.body;
    let alias = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.as_str(),
        _ => {
            return Err(GatewayError::invalid(
                "you must provide a `model` string",
                Some("model"),
            ))
        }
    };
    let routing = gw.routing();
    let model = routing
        .model(alias)
        .cloned()
        .ok_or_else(|| GatewayError::ModelNotFound(alias.to_owned()))?;
    let capability = capability_of(input.route);
    if !model.has(capability) {
        return Err(GatewayError::invalid(
            format!("model `{alias}` does not support {}", input.route.as_str()),
            Some("model"),
        ));
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(GatewayError::invalid(
                "`stream` must be a boolean",
                Some("stream"),
            ))
        }
    };
    if stream && input.route == CallRoute::Embeddings {
        return Err(GatewayError::invalid(
            "embeddings cannot be streamed",
            Some("stream"),
        ));
    }
    check_input(input.route, body)?;
    check_stream_options(body)?;
    let cap_field = match input.route {
        CallRoute::ChatCompletions if body.contains_key("max_completion_tokens") => {
            Some("max_completion_tokens")
        }
        CallRoute::ChatCompletions => Some("max_tokens"),
        CallRoute::Responses => Some("max_output_tokens"),
        _ => None,
    };
    let requested_cap = match cap_field {
        Some(field) => output_cap(body, field)?,
        None => None,
    };
    let model_max = model.max_output_tokens.map(u64::from);
    if let (Some(asked), Some(max), Some(field)) = (requested_cap, model_max, cap_field) {
        if asked > max {
            return Err(GatewayError::invalid(
                format!("`{field}` is too large: {asked}. This model supports at most {max} output tokens"),
                Some(field),
            ));
        }
    }
    let default_cap = cap_field
        .map(|_| model_max.unwrap_or(u64::from(gw.settings.gateway.default_max_output_tokens)));

    // Fallbacks that cannot serve this route are skipped rather than tried and failed.
    let mut candidates = vec![Arc::clone(&model)];
    for name in &model.fallbacks {
        if let Some(f) = routing
            .model(name)
            .filter(|f| f.has(capability) && (!stream || f.has(Capability::Streaming)))
        {
            candidates.push(Arc::clone(f));
        }
    }
    // Count with every tokenizer a candidate uses and keep the largest: the hold must cover
    // whichever candidate ends up serving the call.
    let mut prompt_tokens = 0;
    let mut seen: Vec<TokenizerKind> = Vec::new();
    for c in &candidates {
        if !seen.contains(&c.tokenizer) {
            seen.push(c.tokenizer);
            prompt_tokens =
                prompt_tokens.max(estimate::prompt_tokens(input.route, c.tokenizer, body));
        }
    }
    let client_wants_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    Ok(Prepared {
        route: input.route,
        fingerprint: idempotency::fingerprint(input.route, body),
        key,
        keyed,
        candidates,
        prompt_tokens,
        requested_cap,
        default_cap,
        cap_field,
        stream,
        client_wants_usage,
    })
}

/// The most expensive candidate's estimate for this request: what the reservation holds.
pub fn worst_estimate(
    candidates: &[Arc<ModelRoute>],
    prompt_tokens: u64,
    output_cap: Option<u64>,
) -> Estimate {
    candidates
        .iter()
        .map(|m| Estimate::new(m, prompt_tokens, output_cap))
        .max_by_key(|e| e.cost)
        .unwrap_or(Estimate {
            prompt_tokens,
            output_cap,
            cost: crate::money::MicroUsd::ZERO,
        })
}

/// The body sent to `model`: the caller's fields untouched except the model name, the output cap
/// (always sent, so the provider cannot exceed what was reserved) and, for a streamed chat, a
/// request for the usage chunk.
pub fn upstream_body(
    body: &Map<String, Value>,
    p: &Prepared,
    model: &ModelRoute,
    output_cap: Option<u64>,
) -> bytes::Bytes {
    let mut out = body.clone();
    out.insert("model".into(), Value::String(model.upstream_model.clone()));
    if let (Some(field), Some(cap)) = (p.cap_field, cap_sent(model, output_cap)) {
        let field = if p.requested_cap.is_none()
            && field == "max_tokens"
            && model.tokenizer != TokenizerKind::Bytes
        {
            // OpenAI's reasoning models accept only the newer name; other OpenAI-compatible
            // servers (vLLM, llama.cpp, Ollama) know `max_tokens`.
            "max_completion_tokens"
        } else {
            field
        };
        out.insert(field.into(), Value::from(cap));
    }
    if p.stream && p.route == CallRoute::ChatCompletions {
        let options = out
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(o) = options.as_object_mut() {
            o.insert("include_usage".into(), Value::Bool(true));
        }
    }
    bytes::Bytes::from(serde_json::to_vec(&out).unwrap_or_default())
}

/// The output cap sent to `model` for a held cap: never above the model's own maximum.
pub fn cap_sent(model: &ModelRoute, output_cap: Option<u64>) -> Option<u64> {
    output_cap.map(|cap| {
        model
            .max_output_tokens
            .map_or(cap, |max| cap.min(u64::from(max)))
    })
}

/// The number of choices a request asks for (`n`, default 1): the cap applies to each.
pub fn choices(body: &Map<String, Value>) -> u64 {
    body.get("n").and_then(Value::as_u64).unwrap_or(1).max(1)
}
