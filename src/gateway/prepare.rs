//! Checking and pricing a request before admission: the model route and its fallbacks, the
//! route's required fields, the shape of what it can cost ([`super::bound`]) and each
//! candidate's bound, and the fingerprint.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::bound::{self, Bound, Candidate, Shape};
use super::call_types::CallInput;
use super::{idempotency, messages_shape, Gateway, GatewayError};
use crate::config::{Capability, ModelRoute, ProviderKind, RoutingTable};
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
        CallRoute::Completions => Capability::Completions,
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
    let field = match route {
        _ if chat_like => "messages",
        // Its shape is checked with its bound (`bound::completions`).
        CallRoute::Completions => return Ok(()),
        _ => "input",
    };
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

/// `max_tokens` of a legacy completion that sets none, as OpenAI defaults it.
const LEGACY_DEFAULT_CAP: u64 = 16;

pub fn prepare(gw: &Gateway, input: &CallInput) -> Result<Prepared, GatewayError> {
    let (key, keyed) = idempotency::execution_key(input.idempotency_key.as_deref())?;
    let body = &input.body;
    let routing = gw.routing();
    let model = model_asked(&routing, input.route, body)?;
    let stream = read_stream(input.route, body)?;
    check_input(input.route, body)?;
    check_stream_options(body)?;
    let shape = read_shape(input.route, body)?;
    let requested_cap = shape.requested_cap;
    let model_max = model.max_output_tokens.map(u64::from);
    check_requested_cap(&shape, model_max, body)?;
    let generates = input.route != CallRoute::Embeddings;
    let default_cap = generates.then(|| match input.route {
        // Legacy completions generate 16 tokens when asked for no cap (OpenAI's default).
        CallRoute::Completions => {
            model_max.map_or(LEGACY_DEFAULT_CAP, |m| m.min(LEGACY_DEFAULT_CAP))
        }
        _ => model_max.unwrap_or(u64::from(gw.settings.gateway.default_max_output_tokens)),
    });
    let candidates = candidates(&routing, input.route, &shape, model, stream, body)?;
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

/// The model the request names, if it exists and serves the route.
fn model_asked(
    routing: &RoutingTable,
    route: CallRoute,
    body: &Map<String, Value>,
) -> Result<Arc<ModelRoute>, GatewayError> {
    let alias = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.as_str(),
        _ => {
            return Err(GatewayError::invalid(
                "you must provide a `model` string",
                Some("model"),
            ))
        }
    };
    let model = routing
        .model(alias)
        .cloned()
        .ok_or_else(|| GatewayError::ModelNotFound(alias.to_owned()))?;
    if !serves(&model, route) {
        return Err(unserved(&model, route));
    }
    Ok(model)
}

/// `stream`: a boolean, absent or null meaning false; embeddings cannot stream.
fn read_stream(route: CallRoute, body: &Map<String, Value>) -> Result<bool, GatewayError> {
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
    if stream && route == CallRoute::Embeddings {
        return Err(GatewayError::invalid(
            "embeddings cannot be streamed",
            Some("stream"),
        ));
    }
    Ok(stream)
}

/// A requested output cap above the model's maximum is refused, naming the field that carries it.
fn check_requested_cap(
    shape: &Shape,
    model_max: Option<u64>,
    body: &Map<String, Value>,
) -> Result<(), GatewayError> {
    let (Some(asked), Some(max)) = (shape.requested_cap, model_max) else {
        return Ok(());
    };
    if asked <= max {
        return Ok(());
    }
    let field = shape
        .cap_fields
        .iter()
        .find(|f| body.get(**f).and_then(Value::as_u64) == Some(asked))
        .copied()
        .unwrap_or("max_tokens");
    Err(GatewayError::invalid(
        format!("`{field}` is too large: {asked}. This model supports at most {max} output tokens"),
        Some(field),
    ))
}

/// The model and then its fallbacks, each bounded at its own settings: the hold must cover
/// whichever serves the call. Fallbacks that cannot serve this route (or stream, when asked to)
/// are skipped rather than tried and failed.
fn candidates(
    routing: &RoutingTable,
    route: CallRoute,
    shape: &Shape,
    model: Arc<ModelRoute>,
    stream: bool,
    body: &Map<String, Value>,
) -> Result<Vec<Candidate>, GatewayError> {
    let fallbacks = model.fallbacks.iter().filter_map(|name| {
        routing
            .model(name)
            .filter(|f| serves(f, route) && (!stream || f.has(Capability::Streaming)))
            .map(Arc::clone)
    });
    std::iter::once(Arc::clone(&model))
        .chain(fallbacks)
        .map(|m| {
            let bound = Bound::for_model(route, shape, &m, body)?;
            Ok(Candidate { model: m, bound })
        })
        .collect()
}
