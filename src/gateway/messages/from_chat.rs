//! A governed chat completion's answer as an Anthropic message: a JSON completion becomes a
//! `message` (text and `tool_use` blocks, `stop_reason`, usage with OpenAI's cached tokens as
//! `cache_read_input_tokens`); a stream of chunks becomes Anthropic's events (`message_start`,
//! `content_block_*`, `message_delta` with the usage chunk's counts, `message_stop` carrying the
//! `aex` cost object). Error answers are left to the HTTP edge, which puts them in Anthropic's
//! shape.

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::gateway::call_types::{CallBody, CallOutput, JSON};
use crate::providers::sse;

/// The answer in Anthropic's shape (errors untouched).
pub fn translate(mut out: CallOutput) -> CallOutput {
    if !(200..300).contains(&out.status) {
        return out;
    }
    out.body = match std::mem::replace(&mut out.body, CallBody::Full(Bytes::new())) {
        CallBody::Full(bytes) => {
            let message = serde_json::from_slice::<Value>(&bytes)
                .map(|chat| message_of(&chat).to_string().into_bytes())
                .unwrap_or_else(|_| bytes.to_vec());
            out.content_type = JSON.to_owned();
            CallBody::Full(Bytes::from(message))
        }
        CallBody::Stream(mut rx) => {
            let (tx, translated) = mpsc::channel::<Bytes>(64);
            tokio::spawn(async move {
                let mut events = Events::default();
                while let Some(chunk) = rx.recv().await {
                    for event in events.feed(&chunk) {
                        // The client went: dropping `rx` tells the relay, which settles.
                        if tx.send(event).await.is_err() {
                            return;
                        }
                    }
                }
                for event in events.finish() {
                    let _ = tx.send(event).await;
                }
            });
            CallBody::Stream(translated)
        }
    };
    out
}

fn stop_reason(finish: Option<&str>) -> Value {
    match finish {
        Some("length") => json!("max_tokens"),
        Some("tool_calls" | "function_call") => json!("tool_use"),
        Some("content_filter") => json!("refusal"),
        Some(_) => json!("end_turn"),
        None => Value::Null,
    }
}

/// OpenAI's usage as Anthropic's: `input_tokens` excludes the cached prefix.
fn usage_of(usage: &Value) -> Value {
    let int = |p: &str| usage.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let cached = int("/prompt_tokens_details/cached_tokens");
    json!({
        "input_tokens": int("/prompt_tokens").saturating_sub(cached),
        "output_tokens": int("/completion_tokens"),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    })
}

fn message_id(chat: &Value) -> String {
    format!(
        "msg_{}",
        chat.get("id").and_then(Value::as_str).unwrap_or("aex")
    )
}

/// A chat completion as a message (its first choice: Messages has one).
fn message_of(chat: &Value) -> Value {
    let choice = chat.pointer("/choices/0");
    let message = choice.and_then(|c| c.get("message"));
    let mut content = Vec::new();
    if let Some(text) = message
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in message
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let args = call.pointer("/function/arguments").and_then(Value::as_str);
        let input = args
            .and_then(|a| serde_json::from_str::<Value>(a).ok())
            .unwrap_or_else(|| json!({}));
        content.push(json!({"type": "tool_use", "id": call.get("id"), "name": call.pointer("/function/name"), "input": input}));
    }
    let finish = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str);
    json!({
        "id": message_id(chat),
        "type": "message",
        "role": "assistant",
        "model": chat.get("model"),
        "content": content,
        "stop_reason": stop_reason(finish),
        "stop_sequence": null,
        "usage": usage_of(chat.get("usage").unwrap_or(&Value::Null)),
    })
}

/// The state of one translated stream.
#[derive(Default)]
struct Events {
    started: bool,
    /// The open content block: its index and whether it is text (else a tool call's index).
    open: Option<(u64, Option<u64>)>,
    next_index: u64,
    stop_reason: Value,
    usage: Option<Value>,
    aex: Option<Value>,
    done: bool,
}

fn event(name: &str, data: Value) -> Bytes {
    Bytes::from(sse::format(Some(name), &data.to_string()))
}

