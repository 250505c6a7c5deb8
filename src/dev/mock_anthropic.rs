//! The mock's Anthropic Messages API (`POST /v1/messages`): a message — or its stream of events —
//! billed as Anthropic bills, with the mock's knobs (faults, delays, caps, `bill_max`).
//!
//! Input is counted in words (like the rest of the mock): `system`, `messages` and `tools`, plus
//! each image block at the image worst case under `bill_max`. Prompt caching as Anthropic does it:
//! the prefix up to the last block marked `cache_control` (in the order tools, system, messages)
//! is written to the cache the first time it is seen (`cache_creation_input_tokens`) and read
//! from it afterwards (`cache_read_input_tokens`); `input_tokens` is the rest. A request with
//! tools gets a `tool_use` answer until it carries a `tool_result`.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::mock_control::{output_tokens, prelude, text_of, words, MockControl};
use super::mock_sse::sse_response;

/// `POST /v1/messages`: the shared prelude (count, record, delay, faults in Anthropic's error
/// shape), then a message or its events.
pub async fn messages(
    State(c): State<Arc<MockControl>>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(r) = prelude(&c, &headers, &body).await {
        let status = r.status();
        if status == StatusCode::OK {
            return r;
        }
        let message = format!("mock failure {}", status.as_u16());
        return (status, Json(error(status.as_u16(), &message))).into_response();
    }
    let billing = Billing {
        output: output_tokens(&c, &body, &["max_tokens"]),
        with_usage: !c.omit_usage.load(Ordering::SeqCst),
        image_tokens: if c.bill_max.load(Ordering::SeqCst) {
            c.image_tokens.load(Ordering::SeqCst)
        } else {
            0
        },
        chunks: c.chunks.load(Ordering::SeqCst),
    };
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let (events, content) = events(&body, &billing, &c.anthropic_cache);
        return sse_response(&c, events, content);
    }
    Json(message(&body, &billing, &c.anthropic_cache)).into_response()
}

/// What the handler decided for one call.
struct Billing {
    /// Output tokens to generate.
    pub output: u64,
    /// Report usage at all.
    pub with_usage: bool,
    /// Tokens of each image block (bill_max), else 0.
    pub image_tokens: u64,
    /// Chunks a streamed text answer is spread over.
    pub chunks: u64,
}

fn images(v: &Value) -> u64 {
    match v {
        Value::Array(a) => a.iter().map(images).sum(),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("image") => 1,
        Value::Object(o) => o.values().map(images).sum(),
        _ => 0,
    }
}

/// The input as Anthropic bills it: `(input_tokens, cache_creation, cache_read)`.
fn input_usage(body: &Value, image_tokens: u64, cache: &Mutex<HashSet<u64>>) -> (u64, u64, u64) {
    // The prompt's blocks in cache order; each with its words and whether it ends a cached prefix.
    let mut blocks: Vec<(&Value, bool)> = Vec::new();
    let marked = |b: &Value| b.get("cache_control").is_some_and(|c| !c.is_null());
    for t in body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        blocks.push((t, marked(t)));
    }
    match body.get("system") {
        Some(Value::Array(s)) => s.iter().for_each(|b| blocks.push((b, marked(b)))),
        Some(s) => blocks.push((s, false)),
        None => {}
    }
    for m in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match m.get("content") {
            Some(Value::Array(c)) => c.iter().for_each(|b| blocks.push((b, marked(b)))),
            Some(c) => blocks.push((c, false)),
            None => {}
        }
    }
    let tokens = |b: &Value| words(b) + images(b) * image_tokens;
    let total: u64 = 3 + blocks.iter().map(|(b, _)| tokens(b)).sum::<u64>();
    let Some(last) = blocks.iter().rposition(|(_, m)| *m) else {
        return (total, 0, 0);
    };
    let prefix = &blocks[..=last];
    let prefix_tokens: u64 = prefix.iter().map(|(b, _)| tokens(b)).sum();
    let mut h = DefaultHasher::new();
    for (b, _) in prefix {
        b.to_string().hash(&mut h);
    }
    let fresh = cache
        .lock()
        .map(|mut c| c.insert(h.finish()))
        .unwrap_or(true);
    let rest = total - prefix_tokens;
    if fresh {
        (rest, prefix_tokens, 0)
    } else {
        (rest, 0, prefix_tokens)
    }
}

