//! Token usage as providers report it, per route.

use serde_json::Value;

use crate::domain::CallRoute;

/// Prompt and completion tokens of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Reads the `usage` object of a response body: `prompt_tokens`/`completion_tokens` for chat and
/// embeddings, `input_tokens`/`output_tokens` for responses. `None` when absent or malformed.
pub fn reported(route: CallRoute, body: &Value) -> Option<Usage> {
    let usage = body.get("usage")?;
    let int = |name: &str| usage.get(name).and_then(Value::as_u64);
    match route {
        CallRoute::Responses => Some(Usage {
            prompt_tokens: int("input_tokens")?,
            completion_tokens: int("output_tokens")?,
        }),
        CallRoute::Messages => messages_usage(usage),
        CallRoute::Embeddings => Some(Usage {
            prompt_tokens: int("prompt_tokens").or_else(|| int("total_tokens"))?,
            completion_tokens: 0,
        }),
        _ => Some(Usage {
            prompt_tokens: int("prompt_tokens")?,
            completion_tokens: int("completion_tokens").unwrap_or(0),
        }),
    }
}

/// Anthropic's `usage`: `input_tokens` excludes the cached prefix, so every input part it bills
/// (cache reads and cache writes) is added; `output_tokens` includes thinking.
// Until cached and cache-write prices exist, cached input is billed at the input price: the
// bill is then above the provider's invoice, never below.
pub fn messages_usage(usage: &Value) -> Option<Usage> {
    let int = |name: &str| usage.get(name).and_then(Value::as_u64);
    let input = int("input_tokens")?
        .saturating_add(int("cache_creation_input_tokens").unwrap_or(0))
        .saturating_add(int("cache_read_input_tokens").unwrap_or(0));
    Some(Usage {
        prompt_tokens: input,
        completion_tokens: int("output_tokens")?,
    })
}

/// The generated text of a chat or responses body, for counting output tokens when the provider
/// reported no usage.
pub fn output_text(route: CallRoute, body: &Value) -> String {
    let mut out = String::new();
    match route {
        CallRoute::ChatCompletions => {
            for choice in body
                .get("choices")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(msg) = choice.get("message") {
                    if let Some(text) = msg.get("content").and_then(Value::as_str) {
                        out.push_str(text);
                    }
                    if let Some(calls) = msg.get("tool_calls") {
                        out.push_str(&calls.to_string());
                    }
                }
            }
        }
        CallRoute::Responses => {
            for item in body
                .get("output")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for part in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(text) = part.get("text").and_then(Value::as_str) {
                        out.push_str(text);
                    }
                }
                if item.get("type").and_then(Value::as_str) == Some("function_call") {
                    out.push_str(&item.to_string());
                }
            }
        }
        CallRoute::Messages => {
            for block in body
                .get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for field in ["text", "thinking"] {
                    if let Some(text) = block.get(field).and_then(Value::as_str) {
                        out.push_str(text);
                    }
                }
                if let Some(input) = block.get("input") {
                    out.push_str(&input.to_string());
                }
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_usage_in_each_route_shape() {
        let chat =
            json!({"usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}});
        assert_eq!(
            reported(CallRoute::ChatCompletions, &chat),
            Some(Usage {
                prompt_tokens: 10,
                completion_tokens: 5
            })
        );
        let resp = json!({"usage": {"input_tokens": 7, "output_tokens": 3}});
        assert_eq!(
            reported(CallRoute::Responses, &resp),
            Some(Usage {
                prompt_tokens: 7,
                completion_tokens: 3
            })
        );
        let emb = json!({"usage": {"prompt_tokens": 4, "total_tokens": 4}});
        assert_eq!(
            reported(CallRoute::Embeddings, &emb),
            Some(Usage {
                prompt_tokens: 4,
                completion_tokens: 0
            })
        );
        assert_eq!(reported(CallRoute::ChatCompletions, &json!({})), None);
        assert_eq!(
            reported(
                CallRoute::ChatCompletions,
                &json!({"usage": {"prompt_tokens": -1}})
            ),
            None
        );
    }

    #[test]
    fn collects_output_text_of_chat_choices() {
        let body = json!({"choices": [{"message": {"content": "hello"}}, {"message": {"content": " world"}}]});
        assert_eq!(
            output_text(CallRoute::ChatCompletions, &body),
            "hello world"
        );
    }
}
