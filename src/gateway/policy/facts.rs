//! The facts of a request that policy looks at, read once out of its body.

use serde_json::Value;

use crate::domain::CallRoute;
use crate::gateway::bound::declared_tools;
use crate::gateway::estimate::count_images;

/// The facts of one request that policy looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// The model alias, for model calls (tool calls have none).
    pub model_alias: Option<String>,
    pub stream: bool,
    /// Names of the tools the request declares (functions and built-in tool types).
    pub tool_names: Vec<String>,
    /// Whether the request declares function tools or forces a tool choice.
    pub function_calling: bool,
    pub images: usize,
    /// The input bound.
    pub prompt_tokens: u64,
    /// Choices generated (`n`); 0 reads as 1.
    pub choices: u64,
    /// The output cap per choice the request asked for, if any (the larger of its cap fields).
    pub requested_output_cap: Option<u64>,
    pub passthrough: bool,
}

impl RequestFacts {
    /// Reads the facts out of a request body.
    pub fn from_body(
        route: CallRoute,
        body: &serde_json::Map<String, Value>,
        model_alias: Option<&str>,
        prompt_tokens: u64,
        choices: u64,
        requested_output_cap: Option<u64>,
        passthrough: bool,
    ) -> Self {
        let mut tool_names = Vec::new();
        let mut function_calling = false;
        for (tool, kind) in declared_tools(body) {
            let name = tool
                .pointer("/function/name")
                .or_else(|| tool.get("name"))
                .and_then(Value::as_str);
            if kind == "function" {
                function_calling = true;
                tool_names.push(name.unwrap_or("").to_owned());
            } else {
                tool_names.push(name.unwrap_or(kind).to_owned());
            }
        }
        if route == CallRoute::ToolsExecute {
            if let Some(name) = body.get("tool_name").and_then(Value::as_str) {
                tool_names.push(name.to_owned());
            }
        }
        for f in body
            .get("functions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            function_calling = true;
            tool_names.push(
                f.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            );
        }
        let forces_choice = |key: &str| {
            body.get(key)
                .is_some_and(|c| c.as_str() != Some("none") && !c.is_null())
        };
        function_calling |= forces_choice("tool_choice") || forces_choice("function_call");
        let input = match route {
            CallRoute::ChatCompletions | CallRoute::Messages => body.get("messages"),
            _ => body.get("input"),
        };
        RequestFacts {
            model_alias: model_alias.map(str::to_owned),
            stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
            tool_names,
            function_calling,
            images: input.map(count_images).unwrap_or(0),
            prompt_tokens,
            choices,
            requested_output_cap,
            passthrough,
        }
    }
}
