//! The field table: every request field that changes the bill, and how the hold bounds it.

/// One row of the field table: a field (or part type) and how the hold bounds it.
pub struct FieldRule {
    pub field: &'static str,
    pub routes: &'static str,
    pub bound: &'static str,
}

/// Every field of OpenAI's chat completions, responses and embeddings requests that can change
/// the bill, and how the hold bounds it. Fields not listed (sampling, `seed`, `user`, `metadata`,
/// `logprobs`, `stop`, `tool_choice`, `store`, …) do not change what is billed.
pub const FIELDS: &[FieldRule] = &[
    FieldRule {
        field: "messages / input / instructions (text)",
        routes: "chat, responses",
        bound: "tokenizer count (o200k/cl100k exact; else one token per byte) + per-message framing",
    },
    FieldRule {
        field: "chat template (unknown tokenizer)",
        routes: "chat, responses, embeddings",
        bound: "+ chat_template_tokens per message and once per request, per input for embeddings (default 32 when the tokenizer is unknown, else 0)",
    },
    FieldRule {
        field: "tools / functions / response_format / text (schemas)",
        routes: "chat, responses",
        bound: "tokenizer count of their JSON + framing",
    },
    FieldRule {
        field: "max_tokens, max_completion_tokens",
        routes: "chat",
        bound: "the larger is the cap; every cap field present (null included) is sent as the held cap; none: the policy/model default is sent",
    },
    FieldRule {
        field: "max_output_tokens",
        routes: "responses",
        bound: "the cap; sent as the held cap",
    },
    FieldRule {
        field: "n",
        routes: "chat, responses",
        bound: "output = n × cap (integer 1..=128, else 400)",
    },
    FieldRule {
        field: "image part (image_url, input_image, image)",
        routes: "chat, responses",
        bound: "image_part_tokens per part (default 48,169: gpt-4o-mini's largest high-detail image)",
    },
    FieldRule {
        field: "audio part (input_audio)",
        routes: "chat, responses",
        bound: "audio_part_tokens per part; unset: 400 naming the setting",
    },
    FieldRule {
        field: "file part (file, input_file)",
        routes: "chat, responses",
        bound: "context_window at the input price; unset: 400",
    },
    FieldRule {
        field: "previous_response_id, conversation, prompt, item_reference, encrypted_content, message audio by id",
        routes: "responses (chat: message audio)",
        bound: "context_window at the input price; unset: 400",
    },
    FieldRule {
        field: "prediction",
        routes: "chat",
        bound: "its tokens added to each choice's output (rejected prediction tokens bill as output)",
    },
    FieldRule {
        field: "hosted tools (tools[].type other than function/custom), web_search_options",
        routes: "chat, responses",
        bound: "hosted_tool_usd_per_call × calls + (calls + 1) × context_window input; calls = max_tool_calls ≤ max_hosted_tool_calls, sent upstream; unpriced tool or no context_window: 400",
    },
    FieldRule {
        field: "max_tool_calls",
        routes: "responses",
        bound: "positive integer; lowered to the model's max_hosted_tool_calls",
    },
    FieldRule {
        field: "service_tier",
        routes: "chat, responses",
        bound: "auto/default/flex (priced at the table's prices or less); priority/scale: 400",
    },
    FieldRule {
        field: "background",
        routes: "responses",
        bound: "true: 400 (usage would arrive after settlement)",
    },
    FieldRule {
        field: "modalities with audio, audio",
        routes: "chat",
        bound: "400 (audio output bills at audio prices the table does not have)",
    },
    FieldRule {
        field: "prompt, suffix, n, best_of, max_tokens",
        routes: "completions",
        bound: "each prompt of an array is its own completion: output = prompts × max(n, best_of) × cap (best_of ≤ 20 and ≥ n, else 400); no max_tokens: OpenAI's default 16 is sent; the suffix counts once per prompt",
    },
    FieldRule {
        field: "input (embeddings)",
        routes: "embeddings",
        bound: "string, array of strings, array of token ids, array of arrays of token ids (≤ 2048 items): strings by tokenizer, ids one each; any other shape: 400",
    },
];
