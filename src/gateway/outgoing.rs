//! What goes upstream: the body each candidate is sent, built only when its attempt is made, and
//! the output cap it carries.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::bound::{Candidate, Shape};
use crate::config::{ModelRoute, TokenizerKind};
use crate::domain::CallRoute;

/// What each candidate's body is made from, kept on the dispatch task: the caller's body and
/// what rewrites it. A candidate's body is built only when its attempt is made.
pub struct Outgoing {
    body: Map<String, Value>,
    route: CallRoute,
    cap_fields: Vec<&'static str>,
    stream: bool,
    output_cap: Option<u64>,
}

impl Outgoing {
    /// The caller's `body` for `route`, of `shape`, to be sent with `output_cap` per choice.
    pub fn new(
        body: Map<String, Value>,
        route: CallRoute,
        shape: &Shape,
        stream: bool,
        output_cap: Option<u64>,
    ) -> Self {
        Outgoing {
            body,
            route,
            cap_fields: shape.cap_fields.clone(),
            stream,
            output_cap,
        }
    }

    /// The body sent to `c`: the caller's fields untouched except the model name, the output cap
    /// (always sent, in every cap field the caller set — `null` included — so the provider
    /// cannot exceed what was held whichever field it reads), the hosted-tool call limit and,
    /// for a streamed chat, a request for the usage chunk. The `last` attempt takes the caller's
    /// body rather than a copy of it.
    pub fn body_for(&mut self, c: &Candidate, last: bool) -> Bytes {
        let mut out = if last {
            std::mem::take(&mut self.body)
        } else {
            self.body.clone()
        };
        let model = &c.model;
        out.insert("model".into(), Value::String(model.upstream_model.clone()));
        if let Some(cap) = cap_sent(model, self.output_cap) {
            let default_field = match self.route {
                CallRoute::Responses => "max_output_tokens",
                CallRoute::Messages => "max_tokens",
                CallRoute::Completions => "max_tokens",
                // OpenAI's reasoning models accept only the newer name; other OpenAI-compatible
                // servers (vLLM, llama.cpp, Ollama) know `max_tokens`.
                _ if model.tokenizer != TokenizerKind::Bytes => "max_completion_tokens",
                _ => "max_tokens",
            };
            if self.cap_fields.is_empty() {
                out.insert(default_field.into(), Value::from(cap));
            }
            for field in &self.cap_fields {
                out.insert((*field).into(), Value::from(cap));
            }
        }
        if let (Some(calls), CallRoute::Responses) = (c.bound.tool_calls, self.route) {
            out.insert("max_tool_calls".into(), Value::from(calls));
        }
        let usage_chunk = matches!(
            self.route,
            CallRoute::ChatCompletions | CallRoute::Completions
        );
        if self.stream && usage_chunk {
            let options = out
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(o) = options.as_object_mut() {
                o.insert("include_usage".into(), Value::Bool(true));
            }
        }
        Bytes::from(serde_json::to_vec(&out).unwrap_or_default())
    }
}

/// The output cap per choice sent to `model` for a held cap: never above the model's own maximum.
pub fn cap_sent(model: &ModelRoute, output_cap: Option<u64>) -> Option<u64> {
    output_cap.map(|cap| {
        model
            .max_output_tokens
            .map_or(cap, |max| cap.min(u64::from(max)))
    })
}
