//! Usage as providers report it, per route: tokens (with the cached and cache-write parts of the
//! input) and hosted-tool calls.

use serde_json::Value;

use crate::domain::CallRoute;

/// What one call used, as billed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Every input token, cached and cache-write ones included.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Of `prompt_tokens`, those read from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Of `prompt_tokens`, those written to the provider's prompt cache.
    pub cache_write_tokens: u64,
    /// Hosted-tool calls the provider made.
    pub hosted_calls: HostedCalls,
}

impl Usage {
    /// Plain prompt and completion tokens, nothing cached, no hosted tool.
    pub fn tokens(prompt_tokens: u64, completion_tokens: u64) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            ..Usage::default()
        }
    }
}

/// The hosted tools providers bill per call, by the name a routing table prices them under
/// (`hosted_tool_usd_per_call`); a provider's call item is the name with `_call` (`computer_call`
/// for `computer_use`).
pub const HOSTED_TOOLS: [&str; 7] = [
    "web_search",
    "file_search",
    "code_interpreter",
    "image_generation",
    "computer_use",
    "mcp",
    "local_shell",
];

/// Calls of each of [`HOSTED_TOOLS`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostedCalls(pub [u64; HOSTED_TOOLS.len()]);

impl HostedCalls {
    /// The tool a provider's output item is a call of (`web_search_call` → `web_search`).
    fn index_of_item(item_type: &str) -> Option<usize> {
        let name = item_type.strip_suffix("_call")?;
        let name = if name == "computer" {
            "computer_use"
        } else {
            name
        };
        HOSTED_TOOLS.iter().position(|t| *t == name)
    }

    /// Counts the hosted-tool call items of a responses `output` array.
    pub fn of_output(output: &Value) -> HostedCalls {
        let mut calls = HostedCalls::default();
        for item in output.as_array().into_iter().flatten() {
            calls.count_item(item);
        }
        calls
    }

    /// Counts `item` when it is a hosted-tool call.
    pub fn count_item(&mut self, item: &Value) {
        if let Some(i) = item
            .get("type")
            .and_then(Value::as_str)
            .and_then(Self::index_of_item)
        {
            self.0[i] += 1;
        }
    }

    pub fn add(&mut self, tool: &str, calls: u64) {
        if let Some(i) = HOSTED_TOOLS.iter().position(|t| *t == tool) {
            self.0[i] = self.0[i].saturating_add(calls);
        }
    }

    pub fn total(&self) -> u64 {
        self.0.iter().fold(0, |a, b| a.saturating_add(*b))
    }

    /// The tools called, with their counts.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        HOSTED_TOOLS
            .iter()
            .zip(self.0)
            .filter(|(_, n)| *n > 0)
            .map(|(t, n)| (*t, n))
    }
}

