//! How the mock bills beyond plain tokens, as OpenAI does: a part of the prompt read from (and
//! written to) the prompt cache, reported in the usage details, and hosted-tool calls reported as
//! call items of a responses answer.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

/// The mock's billing knobs (`MockControl::billing`).
#[derive(Debug)]
pub struct BillingKnobs {
    /// Prompt tokens reported as read from the prompt cache, and as written to it (each at most
    /// what remains of the prompt).
    pub cached_tokens: AtomicU64,
    pub cache_write_tokens: AtomicU64,
    /// Hosted-tool calls made per responses request that declares a hosted tool (at most its
    /// `max_tool_calls`).
    pub hosted_tool_calls: AtomicU64,
}

impl Default for BillingKnobs {
    fn default() -> Self {
        BillingKnobs {
            cached_tokens: AtomicU64::new(0),
            cache_write_tokens: AtomicU64::new(0),
            hosted_tool_calls: AtomicU64::new(1),
        }
    }
}

/// The cached and cache-write tokens of a prompt of `prompt` tokens: the configured counts, never
/// more than the prompt (cached first).
pub fn cache_split(c: &BillingKnobs, prompt: u64) -> (u64, u64) {
    let cached = c.cached_tokens.load(Ordering::SeqCst).min(prompt);
    let written = c
        .cache_write_tokens
        .load(Ordering::SeqCst)
        .min(prompt - cached);
    (cached, written)
}

/// `prompt_tokens_details` (chat) or `input_tokens_details` (responses) for a prompt.
pub fn cache_details(c: &BillingKnobs, prompt: u64) -> Value {
    let (cached, written) = cache_split(c, prompt);
    let mut details = json!({"cached_tokens": cached});
    if written > 0 {
        details["cache_write_tokens"] = json!(written);
    }
    details
}

/// The call item a provider reports for a hosted tool type (`web_search_preview` →
/// `web_search_call`, `computer_use_preview` → `computer_call`).
fn call_item_type(tool: &str) -> String {
    if tool.starts_with("web_search") {
        "web_search_call".to_owned()
    } else if tool.starts_with("computer_use") {
        "computer_call".to_owned()
    } else {
        format!("{tool}_call")
    }
}

/// The hosted-tool call items of a responses answer: for the first hosted tool the request
/// declares, `hosted_tool_calls` calls (under `bill_max`, the `max_tool_calls` sent), never
/// more than `max_tool_calls` unless told to ignore the caps (`ignore_cap`).
pub fn hosted_call_items(
    c: &BillingKnobs,
    body: &Value,
    bill_max: bool,
    ignore_cap: bool,
) -> Vec<Value> {
    let hosted = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("type").and_then(Value::as_str))
        .find(|t| !matches!(*t, "function" | "custom"));
    let Some(tool) = hosted else {
        return Vec::new();
    };
    let limit = body.get("max_tool_calls").and_then(Value::as_u64);
    let mut calls = c.hosted_tool_calls.load(Ordering::SeqCst);
    if bill_max {
        calls = limit.unwrap_or(calls);
    } else if !ignore_cap {
        calls = limit.map_or(calls, |l| calls.min(l));
    }
    let kind = call_item_type(tool);
    (0..calls)
        .map(|i| json!({"type": kind, "id": format!("ws_mock_{i}"), "status": "completed"}))
        .collect()
}
