//! One test per row of [`FIELDS`]: each row's example request, bounded on a table of models,
//! shows the bound the row claims (or the refusal naming the field).

use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::config::RoutingTable;

const TABLE: &str = r#"
[providers.p]
kind = "openai"
base_url = "http://127.0.0.1:1/v1"

[models.mini]
provider = "p"
upstream_model = "gpt-4o-mini"
input_usd_per_million = "0.15"
output_usd_per_million = "0.60"
max_output_tokens = 1000
context_window = 128000
audio_part_tokens = 20000
hosted_tool_usd_per_call = { web_search = "0.025" }
max_hosted_tool_calls = 3
capabilities = ["chat", "responses", "vision"]

[models.bare]
provider = "p"
upstream_model = "gpt-4o-mini"
input_usd_per_million = "0.15"
output_usd_per_million = "0.60"
capabilities = ["chat", "responses"]

[models.gemma]
provider = "p"
upstream_model = "gemma-3-270m"
input_usd_per_million = "1"
output_usd_per_million = "1"
capabilities = ["chat"]

[models.emb]
provider = "p"
upstream_model = "text-embedding-3-small"
input_usd_per_million = "0.02"
capabilities = ["embeddings"]
"#;

fn model(alias: &str) -> Arc<ModelRoute> {
    let t = RoutingTable::parse(TABLE, 1).unwrap();
    Arc::clone(t.model(alias).unwrap())
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

fn chat(extra: Value) -> Map<String, Value> {
    let mut b = obj(json!({"model": "mini", "messages": [{"role": "user", "content": "hi"}]}));
    b.extend(obj(extra));
    b
}

fn responses(extra: Value) -> Map<String, Value> {
    let mut b = obj(json!({"model": "mini", "input": "hi"}));
    b.extend(obj(extra));
    b
}

/// The bound of `body` on `alias`, or the field the refusal names.
fn bound(
    route: CallRoute,
    alias: &str,
    body: &Map<String, Value>,
) -> Result<(Shape, Bound), String> {
    let fail = |e: GatewayError| match e {
        GatewayError::InvalidRequest { param, .. } => param.unwrap_or_default(),
        other => panic!("{other}"),
    };
    let shape = read(route, body).map_err(fail)?;
    let b = Bound::for_model(route, &shape, &model(alias), body).map_err(fail)?;
    Ok((shape, b))
}

fn plain(route: CallRoute, alias: &str) -> Bound {
    let body = match route {
        CallRoute::Responses => responses(json!({})),
        _ => chat(json!({})),
    };
    bound(route, alias, &body).unwrap().1
}

const CHAT: CallRoute = CallRoute::ChatCompletions;
const RESP: CallRoute = CallRoute::Responses;

/// Each row's check, by the row's field name.
fn check_row(field: &str) {
    match field {
        "messages / input / instructions (text)" => {
            let long = chat(json!({"messages": [{"role": "user", "content": "hello world ".repeat(50)}]}));
            let (_, b) = bound(CHAT, "mini", &long).unwrap();
            assert!(b.prompt_tokens >= 100, "{b:?}");
            let (_, r) = bound(RESP, "mini", &responses(json!({"instructions": "be brief ".repeat(50)}))).unwrap();
            assert!(r.prompt_tokens >= 100, "{r:?}");
        }
        "chat template (unknown tokenizer)" => {
            let body = chat(json!({"model": "gemma", "messages": [{"role": "user", "content": "Hello"}]}));
            let (_, b) = bound(CHAT, "gemma", &body).unwrap();
            // The llama.cpp case of the issue: "Hello" billed 27 by Gemma's template.
            let text = crate::gateway::estimate::prompt_tokens(CHAT, crate::config::TokenizerKind::Bytes, &body);
            assert_eq!(b.prompt_tokens, text + 2 * u64::from(crate::config::DEFAULT_CHAT_TEMPLATE_TOKENS));
            assert!(b.prompt_tokens >= 27);
            // A one-byte embeddings input still has room for the special tokens around it.
            let emb = obj(json!({"model": "gemma", "input": ["a", "b"]}));
            let (_, e) = bound(CallRoute::Embeddings, "gemma", &emb).unwrap();
            assert_eq!(e.prompt_tokens, 2 + 2 * u64::from(crate::config::DEFAULT_CHAT_TEMPLATE_TOKENS));
            assert_eq!(plain(CHAT, "mini").prompt_tokens, crate::gateway::estimate::prompt_tokens(CHAT, crate::config::TokenizerKind::O200kBase, &chat(json!({}))));
        }
        "tools / functions / response_format / text (schemas)" => {
            let body = chat(json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}], "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}));
            assert!(bound(CHAT, "mini", &body).unwrap().1.prompt_tokens > plain(CHAT, "mini").prompt_tokens + 20);
        }
        "max_tokens, max_completion_tokens" => {
            let (s, _) = bound(CHAT, "mini", &chat(json!({"max_completion_tokens": 1, "max_tokens": 50}))).unwrap();
            assert_eq!(s.requested_cap, Some(50));
            assert_eq!(s.cap_fields, vec!["max_tokens", "max_completion_tokens"]);
            let (s, _) = bound(CHAT, "mini", &chat(json!({"max_completion_tokens": null, "max_tokens": 50}))).unwrap();
            assert_eq!(s.requested_cap, Some(50));
            assert_eq!(s.cap_fields.len(), 2, "the null field is sent the held cap too");
            assert_eq!(bound(CHAT, "mini", &chat(json!({"max_tokens": 0}))).unwrap_err(), "max_tokens");
            assert_eq!(bound(CHAT, "mini", &chat(json!({"max_completion_tokens": "9"}))).unwrap_err(), "max_completion_tokens");
        }
        "max_output_tokens" => {
            let (s, _) = bound(RESP, "mini", &responses(json!({"max_output_tokens": 70}))).unwrap();
            assert_eq!((s.requested_cap, s.cap_fields), (Some(70), vec!["max_output_tokens"]));
        }
        "n" => {
            let (_, b) = bound(CHAT, "mini", &chat(json!({"n": 100}))).unwrap();
            assert_eq!(b.output_tokens(7), 700);
            assert_eq!(bound(CHAT, "mini", &chat(json!({"n": 129}))).unwrap_err(), "n");
            assert_eq!(bound(CHAT, "mini", &chat(json!({"n": 0}))).unwrap_err(), "n");
            assert_eq!(bound(CHAT, "mini", &chat(json!({"n": 2.5}))).unwrap_err(), "n");
            assert_eq!(plain(CHAT, "mini").output_tokens(7), 7);
        }
        "image part (image_url, input_image, image)" => {
            let body = chat(json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "high"}}]}]}));
            let (s, b) = bound(CHAT, "mini", &body).unwrap();
            assert_eq!(s.images, 1);
            assert!(b.prompt_tokens >= 48_169, "{b:?}");
            let body = responses(json!({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}, {"type": "input_image", "image_url": "https://x"}]}]}));
            assert!(bound(RESP, "mini", &body).unwrap().1.prompt_tokens >= 2 * 48_169);
        }
        "audio part (input_audio)" => {
            let body = chat(json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]}));
            assert!(bound(CHAT, "mini", &body).unwrap().1.prompt_tokens >= 20_000);
            assert_eq!(bound(CHAT, "bare", &body).unwrap_err(), "input_audio");
        }
        "file part (file, input_file)" => {
            let body = chat(json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]}));
            assert_eq!(bound(CHAT, "mini", &body).unwrap().1.prompt_tokens, 128_000);
            assert_eq!(bound(CHAT, "bare", &body).unwrap_err(), "file");
            let body = responses(json!({"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x/a.pdf"}]}]}));
            assert_eq!(bound(RESP, "mini", &body).unwrap().1.prompt_tokens, 128_000);
        }
        "previous_response_id, conversation, prompt, item_reference, encrypted_content, message audio by id" => {
            for (extra, field) in [
                (json!({"previous_response_id": "resp_1"}), "previous_response_id"),
                (json!({"conversation": "conv_1"}), "conversation"),
                (json!({"prompt": {"id": "pmpt_1"}}), "prompt"),
                (json!({"input": [{"type": "item_reference", "id": "msg_1"}]}), "item_reference"),
                (json!({"input": [{"type": "reasoning", "id": "rs_1", "encrypted_content": "gAAA"}]}), "encrypted_content"),
            ] {
                let body = responses(extra);
                assert_eq!(bound(RESP, "mini", &body).unwrap().1.prompt_tokens, 128_000, "{field}");
                assert_eq!(bound(RESP, "bare", &body).unwrap_err(), field);
            }
            let body = chat(json!({"messages": [{"role": "assistant", "audio": {"id": "audio_1"}}, {"role": "user", "content": "and?"}]}));
            assert_eq!(bound(CHAT, "bare", &body).unwrap_err(), "audio");
        }
        "prediction" => {
            let body = chat(json!({"prediction": {"type": "content", "content": "fn main() { println!(\"hello\"); } ".repeat(20)}}));
            let (_, b) = bound(CHAT, "mini", &body).unwrap();
            assert!(b.extra_output_tokens > 100, "{b:?}");
            assert_eq!(b.output_tokens(10), 10 + b.extra_output_tokens);
        }
        "hosted tools (tools[].type other than function/custom), web_search_options" => {
            let body = responses(json!({"tools": [{"type": "web_search"}]}));
            let (_, b) = bound(RESP, "mini", &body).unwrap();
            assert_eq!((b.tool_calls, b.fees), (Some(3), MicroUsd(75_000)));
            assert_eq!(b.prompt_tokens, 4 * 128_000);
            assert_eq!(bound(RESP, "bare", &body).unwrap_err(), "tools");
            let other = responses(json!({"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}));
            assert_eq!(bound(RESP, "mini", &other).unwrap_err(), "tools");
            let custom = responses(json!({"tools": [{"type": "custom", "name": "grammar"}]}));
            assert_eq!(bound(RESP, "mini", &custom).unwrap().1.fees, MicroUsd::ZERO);
            let search = chat(json!({"web_search_options": {}}));
            assert_eq!(bound(CHAT, "mini", &search).unwrap().1.fees, MicroUsd(75_000));
        }
        "max_tool_calls" => {
            let body = responses(json!({"tools": [{"type": "web_search"}], "max_tool_calls": 1}));
            assert_eq!(bound(RESP, "mini", &body).unwrap().1.tool_calls, Some(1));
            let body = responses(json!({"tools": [{"type": "web_search"}], "max_tool_calls": 50}));
            assert_eq!(bound(RESP, "mini", &body).unwrap().1.tool_calls, Some(3));
            let body = responses(json!({"tools": [{"type": "web_search"}], "max_tool_calls": -1}));
            assert_eq!(bound(RESP, "mini", &body).unwrap_err(), "max_tool_calls");
        }
        "service_tier" => {
            for ok in ["auto", "default", "flex"] {
                assert!(bound(CHAT, "mini", &chat(json!({"service_tier": ok}))).is_ok());
            }
            for bad in [json!("priority"), json!("scale"), json!(1)] {
                assert_eq!(bound(RESP, "mini", &responses(json!({"service_tier": bad}))).unwrap_err(), "service_tier");
            }
        }
        "background" => {
            assert_eq!(bound(RESP, "mini", &responses(json!({"background": true}))).unwrap_err(), "background");
            assert!(bound(RESP, "mini", &responses(json!({"background": false}))).is_ok());
        }
        "modalities with audio, audio" => {
            let body = chat(json!({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}));
            assert_eq!(bound(CHAT, "mini", &body).unwrap_err(), "modalities");
        }
        "input (embeddings)" => {
            let emb = |input: Value| {
                let body = obj(json!({"model": "emb", "input": input}));
                bound(CallRoute::Embeddings, "emb", &body).map(|(_, b)| b.prompt_tokens)
            };
            assert!(emb(json!("hello world")).unwrap() >= 2);
            assert!(emb(json!(["hello world", "goodbye"])).unwrap() >= 3);
            assert_eq!(emb(json!([1, 2, 3])).unwrap(), 3);
            assert_eq!(emb(json!([[1, 2, 3], [4, 5]])).unwrap(), 5);
            let long = "word ".repeat(300);
            assert!(emb(json!([long.clone()])).unwrap() >= 300);
            for bad in [json!([["a", "b"]]), json!([]), json!(""), json!([""]), json!(["a", 1]), json!([[1], "a"]), json!([[]]), json!({"a": 1}), json!(5), json!([-1]), json!(vec![1; 2049])] {
                assert_eq!(emb(bad.clone()).unwrap_err(), "input", "{bad}");
            }
        }
        "prompt, suffix, n, best_of, max_tokens" => {
            let legacy = |extra: Value| {
                let mut body = obj(json!({"model": "mini", "prompt": ["one two", "three"], "suffix": "end"}));
                body.extend(obj(extra));
                bound(CallRoute::Completions, "mini", &body)
            };
            let (shape, b) = legacy(json!({"n": 2, "best_of": 4, "max_tokens": 9})).unwrap();
            assert_eq!((shape.choices, shape.requested_cap), (8, Some(9)));
            assert_eq!(b.output_tokens(9), 72);
            // The suffix counts once per prompt.
            let (_, plain) = legacy(json!({"suffix": null})).unwrap();
            let (_, suffixed) = legacy(json!({})).unwrap();
            assert!(suffixed.prompt_tokens >= plain.prompt_tokens + 2);
            assert_eq!(legacy(json!({"n": 3, "best_of": 2})).unwrap_err(), "best_of");
            assert_eq!(legacy(json!({"best_of": 21})).unwrap_err(), "best_of");
            assert_eq!(legacy(json!({"prompt": [{"a": 1}]})).unwrap_err(), "prompt");
        }
        other => panic!("no test for the field table's row `{other}`"),
    }
}

#[test]
fn every_row_of_the_field_table_holds() {
    for row in FIELDS {
        check_row(row.field);
    }
}

#[test]
fn the_worst_candidate_is_held_and_the_clamp_fits_it() {
    let mini = Candidate {
        model: model("mini"),
        bound: plain(CHAT, "mini"),
    };
    let gemma = Candidate {
        model: model("gemma"),
        bound: plain(CHAT, "gemma"),
    };
    let both = [mini.clone(), gemma.clone()];
    let e = worst_estimate(&both, Some(100));
    assert_eq!(
        e.cost,
        worst_estimate(std::slice::from_ref(&gemma), Some(100))
            .cost
            .max(worst_estimate(std::slice::from_ref(&mini), Some(100)).cost)
    );
    let room = MicroUsd(300);
    let cap = affordable_cap(&both, room, 1000).unwrap();
    assert!(worst_estimate(&both, Some(cap)).cost <= room);
    assert!(worst_estimate(&both, Some(cap + 1)).cost > room || cap == 1000);
    // Priced at the first candidate alone the clamp would pick a cap the fallback cannot afford.
    let alone = affordable_cap(std::slice::from_ref(&mini), room, 1000).unwrap();
    assert!(alone > cap);

    let n = Bound {
        choices: 10,
        ..mini.bound
    };
    let many = [Candidate {
        model: model("mini"),
        bound: n,
    }];
    let cap = affordable_cap(&many, room, 1000).unwrap();
    assert!(worst_estimate(&many, Some(cap)).cost <= room);
    assert_eq!(affordable_cap(&many, MicroUsd(1), 1000), None);
}
