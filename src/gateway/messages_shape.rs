//! The parts of an Anthropic Messages request (`/v1/messages`) that change the bill, read before
//! admission: the hold's bound of [`super::bound`] covers the rest the same way as for chat
//! (messages, images, files, tools). [`MESSAGES_FIELDS`] is this route's part of the field table.

use serde_json::{Map, Value};

use super::bound::{FieldRule, MAX_OUTPUT_CAP};
use super::GatewayError;

/// Every field of Anthropic's Messages request that can change the bill, and how the hold
/// bounds it. Fields not listed (`temperature`, `top_k`, `top_p`, `stop_sequences`, `metadata`,
/// `tool_choice`, `stream`) do not change what is billed.
pub const MESSAGES_FIELDS: &[FieldRule] = &[
    FieldRule {
        field: "max_tokens",
        routes: "messages",
        bound: "required (a positive integer, else 400); the cap, sent as the held cap (thinking tokens are part of it)",
    },
    FieldRule {
        field: "system, messages (text, tool_use, tool_result, thinking)",
        routes: "messages",
        bound: "tokenizer count of every string + per-message framing (unknown tokenizer: one token per byte, + chat_template_tokens)",
    },
    FieldRule {
        field: "tools (client tools with input_schema)",
        routes: "messages",
        bound: "tokenizer count of their JSON + Anthropic's tool-use system prompt (600 tokens)",
    },
    FieldRule {
        field: "tools[].type (server and Anthropic-defined tools: web_search_*, bash_*, …), mcp_servers",
        routes: "messages",
        bound: "as hosted tools: hosted_tool_usd_per_call by type, context_window per step; unpriced: 400",
    },
    FieldRule {
        field: "image blocks",
        routes: "messages",
        bound: "image_part_tokens per block",
    },
    FieldRule {
        field: "document, container_upload blocks",
        routes: "messages",
        bound: "context_window at the input price; unset: 400",
    },
    FieldRule {
        field: "thinking",
        routes: "messages",
        bound: "`enabled` needs budget_tokens below max_tokens (else 400): thinking is output within the cap",
    },
    FieldRule {
        field: "n",
        routes: "messages",
        bound: "absent or 1 (Anthropic generates one answer); else 400",
    },
    FieldRule {
        field: "service_tier",
        routes: "messages",
        bound: "auto or standard_only; any other value: 400",
    },
];

fn invalid(message: impl Into<String>, field: &str) -> GatewayError {
    GatewayError::invalid(message, Some(field))
}

/// Checks what only this route has: the required cap, one answer, thinking inside the cap, and
/// remote MCP servers as a hosted tool.
pub fn read(
    body: &Map<String, Value>,
    shape: &mut super::bound::Shape,
) -> Result<(), GatewayError> {
    let max_tokens = match body.get("max_tokens") {
        Some(v) => v.as_u64().filter(|n| (1..=MAX_OUTPUT_CAP).contains(n)),
        None => None,
    };
    let Some(max_tokens) = max_tokens else {
        return Err(invalid(
            format!("`max_tokens` is required and must be a positive integer of at most {MAX_OUTPUT_CAP}"),
            "max_tokens",
        ));
    };
    if body.get("n").is_some_and(|n| n.as_u64() != Some(1)) {
        return Err(invalid(
            "`n` is not a Messages API field: one answer is generated",
            "n",
        ));
    }
    if let Some(thinking) = body.get("thinking").filter(|t| !t.is_null()) {
        let kind = thinking.get("type").and_then(Value::as_str);
        match kind {
            Some("disabled") => {}
            Some("enabled") => {
                let budget = thinking.get("budget_tokens").and_then(Value::as_u64);
                if !budget.is_some_and(|b| b > 0 && b < max_tokens) {
                    return Err(invalid(
                        "`thinking.budget_tokens` must be a positive integer below `max_tokens`: thinking is output within the cap",
                        "thinking.budget_tokens",
                    ));
                }
            }
            _ => {
                return Err(invalid(
                    "`thinking.type` must be `enabled` or `disabled`",
                    "thinking",
                ))
            }
        }
    }
    if body
        .get("mcp_servers")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty())
        && !shape.hosted_tools.iter().any(|t| t == "mcp_servers")
    {
        // Remote tools: their results are read back as input AEX cannot see.
        shape.hosted_tools.push("mcp_servers".to_owned());
    }
    Ok(())
}
