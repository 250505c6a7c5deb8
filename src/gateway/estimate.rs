//! The cost estimate a reservation holds: prompt tokens counted with a real tokenizer (tiktoken's
//! BPE encodings for OpenAI model families, counted exactly by [`crate::tokenizer`]; else one
//! token per UTF-8 byte, a bound no BPE vocabulary can exceed) plus the output cap at the output
//! price.
//!
//! Counting is conservative by construction: every string value of the input is counted (role
//! names and structural strings included) and each message and content part adds overhead.
//! Image, audio and file parts count nothing here: [`super::bound`] adds each model's worst case
//! for them. Over-estimating only holds a little more money for the duration of a call;
//! settlement charges the provider's reported usage.

use std::sync::LazyLock;

use serde_json::Value;

use crate::config::TokenizerKind;
use crate::domain::CallRoute;
use crate::money::MicroUsd;
use crate::tokenizer::{Encoding, LoadError};

/// Per-message overhead (OpenAI's chat format adds 3–4 tokens per message).
const PER_MESSAGE: u64 = 4;
/// Reply priming and request framing.
const PRIMING: u64 = 3;
/// Framing added around function/tool schemas.
const TOOLS_OVERHEAD: u64 = 16;
/// The system prompt Anthropic adds when a request declares tools, billed as input but not in the
/// body: at most 530 tokens over its published models (Claude 3 Opus, `auto`), rounded up.
pub const ANTHROPIC_TOOL_PROMPT_TOKENS: u64 = 600;

static O200K: LazyLock<Option<Encoding>> = LazyLock::new(|| loaded(Encoding::o200k_base()));
static CL100K: LazyLock<Option<Encoding>> = LazyLock::new(|| loaded(Encoding::cl100k_base()));

fn loaded(encoding: Result<Encoding, LoadError>) -> Option<Encoding> {
    encoding
        .inspect_err(|error| tracing::error!(%error, "tokenizer not loaded: counting bytes"))
        .ok()
}

/// Loads the BPE tables (about 6 MB for both, some 50 ms) now rather than on the first request.
pub fn warm_up() {
    LazyLock::force(&O200K);
    LazyLock::force(&CL100K);
}

/// Tokens of `text` under `kind`; falls back to the byte bound if a table failed to load.
pub fn count_text(kind: TokenizerKind, text: &str) -> u64 {
    let bpe = match kind {
        TokenizerKind::O200kBase => O200K.as_ref(),
        TokenizerKind::Cl100kBase => CL100K.as_ref(),
        TokenizerKind::Bytes => None,
    };
    match bpe {
        Some(bpe) => bpe.count(text) as u64,
        None => text.len() as u64,
    }
}

/// A content part AEX cannot tokenize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Image,
    Audio,
    File,
}

/// What kind of untokenizable part `obj` is, if it is one.
pub fn part_kind(obj: &serde_json::Map<String, Value>) -> Option<Part> {
    match obj.get("type").and_then(Value::as_str)? {
        "image_url" | "input_image" | "image" => Some(Part::Image),
        "input_audio" | "audio" => Some(Part::Audio),
        // Anthropic's `document` (PDF, or a file by id) and code-execution uploads.
        "file" | "input_file" | "document" | "container_upload" => Some(Part::File),
        _ => None,
    }
}

fn is_image_part(obj: &serde_json::Map<String, Value>) -> bool {
    part_kind(obj) == Some(Part::Image)
}

/// Tokens of an input tree: every string and number counted, one token of overhead per object;
/// image, audio and file parts count nothing here (their bound is the model's, added by
/// [`super::bound`]).
pub fn count_value(kind: TokenizerKind, value: &Value) -> u64 {
    match value {
        Value::String(s) => count_text(kind, s),
        Value::Number(n) => count_text(kind, &n.to_string()),
        Value::Bool(_) => 1,
        Value::Null => 0,
        Value::Array(items) => items.iter().map(|v| count_value(kind, v)).sum(),
        Value::Object(obj) if part_kind(obj).is_some() => 1,
        Value::Object(obj) => 1 + obj.values().map(|v| count_value(kind, v)).sum::<u64>(),
    }
}

/// Counts the number of images in an input tree (for the vision policy).
pub fn count_images(value: &Value) -> usize {
    match value {
        Value::Array(items) => items.iter().map(count_images).sum(),
        Value::Object(obj) if is_image_part(obj) => 1,
        Value::Object(obj) => obj.values().map(count_images).sum(),
        _ => 0,
    }
}

