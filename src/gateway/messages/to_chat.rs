//! An Anthropic Messages request as an OpenAI chat completion, for an alias served by an
//! OpenAI-compatible provider. The chat body is built from the fields it knows only, so nothing
//! the hold did not see reaches the provider: `system` → a system message, text and image blocks
//! → content parts, `tool_use` → `tool_calls`, `tool_result` → `tool` messages, `tools` →
//! functions, `tool_choice`, `stop_sequences`, sampling, `metadata.user_id` → `user`. What has
//! no chat equivalent is refused by name (documents, server tools, MCP servers); `thinking` is
//! dropped (its tokens are bounded by `max_tokens` either way).

use serde_json::{json, Map, Value};

use crate::config::{ModelRoute, TokenizerKind};
use crate::gateway::bound::Shape;
use crate::gateway::{messages_shape, GatewayError};

fn invalid(message: impl Into<String>, field: &str) -> GatewayError {
    GatewayError::invalid(message, Some(field))
}

/// The chat completion body for `body`, to be sent to `model`'s OpenAI-compatible provider.
pub fn translate(
    body: &Map<String, Value>,
    model: &ModelRoute,
) -> Result<Map<String, Value>, GatewayError> {
    messages_shape::read(body, &mut Shape::default())?;
    if body.get("mcp_servers").is_some_and(|m| !m.is_null()) {
        return Err(invalid(
            "`mcp_servers` needs an Anthropic provider: this model is served by an OpenAI-compatible one",
            "mcp_servers",
        ));
    }
    let mut out = Map::new();
    out.insert(
        "model".into(),
        body.get("model").cloned().unwrap_or(Value::Null),
    );
    let mut messages = Vec::new();
    if let Some(system) = body.get("system").filter(|s| !s.is_null()) {
        messages.push(json!({"role": "system", "content": text_of(system, "system")?}));
    }
    for (i, message) in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        translate_message(message, i, &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(messages));
    // The cap field the provider reads: OpenAI's models want the newer name.
    let cap_field = if model.tokenizer == TokenizerKind::Bytes {
        "max_tokens"
    } else {
        "max_completion_tokens"
    };
    out.insert(
        cap_field.into(),
        body.get("max_tokens").cloned().unwrap_or(Value::Null),
    );
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        out.insert(
            "tools".into(),
            Value::Array(tools.iter().map(tool).collect::<Result<_, _>>()?),
        );
    }
    if let Some(choice) = body.get("tool_choice").filter(|c| !c.is_null()) {
        tool_choice(choice, &mut out)?;
    }
    if let Some(stop) = body.get("stop_sequences").filter(|s| !s.is_null()) {
        out.insert("stop".into(), stop.clone());
    }
    for field in ["temperature", "top_p"] {
        if let Some(v) = body.get(field).filter(|v| !v.is_null()) {
            out.insert(field.into(), v.clone());
        }
    }
    if let Some(user) = body
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .filter(|u| u.is_string())
    {
        out.insert("user".into(), user.clone());
    }
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), Value::Bool(true));
        // The usage chunk becomes the final `message_delta`'s usage.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(out)
}

/// A string, or the text of an array of text blocks.
fn text_of(value: &Value, field: &str) -> Result<String, GatewayError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut text = String::new();
            for b in blocks {
                match (
                    b.get("type").and_then(Value::as_str),
                    b.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    _ => {
                        return Err(invalid(
                            format!("`{field}` may only hold text blocks here"),
                            field,
                        ))
                    }
                }
            }
            Ok(text)
        }
        _ => Err(invalid(
            format!("`{field}` must be a string or an array of text blocks"),
            field,
        )),
    }
}

/// One Messages message as one or more chat messages (tool results are messages of their own,
/// placed first: they answer the assistant's previous tool calls).
fn translate_message(message: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), GatewayError> {
    let field = format!("messages.{i}");
    let role = message.get("role").and_then(Value::as_str);
    let role = match role {
        Some(r @ ("user" | "assistant")) => r,
        _ => {
            return Err(invalid(
                "`role` must be `user` or `assistant`",
                &format!("{field}.role"),
            ))
        }
    };
    let blocks = match message.get("content") {
        Some(Value::String(s)) => {
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(invalid(
                "`content` must be a string or an array of blocks",
                &format!("{field}.content"),
            ))
        }
    };
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{field}.content.{j}");
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = block.get("text").and_then(Value::as_str).unwrap_or("");
                parts.push(json!({"type": "text", "text": text}));
            }
            Some("image") if role == "user" => parts.push(image(block, &at)?),
            Some("tool_use") if role == "assistant" => calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").cloned().unwrap_or_else(|| json!({})).to_string(),
                },
            })),
            Some("tool_result") if role == "user" => {
                let content = match block.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(c) => text_of(c, &format!("{at}.content"))?,
                };
                out.push(json!({
                    "role": "tool",
                    "tool_call_id": block.get("tool_use_id").cloned().unwrap_or(Value::Null),
                    "content": content,
                }));
            }
            // Earlier reasoning is not an input OpenAI-compatible servers take.
            Some("thinking" | "redacted_thinking") if role == "assistant" => {}
            other => {
                return Err(invalid(
                    format!("a `{}` block in a {role} message cannot be sent to an OpenAI-compatible provider", other.unwrap_or("?")),
                    &at,
                ))
            }
        }
    }
    if role == "assistant" {
        let text: String = parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        let mut m = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }});
        if !calls.is_empty() {
            m["tool_calls"] = Value::Array(calls);
        }
        out.push(m);
    } else if !parts.is_empty() {
        out.push(json!({"role": "user", "content": parts}));
    }
    Ok(())
}