/// The tool to call, when the request has one and no result for it yet.
fn tool_to_call(body: &Value) -> Option<Value> {
    let name = body.pointer("/tools/0/name")?.clone();
    if body.pointer("/tool_choice/type").and_then(Value::as_str) == Some("none") {
        return None;
    }
    let answered = body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("content").and_then(Value::as_array))
        .flatten()
        .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"));
    (!answered).then_some(name)
}

/// The usage object, and the content blocks with their stop reason.
fn answer(
    body: &Value,
    b: &Billing,
    cache: &Mutex<HashSet<u64>>,
) -> (Value, Vec<Value>, &'static str) {
    let (input, creation, read) = input_usage(body, b.image_tokens, cache);
    let usage = json!({"input_tokens": input, "output_tokens": b.output,
        "cache_creation_input_tokens": creation, "cache_read_input_tokens": read});
    let cap = body.get("max_tokens").and_then(Value::as_u64);
    match tool_to_call(body) {
        Some(name) => (
            usage,
            vec![
                json!({"type": "tool_use", "id": "toolu_mock_1", "name": name, "input": {"city": "Paris"}}),
            ],
            "tool_use",
        ),
        None => {
            let stop = if cap == Some(b.output) {
                "max_tokens"
            } else {
                "end_turn"
            };
            (
                usage,
                vec![json!({"type": "text", "text": text_of(b.output)})],
                stop,
            )
        }
    }
}

/// A complete message.
fn message(body: &Value, b: &Billing, cache: &Mutex<HashSet<u64>>) -> Value {
    let (usage, content, stop) = answer(body, b, cache);
    let mut m = json!({"id": "msg_mock", "type": "message", "role": "assistant",
        "model": body.get("model"), "content": content, "stop_reason": stop, "stop_sequence": null});
    if b.with_usage {
        m["usage"] = usage;
    }
    m
}

/// A streamed message as SSE events, and how many of them are its content (the rest is its
/// ending: `message_delta` and `message_stop`).
fn events(body: &Value, b: &Billing, cache: &Mutex<HashSet<u64>>) -> (Vec<String>, usize) {
    let (usage, content, stop) = answer(body, b, cache);
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut start_usage = usage.clone();
    start_usage["output_tokens"] = json!(1);
    let mut out = vec![ev(
        "message_start",
        json!({"type": "message_start", "message": {
        "id": "msg_mock", "type": "message", "role": "assistant", "model": body.get("model"),
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": if b.with_usage { start_usage } else { Value::Null }}}),
    )];
    for (index, block) in content.iter().enumerate() {
        let mut empty = block.clone();
        if empty.get("text").is_some() {
            empty["text"] = json!("");
        } else {
            empty["input"] = json!({});
        }
        out.push(ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": empty}),
        ));
        if block.get("text").is_some() {
            let per = b.output.div_ceil(b.chunks.max(1)).max(1);
            let mut left = b.output;
            while left > 0 {
                let n = per.min(left);
                left -= n;
                let text: String = (0..n).map(|_| " w").collect();
                out.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}})));
            }
        } else {
            let partial = block.get("input").map(Value::to_string).unwrap_or_default();
            out.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": partial}})));
        }
        out.push(ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    let content_events = out.len();
    let final_usage = if b.with_usage {
        json!({"output_tokens": b.output})
    } else {
        Value::Null
    };
    out.push(ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": final_usage})));
    out.push(ev("message_stop", json!({"type": "message_stop"})));
    (out, content_events)
}

/// Anthropic's error shape.
fn error(status: u16, message: &str) -> Value {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_prefix_is_written_once_then_read() {
        let cache = Mutex::new(HashSet::new());
        let body = json!({"system": [{"type": "text", "text": "one two three", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "four five"}]});
        assert_eq!(input_usage(&body, 0, &cache), (5, 5, 0));
        assert_eq!(input_usage(&body, 0, &cache), (5, 0, 5));
        let plain = json!({"messages": [{"role": "user", "content": "four five"}]});
        assert_eq!(input_usage(&plain, 0, &cache), (5, 0, 0));
    }
}