/// Prompt tokens of a request body for `route`.
pub fn prompt_tokens(
    route: CallRoute,
    kind: TokenizerKind,
    body: &serde_json::Map<String, Value>,
) -> u64 {
    let tools = body
        .get("tools")
        .or_else(|| body.get("functions"))
        .map(|t| count_text(kind, &t.to_string()) + TOOLS_OVERHEAD)
        .unwrap_or(0);
    let schema = body
        .get("response_format")
        .or_else(|| body.get("text"))
        .map(|f| count_text(kind, &f.to_string()))
        .unwrap_or(0);
    match route {
        CallRoute::ChatCompletions => PRIMING + messages_tokens(kind, body) + tools + schema,
        CallRoute::Responses => {
            let input = body.get("input").map(|v| count_value(kind, v)).unwrap_or(0);
            let instructions = body
                .get("instructions")
                .map(|v| count_value(kind, v))
                .unwrap_or(0);
            PRIMING + input + instructions + tools + schema
        }
        CallRoute::Embeddings => match body.get("input") {
            // Pre-tokenised input: arrays of token ids count one token per id.
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::Number(_) => 1,
                    Value::Array(ids) => ids.len() as u64,
                    other => count_value(kind, other),
                })
                .sum(),
            Some(other) => count_value(kind, other),
            None => 0,
        },
        CallRoute::Messages => {
            let system = body.get("system").map_or(0, |s| count_value(kind, s));
            // Anthropic adds its own tool-use system prompt whenever tools are declared.
            let tool_prompt = if body.get("tools").is_some_and(|t| !t.is_null()) {
                ANTHROPIC_TOOL_PROMPT_TOKENS
            } else {
                0
            };
            PRIMING + messages_tokens(kind, body) + system + tools + tool_prompt
        }
        CallRoute::ToolsExecute => 0,
    }
}

/// Tokens of a `messages` array, each message with its framing.
fn messages_tokens(kind: TokenizerKind, body: &serde_json::Map<String, Value>) -> u64 {
    let messages = body.get("messages").and_then(Value::as_array);
    messages
        .into_iter()
        .flatten()
        .map(|m| PER_MESSAGE + count_value(kind, m))
        .sum()
}

/// What a reservation is sized by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// The bound of input tokens.
    pub prompt_tokens: u64,
    /// The output cap per choice sent upstream; `None` for routes without output (embeddings).
    pub output_cap: Option<u64>,
    /// The bound of output tokens: every choice at the cap, plus predicted output.
    pub output_tokens: u64,
    pub cost: MicroUsd,
}

impl Estimate {
    /// Tokens this estimate counts against a TPM window.
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.output_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn counts_chat_prompts_with_the_model_family_tokenizer() {
        let body = obj(json!({"messages": [{"role": "user", "content": "Hello, world!"}]}));
        let n = prompt_tokens(CallRoute::ChatCompletions, TokenizerKind::O200kBase, &body);
        // "Hello, world!" is 4 tokens in o200k; "user" 1; +1 object +4 message +3 priming.
        assert_eq!(n, 4 + 1 + 1 + PER_MESSAGE + PRIMING);
    }

    #[test]
    fn the_byte_bound_is_never_below_the_bpe_count() {
        let text = "The quick brown fox — jumps over the lazy dog. 你好世界 🦀";
        let body = obj(json!({"messages": [{"role": "user", "content": text}]}));
        let bpe = prompt_tokens(CallRoute::ChatCompletions, TokenizerKind::O200kBase, &body);
        let bytes = prompt_tokens(CallRoute::ChatCompletions, TokenizerKind::Bytes, &body);
        assert!(bytes >= bpe, "{bytes} < {bpe}");
    }

    #[test]
    fn images_are_left_to_the_bound_not_counted_by_their_base64() {
        let b64 = "QUFB".repeat(1000);
        let body = obj(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{b64}")}}
        ]}]}));
        let n = prompt_tokens(CallRoute::ChatCompletions, TokenizerKind::O200kBase, &body);
        assert!(n < 100, "{n}");
        assert_eq!(count_images(body.get("messages").unwrap()), 1);
    }

    #[test]
    fn embeddings_of_token_ids_count_one_per_id() {
        let body = obj(json!({"input": [[1, 2, 3], [4, 5]]}));
        assert_eq!(
            prompt_tokens(CallRoute::Embeddings, TokenizerKind::Cl100kBase, &body),
            5
        );
    }

    #[test]
    fn a_messages_request_counts_its_system_and_anthropics_tool_prompt() {
        let plain =
            obj(json!({"system": "be brief", "messages": [{"role": "user", "content": "hi"}]}));
        let chat = obj(json!({"messages": [{"role": "user", "content": "hi"}]}));
        let kind = TokenizerKind::O200kBase;
        let system = count_text(kind, "be brief");
        assert_eq!(
            prompt_tokens(CallRoute::Messages, kind, &plain),
            prompt_tokens(CallRoute::ChatCompletions, kind, &chat) + system
        );
        let mut with_tools = plain.clone();
        with_tools.insert("tools".into(), json!([{"name": "f", "input_schema": {}}]));
        assert!(
            prompt_tokens(CallRoute::Messages, kind, &with_tools)
                > prompt_tokens(CallRoute::Messages, kind, &plain) + ANTHROPIC_TOOL_PROMPT_TOKENS
        );
    }

    #[test]
    fn tools_add_their_schema_tokens() {
        let plain = obj(json!({"messages": [{"role": "user", "content": "hi"}]}));
        let mut with_tools = plain.clone();
        with_tools.insert("tools".into(), json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]));
        let a = prompt_tokens(CallRoute::ChatCompletions, TokenizerKind::O200kBase, &plain);
        let b = prompt_tokens(
            CallRoute::ChatCompletions,
            TokenizerKind::O200kBase,
            &with_tools,
        );
        assert!(b > a + TOOLS_OVERHEAD);
    }
}
