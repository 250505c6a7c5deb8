//! Reading a native Anthropic Messages stream as it is relayed: the model rewritten in
//! `message_start`, the generated text collected (for a count when no usage comes), and the usage
//! — `message_start` carries the input (with cache reads and writes), `message_delta` the final
//! output count and possibly updated input counts. Usage is taken as reported only once
//! `message_delta` has come: a stream cut before it has billed more output than `message_start`
//! says, so it stays ambiguous.

use serde_json::{Map, Value};

use super::job::rewrite_model;
use crate::providers::usage::messages_usage;
use crate::providers::Usage;

/// What one Messages stream has told so far.
#[derive(Debug, Default)]
pub struct MessagesStream {
    /// `message_start`'s usage object.
    start: Map<String, Value>,
}

/// What one event means for the relay.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// The stream's ending has begun (`message_delta` or `message_stop`).
    pub ending: bool,
    /// The final usage, from `message_delta`.
    pub usage: Option<Usage>,
}

impl MessagesStream {
    /// Reads one event (already parsed), rewriting the model to `alias` and appending generated
    /// text to `output`.
    pub fn inspect(&mut self, value: &mut Value, alias: &str, output: &mut String) -> Seen {
        let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "message_start" => {
                if let Some(message) = value.get_mut("message") {
                    if let Some(Value::Object(usage)) = message.get("usage") {
                        self.start = usage.clone();
                    }
                    rewrite_model(message, alias);
                }
                Seen::default()
            }
            "content_block_start" => {
                if let Some(block) = value.get("content_block") {
                    collect(block, output);
                }
                Seen::default()
            }
            "content_block_delta" => {
                if let Some(delta) = value.get("delta") {
                    collect(delta, output);
                }
                Seen::default()
            }
            "message_delta" => {
                let mut usage = self.start.clone();
                if let Some(Value::Object(delta)) = value.get("usage") {
                    for (k, v) in delta {
                        if !v.is_null() {
                            usage.insert(k.clone(), v.clone());
                        }
                    }
                }
                Seen {
                    ending: true,
                    usage: messages_usage(&Value::Object(usage)),
                }
            }
            "message_stop" => Seen {
                ending: true,
                usage: None,
            },
            _ => Seen::default(),
        }
    }
}

/// The text a block or delta carries: text, thinking, or a tool call's input.
fn collect(part: &Value, output: &mut String) {
    for field in ["text", "thinking", "partial_json"] {
        if let Some(text) = part.get(field).and_then(Value::as_str) {
            output.push_str(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_is_known_at_message_delta_with_cache_parts_and_updated_counts() {
        let mut s = MessagesStream::default();
        let mut out = String::new();
        let mut start = json!({"type": "message_start", "message": {"model": "claude-x", "usage": {
            "input_tokens": 10, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 7, "output_tokens": 1}}});
        assert_eq!(s.inspect(&mut start, "alias", &mut out), Seen::default());
        assert_eq!(start["message"]["model"], "alias");
        let mut delta = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi there"}});
        s.inspect(&mut delta, "alias", &mut out);
        let mut json_delta = json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}});
        s.inspect(&mut json_delta, "alias", &mut out);
        assert_eq!(out, "hi there{\"a\":");
        let mut end = json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 42}});
        let seen = s.inspect(&mut end, "alias", &mut out);
        assert!(seen.ending);
        assert_eq!(
            seen.usage,
            Some(Usage {
                prompt_tokens: 22,
                completion_tokens: 42,
                cached_tokens: 7,
                cache_write_tokens: 5,
                ..Usage::default()
            })
        );
        // A delta that reports the input again (newer API versions) wins over message_start.
        let mut end =
            json!({"type": "message_delta", "usage": {"input_tokens": 11, "output_tokens": 3}});
        let seen = s.inspect(&mut end, "alias", &mut out);
        assert_eq!(seen.usage.unwrap().prompt_tokens, 23);
    }
}