impl Events {
    /// The Anthropic events for one relayed chat event.
    fn feed(&mut self, raw: &[u8]) -> Vec<Bytes> {
        let parsed = sse::parse(raw);
        let Some(data) = parsed.data else {
            return Vec::new();
        };
        if data.trim() == "[DONE]" {
            return self.close();
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&data) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            out.push(event("message_start", json!({"type": "message_start", "message": {
                "id": message_id(&chunk), "type": "message", "role": "assistant", "model": chunk.get("model"),
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}})));
        }
        if let Some(delta) = chunk.pointer("/choices/0/delta") {
            if let Some(text) = delta
                .get("content")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                self.open_block(None, json!({"type": "text", "text": ""}), &mut out);
                let index = self.open.map_or(0, |(i, _)| i);
                out.push(event("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}})));
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let k = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                let block = json!({"type": "tool_use", "id": call.get("id"), "name": call.pointer("/function/name"), "input": {}});
                self.open_block(Some(k), block, &mut out);
                if let Some(args) = call
                    .pointer("/function/arguments")
                    .and_then(Value::as_str)
                    .filter(|a| !a.is_empty())
                {
                    let index = self.open.map_or(0, |(i, _)| i);
                    out.push(event("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": args}})));
                }
            }
        }
        if let Some(finish) = chunk
            .pointer("/choices/0/finish_reason")
            .and_then(Value::as_str)
        {
            self.stop_reason = stop_reason(Some(finish));
        }
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(usage_of(usage));
        }
        if let Some(aex) = chunk.get("aex") {
            self.aex = Some(aex.clone());
        }
        out
    }

    /// Opens the block for text (`None`) or tool call `k`, closing another open one.
    fn open_block(&mut self, tool: Option<u64>, block: Value, out: &mut Vec<Bytes>) {
        if let Some((_, open)) = self.open {
            if open == tool {
                return;
            }
        }
        self.close_block(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((index, tool));
        out.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
    }

    fn close_block(&mut self, out: &mut Vec<Bytes>) {
        if let Some((index, _)) = self.open.take() {
            out.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    /// `[DONE]`: the open block closes, then the final usage and the stop.
    fn close(&mut self) -> Vec<Bytes> {
        if self.done || !self.started {
            self.done = true;
            return Vec::new();
        }
        self.done = true;
        let mut out = Vec::new();
        self.close_block(&mut out);
        let usage = self
            .usage
            .clone()
            .unwrap_or_else(|| json!({"output_tokens": 0}));
        out.push(event("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": self.stop_reason, "stop_sequence": null}, "usage": usage})));
        let mut stop = json!({"type": "message_stop"});
        if let Some(aex) = self.aex.take() {
            stop["aex"] = aex;
        }
        out.push(event("message_stop", stop));
        out
    }

    /// The relayed stream ended: without `[DONE]` it was cut, which Anthropic tells as an error.
    fn finish(&mut self) -> Vec<Bytes> {
        if self.done {
            return Vec::new();
        }
        self.done = true;
        vec![event(
            "error",
            json!({"type": "error", "error": {"type": "api_error", "message": "the provider's stream ended before its end"}}),
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(events: &[Bytes]) -> Vec<Value> {
        events
            .iter()
            .map(|e| serde_json::from_str(&sse::parse(e).data.unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn a_chat_stream_becomes_anthropic_events_with_usage_and_the_cost() {
        let mut e = Events::default();
        let mut all = Vec::new();
        for chunk in [
            json!({"id": "c1", "model": "alias", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
            json!({"id": "c1", "model": "alias", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}),
            json!({"id": "c1", "model": "alias", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}]}}]}),
            json!({"id": "c1", "model": "alias", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":1}"}}]}}]}),
            json!({"id": "c1", "model": "alias", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"id": "c1", "model": "alias", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}, "aex": {"cost_micro_usd": 3}}),
        ] {
            all.extend(e.feed(&sse::format(None, &chunk.to_string())));
        }
        all.extend(e.feed(b"data: [DONE]\n\n"));
        all.extend(e.finish());
        let types: Vec<String> = texts(&all)
            .iter()
            .map(|v| v["type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            types,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let v = texts(&all);
        assert_eq!(v[4]["content_block"]["name"], "f");
        assert_eq!(v[4]["index"], 1);
        assert_eq!(v[7]["delta"]["stop_reason"], "tool_use");
        assert_eq!(v[7]["usage"]["input_tokens"], 9);
        assert_eq!(v[7]["usage"]["output_tokens"], 4);
        assert_eq!(v[8]["aex"]["cost_micro_usd"], 3);
    }

    #[test]
    fn a_cut_stream_ends_with_an_error_event() {
        let mut e = Events::default();
        e.feed(&sse::format(
            None,
            &json!({"id": "c", "choices": [{"index": 0, "delta": {"content": "x"}}]}).to_string(),
        ));
        let end = texts(&e.finish());
        assert_eq!(end[0]["type"], "error");
    }

    #[test]
    fn a_completion_becomes_a_message() {
        let chat = json!({"id": "c9", "model": "alias", "choices": [{"index": 0, "finish_reason": "length",
            "message": {"role": "assistant", "content": "Hello"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 4}}});
        let m = message_of(&chat);
        assert_eq!(m["content"], json!([{"type": "text", "text": "Hello"}]));
        assert_eq!(m["stop_reason"], "max_tokens");
        assert_eq!(m["usage"]["input_tokens"], 6);
        assert_eq!(m["usage"]["cache_read_input_tokens"], 4);
        assert_eq!(m["id"], "msg_c9");
    }
}