/// Reads the `usage` object of a response body: `prompt_tokens`/`completion_tokens` (with
/// `prompt_tokens_details.cached_tokens` and `.cache_write_tokens`) for chat, completions and
/// embeddings, `input_tokens`/`output_tokens` (with `input_tokens_details`) for responses, and
/// the hosted-tool calls of a responses `output`. `None` when absent or malformed.
pub fn reported(route: CallRoute, body: &Value) -> Option<Usage> {
    let usage = body.get("usage")?;
    let int = |name: &str| usage.get(name).and_then(Value::as_u64);
    let detail = |details: &str, name: &str| {
        usage
            .get(details)
            .and_then(|d| d.get(name))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    match route {
        CallRoute::Responses => Some(Usage {
            prompt_tokens: int("input_tokens")?,
            completion_tokens: int("output_tokens")?,
            cached_tokens: detail("input_tokens_details", "cached_tokens"),
            cache_write_tokens: detail("input_tokens_details", "cache_write_tokens"),
            hosted_calls: HostedCalls::of_output(body.get("output").unwrap_or(&Value::Null)),
        }),
        CallRoute::Messages => messages_usage(usage),
        CallRoute::Embeddings => Some(Usage::tokens(
            int("prompt_tokens").or_else(|| int("total_tokens"))?,
            0,
        )),
        _ => Some(Usage {
            prompt_tokens: int("prompt_tokens")?,
            completion_tokens: int("completion_tokens").unwrap_or(0),
            cached_tokens: detail("prompt_tokens_details", "cached_tokens"),
            cache_write_tokens: detail("prompt_tokens_details", "cache_write_tokens"),
            hosted_calls: HostedCalls::default(),
        }),
    }
}

/// Anthropic's `usage`: `input_tokens` excludes the cached prefix, so the input billed is it plus
/// the cache reads (`cache_read_input_tokens`, at the cached price) and the cache writes
/// (`cache_creation_input_tokens`, at the cache-write price); `output_tokens` includes thinking;
/// `server_tool_use.web_search_requests` are hosted `web_search` calls.
pub fn messages_usage(usage: &Value) -> Option<Usage> {
    let int = |name: &str| usage.get(name).and_then(Value::as_u64);
    let read = int("cache_read_input_tokens").unwrap_or(0);
    let write = int("cache_creation_input_tokens").unwrap_or(0);
    let mut hosted_calls = HostedCalls::default();
    if let Some(searches) = usage
        .pointer("/server_tool_use/web_search_requests")
        .and_then(Value::as_u64)
    {
        hosted_calls.add("web_search", searches);
    }
    Some(Usage {
        prompt_tokens: int("input_tokens")?
            .saturating_add(read)
            .saturating_add(write),
        completion_tokens: int("output_tokens")?,
        cached_tokens: read,
        cache_write_tokens: write,
        hosted_calls,
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
    fn anthropic_usage_bills_cache_reads_writes_and_searches_apart() {
        let body = json!({"usage": {"input_tokens": 10, "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 40, "output_tokens": 7,
            "server_tool_use": {"web_search_requests": 2}}});
        let u = reported(CallRoute::Messages, &body).unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (150, 7));
        assert_eq!((u.cached_tokens, u.cache_write_tokens), (100, 40));
        assert_eq!(
            u.hosted_calls.iter().collect::<Vec<_>>(),
            [("web_search", 2)]
        );
        assert_eq!(
            reported(CallRoute::Messages, &json!({"usage": {"output_tokens": 1}})),
            None
        );
    }

    #[test]
    fn reads_usage_in_each_route_shape() {
        let chat =
            json!({"usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}});
        assert_eq!(
            reported(CallRoute::ChatCompletions, &chat),
            Some(Usage::tokens(10, 5))
        );
        let resp = json!({"usage": {"input_tokens": 7, "output_tokens": 3}});
        assert_eq!(
            reported(CallRoute::Responses, &resp),
            Some(Usage::tokens(7, 3))
        );
        let emb = json!({"usage": {"prompt_tokens": 4, "total_tokens": 4}});
        assert_eq!(
            reported(CallRoute::Embeddings, &emb),
            Some(Usage::tokens(4, 0))
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
    fn reads_cached_and_cache_write_tokens_and_hosted_calls() {
        let chat = json!({"usage": {"prompt_tokens": 100, "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 64, "cache_write_tokens": 8}}});
        let u = reported(CallRoute::ChatCompletions, &chat).unwrap();
        assert_eq!((u.cached_tokens, u.cache_write_tokens), (64, 8));
        let resp = json!({"output": [{"type": "web_search_call"}, {"type": "message"},
            {"type": "web_search_call"}, {"type": "function_call"}, {"type": "computer_call"}],
            "usage": {"input_tokens": 9, "output_tokens": 1,
            "input_tokens_details": {"cached_tokens": 3}}});
        let u = reported(CallRoute::Responses, &resp).unwrap();
        assert_eq!(u.cached_tokens, 3);
        let calls: Vec<_> = u.hosted_calls.iter().collect();
        assert_eq!(calls, vec![("web_search", 2), ("computer_use", 1)]);
        assert_eq!(u.hosted_calls.total(), 3);
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
