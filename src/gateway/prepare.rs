//! Checking and pricing a request before admission: the model route and its fallbacks, the
//! route's required fields, the shape of what it can cost ([`super::bound`]) and each
//! candidate's bound, and the fingerprint; and the body each candidate is sent.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::bound::{self, Bound, Candidate, Shape};
use super::call_types::CallInput;
use super::{idempotency, messages_shape, Gateway, GatewayError};
use crate::config::{Capability, ModelRoute, ProviderKind, TokenizerKind};
use crate::domain::CallRoute;

/// The request, checked and priced, ready for admission.
pub struct Prepared {
    pub route: CallRoute,
    pub key: String,
    pub keyed: bool,
    pub fingerprint: String,
    /// The alias the agent asked for, then its fallbacks in order, each with its bound.
    pub candidates: Vec<Candidate>,
    pub shape: Shape,
    /// The largest input bound over the candidates (what policy's token limits see).
    pub prompt_tokens: u64,
    pub requested_cap: Option<u64>,
    pub default_cap: Option<u64>,
    pub stream: bool,
    /// For a streamed chat: whether the client itself asked for the usage chunk.
    pub client_wants_usage: bool,
}

impl Prepared {
    pub fn model(&self) -> &Arc<ModelRoute> {
        &self.candidates[0].model
    }
}

/// Whether `model` can serve `route`: it has the route's capability and its provider speaks the
/// route's wire format (an Anthropic Messages provider serves only the Messages routes).
fn serves(model: &ModelRoute, route: CallRoute) -> bool {
    let kind = match route {
        CallRoute::Messages => ProviderKind::Anthropic,
        _ => ProviderKind::Openai,
    };
    model.has(capability_of(route)) && model.provider.kind == kind
}

fn unserved(model: &ModelRoute, route: CallRoute) -> GatewayError {
    let why = match model.provider.kind {
        ProviderKind::Anthropic if route != CallRoute::Messages => {
            " (its provider speaks Anthropic's Messages API: call it at /v1/messages)"
        }
        _ => "",
    };
    GatewayError::invalid(
        format!(
            "model `{}` does not support {}{why}",
            model.alias,
            route.as_str()
        ),
        Some("model"),
    )
}

/// The request's shape ([`bound::read`]), with what only the Messages route has.
pub fn read_shape(route: CallRoute, body: &Map<String, Value>) -> Result<Shape, GatewayError> {
    let mut shape = bound::read(route, body)?;
    if route == CallRoute::Messages {
        messages_shape::read(body, &mut shape)?;
    }
    Ok(shape)
}

fn capability_of(route: CallRoute) -> Capability {
    match route {
        CallRoute::Responses => Capability::Responses,
        CallRoute::Embeddings => Capability::Embeddings,
        _ => Capability::Chat,
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
    let chat_like = matches!(route, CallRoute::ChatCompletions | CallRoute::Messages);
    let field = if chat_like { "messages" } else { "input" };
    let ok = match (chat_like, body.get(field)) {
        (true, Some(Value::Array(m))) => !m.is_empty() && m.iter().all(Value::is_object),
        (true, _) => false,
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
    if !serves(&model, input.route) {
        return Err(unserved(&model, input.route));
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
    let shape = read_shape(input.route, body)?;
    let requested_cap = shape.requested_cap;
    let model_max = model.max_output_tokens.map(u64::from);
    if let (Some(asked), Some(max)) = (requested_cap, model_max) {
        if asked > max {
            // Name the field that carries the larger cap.
            let field = shape
                .cap_fields
                .iter()
                .find(|f| body.get(**f).and_then(Value::as_u64) == Some(asked))
                .copied()
                .unwrap_or("max_tokens");
            return Err(GatewayError::invalid(
                format!("`{field}` is too large: {asked}. This model supports at most {max} output tokens"),
                Some(field),
            ));
        }
    }
    let generates = input.route != CallRoute::Embeddings;
    let default_cap = generates
        .then(|| model_max.unwrap_or(u64::from(gw.settings.gateway.default_max_output_tokens)));

    // Fallbacks that cannot serve this route are skipped rather than tried and failed. Each
    // candidate is bounded at its own settings: the hold must cover whichever serves the call.
    let mut models = vec![Arc::clone(&model)];
    for name in &model.fallbacks {
        if let Some(f) = routing
            .model(name)
            .filter(|f| serves(f, input.route) && (!stream || f.has(Capability::Streaming)))
        {
            models.push(Arc::clone(f));
        }
    }
    let candidates = models
        .into_iter()
        .map(|m| {
            let bound = Bound::for_model(input.route, &shape, &m, body)?;
            Ok(Candidate { model: m, bound })
        })
        .collect::<Result<Vec<_>, GatewayError>>()?;
    let prompt_tokens = candidates
        .iter()
        .map(|c| c.bound.prompt_tokens)
        .max()
        .unwrap_or(0);
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
        shape,
        prompt_tokens,
        requested_cap,
        default_cap,
        stream,
        client_wants_usage,
    })
}

/// The body sent to `c`: the caller's fields untouched except the model name, the output cap
/// (always sent, in every cap field the caller set — `null` included — so the provider cannot
/// exceed what was held whichever field it reads), the hosted-tool call limit and, for a streamed
/// chat, a request for the usage chunk.
pub fn upstream_body(
    body: &Map<String, Value>,
    p: &Prepared,
    c: &Candidate,
    output_cap: Option<u64>,
) -> bytes::Bytes {
    let model = &c.model;
    let mut out = body.clone();
    out.insert("model".into(), Value::String(model.upstream_model.clone()));
    if let Some(cap) = cap_sent(model, output_cap) {
        let default_field = match p.route {
            CallRoute::Responses => "max_output_tokens",
            CallRoute::Messages => "max_tokens",
            // OpenAI's reasoning models accept only the newer name; other OpenAI-compatible
            // servers (vLLM, llama.cpp, Ollama) know `max_tokens`.
            _ if model.tokenizer != TokenizerKind::Bytes => "max_completion_tokens",
            _ => "max_tokens",
        };
        if p.shape.cap_fields.is_empty() {
            out.insert(default_field.into(), Value::from(cap));
        }
        for field in &p.shape.cap_fields {
            out.insert((*field).into(), Value::from(cap));
        }
    }
    if let (Some(calls), CallRoute::Responses) = (c.bound.tool_calls, p.route) {
        out.insert("max_tool_calls".into(), Value::from(calls));
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

/// The output cap per choice sent to `model` for a held cap: never above the model's own maximum.
pub fn cap_sent(model: &ModelRoute, output_cap: Option<u64>) -> Option<u64> {
    output_cap.map(|cap| {
        model
            .max_output_tokens
            .map_or(cap, |max| cap.min(u64::from(max)))
    })
}