fn image(block: &Value, at: &str) -> Result<Value, GatewayError> {
    let source = block.get("source");
    let url = match source.and_then(|s| s.get("type")).and_then(Value::as_str) {
        Some("base64") => {
            let media = source
                .and_then(|s| s.get("media_type"))
                .and_then(Value::as_str)
                .unwrap_or("image/png");
            let data = source
                .and_then(|s| s.get("data"))
                .and_then(Value::as_str)
                .unwrap_or("");
            format!("data:{media};base64,{data}")
        }
        Some("url") => source
            .and_then(|s| s.get("url"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        _ => {
            return Err(invalid(
                "an image's `source` must be `base64` or `url` here",
                &format!("{at}.source"),
            ))
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A client tool as a function; a server tool has no chat equivalent.
fn tool(t: &Value) -> Result<Value, GatewayError> {
    match t.get("type").and_then(Value::as_str) {
        None | Some("custom") => Ok(json!({"type": "function", "function": {
            "name": t.get("name").cloned().unwrap_or(Value::Null),
            "description": t.get("description").cloned().unwrap_or(Value::Null),
            "parameters": t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"})),
        }})),
        Some(kind) => Err(invalid(
            format!("tool type `{kind}` needs an Anthropic provider: this model is served by an OpenAI-compatible one"),
            "tools",
        )),
    }
}

fn tool_choice(choice: &Value, out: &mut Map<String, Value>) -> Result<(), GatewayError> {
    let chat = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            json!({"type": "function", "function": {"name": choice.get("name").cloned().unwrap_or(Value::Null)}})
        }
        _ => {
            return Err(invalid(
                "`tool_choice.type` must be auto, any, tool or none",
                "tool_choice",
            ))
        }
    };
    out.insert("tool_choice".into(), chat);
    if choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        == Some(true)
    {
        out.insert("parallel_tool_calls".into(), Value::Bool(false));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(tokenizer: TokenizerKind) -> ModelRoute {
        let table = crate::config::RoutingTable::parse(
            "[providers.p]\nkind = \"openai\"\nbase_url = \"http://x/v1\"\n[models.m]\nprovider = \"p\"\nupstream_model = \"m\"\ninput_usd_per_million = \"1\"\noutput_usd_per_million = \"1\"\ncapabilities = [\"chat\"]\n",
            1,
        )
        .unwrap();
        let mut m = (**table.model("m").unwrap()).clone();
        m.tokenizer = tokenizer;
        m
    }

    #[test]
    fn a_tool_round_trip_becomes_tool_calls_and_a_tool_message() {
        let body = json!({"model": "m", "max_tokens": 50, "system": [{"type": "text", "text": "be brief"}],
            "tools": [{"name": "get_weather", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [{"type": "text", "text": "checking"}, {"type": "tool_use", "id": "tu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": "sunny"}, {"type": "text", "text": "thanks"}]}
            ], "stream": true});
        let chat = translate(body.as_object().unwrap(), &model(TokenizerKind::Bytes)).unwrap();
        let m = chat["messages"].as_array().unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(
            m[2]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "tu_1", "content": "sunny"})
        );
        assert_eq!(m[4]["content"][0]["text"], "thanks");
        assert_eq!(chat["max_tokens"], 50);
        assert_eq!(chat["tool_choice"], "required");
        assert_eq!(chat["parallel_tool_calls"], false);
        assert_eq!(
            chat["tools"][0]["function"]["parameters"],
            json!({"type": "object"})
        );
        assert_eq!(chat["stream_options"]["include_usage"], true);
        let openai =
            translate(body.as_object().unwrap(), &model(TokenizerKind::O200kBase)).unwrap();
        assert_eq!(openai["max_completion_tokens"], 50);
        assert!(openai.get("max_tokens").is_none());
    }

    #[test]
    fn what_has_no_chat_form_is_refused_by_name() {
        for (body, field) in [
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
                "max_tokens",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}),
                "messages.0.content.0",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "tools": [{"type": "web_search_20250305", "name": "web_search"}], "messages": [{"role": "user", "content": "x"}]}),
                "tools",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}),
                "messages.0.role",
            ),
        ] {
            let err =
                translate(body.as_object().unwrap(), &model(TokenizerKind::Bytes)).unwrap_err();
            assert_eq!(err.param(), Some(field), "{err}");
        }
    }
}
