//! The stream relay's fast path for the event nearly every chunk of a chat completion stream is:
//! one `data:` line holding a `chat.completion.chunk` without usage. Its text is read through
//! borrowing structs instead of a JSON tree, and its `model` value is replaced in place, at the
//! bytes serde located it at, so the rest goes out exactly as the provider wrote it: no parse
//! into a map, no re-serialisation, one copy. Anything else (usage, several lines, an `event:`
//! field, JSON of another shape) is left to the relay's JSON path.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// The fields of a chunk the relay needs; any other field is skipped unread.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    model: Option<&'a RawValue>,
    #[serde(default, borrow)]
    choices: Option<Vec<Choice<'a>>>,
    #[serde(default)]
    usage: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    /// Present and not `null` on a choice's last chunk.
    #[serde(default)]
    finish_reason: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<Text<'a>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(default, borrow)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(default, borrow)]
    arguments: Option<Text<'a>>,
}

/// A JSON string, borrowed unless it has escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// A field that is present, whatever its value: `Option` alone would read `null` as absent, and
/// a `"model": null` must be replaced like any other value.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// The JSON of an event that is exactly one `data:` line, the shape providers send chunks in.
fn data_line(raw: &[u8]) -> Option<&[u8]> {
    let data = raw.strip_prefix(b"data:")?.strip_suffix(b"\n\n")?;
    let data = data.strip_prefix(b" ").unwrap_or(data);
    (!data.iter().any(|&b| b == b'\n' || b == b'\r')).then_some(data)
}

/// Where `part`, borrowed from `whole`, starts in it.
fn offset_in(whole: &[u8], part: &[u8]) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (whole.get(start..start + part.len())? == part).then_some(start)
}

/// Whether `raw` is the stream's `data: [DONE]`.
pub(super) fn is_done(raw: &[u8]) -> bool {
    data_line(raw) == Some(b"[DONE]")
}

/// The event to send for `raw`, its model replaced by `alias_json` (the alias as a JSON string),
/// after appending its text to `output` and counting in `finished` the choices it finishes;
/// `None` when it needs the JSON path, and then `output` and `finished` are untouched.
pub(super) fn relay(
    raw: &Bytes,
    alias_json: &str,
    output: &mut String,
    finished: &mut u64,
) -> Option<Bytes> {
    let data = data_line(raw)?;
    if data == b"[DONE]" {
        return Some(raw.clone());
    }
    // An object only: serde would also read a struct from an array, which the JSON path passes
    // through untouched.
    if data.first() != Some(&b'{') {
        return None;
    }
    let chunk: Chunk<'_> = serde_json::from_slice(data).ok()?;
    // The usage chunk is captured, and stripped or kept, by the JSON path: once per stream.
    if chunk.usage.is_some() {
        return None;
    }
    let out = match chunk.model.map(RawValue::get) {
        Some(model) if model != alias_json => {
            let start = offset_in(raw, model.as_bytes())?;
            let mut out = BytesMut::with_capacity(raw.len() - model.len() + alias_json.len());
            out.extend_from_slice(&raw[..start]);
            out.extend_from_slice(alias_json.as_bytes());
            out.extend_from_slice(&raw[start + model.len()..]);
            out.freeze()
        }
        _ => raw.clone(),
    };
    let choices = chunk.choices.iter().flatten();
    *finished += choices
        .clone()
        .filter(|c| c.finish_reason.is_some())
        .count() as u64;
    for delta in choices.filter_map(|c| c.delta.as_ref()) {
        if let Some(Text(text)) = &delta.content {
            output.push_str(text);
        }
        let calls = delta.tool_calls.iter().flatten();
        for Text(args) in calls.filter_map(|c| c.function.as_ref()?.arguments.as_ref()) {
            output.push_str(args);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALIAS: &str = "\"my-alias\"";

    fn run(raw: &str) -> (Option<String>, String) {
        let mut output = String::new();
        let out = relay(
            &Bytes::copy_from_slice(raw.as_bytes()),
            ALIAS,
            &mut output,
            &mut 0,
        );
        let out = out.map(|b| String::from_utf8(b.to_vec()).unwrap());
        (out, output)
    }

    #[test]
    fn a_chunk_keeps_its_bytes_but_the_model_and_yields_its_text() {
        let raw = "data: {\"id\":\"c\",\"model\" : \"gpt-4o-mini\",\"choices\":[{\"index\":0,\
                   \"delta\":{\"content\":\"a\\nb \\\"model\\\"\"},\"finish_reason\":null}]}\n\n";
        let (out, text) = run(raw);
        assert_eq!(out.unwrap(), raw.replace("\"gpt-4o-mini\"", ALIAS));
        assert_eq!(text, "a\nb \"model\"");
    }

    #[test]
    fn text_without_escapes_is_borrowed() {
        let text: Text<'_> = serde_json::from_slice(b"\"plain\"").unwrap();
        assert!(matches!(text.0, Cow::Borrowed("plain")));
    }

    #[test]
    fn tool_call_arguments_are_text_too() {
        let raw = "data:{\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":null,\"tool_calls\":\
                   [{\"index\":0,\"function\":{\"arguments\":\"{\\\"x\\\":1}\"}}]}}]}\n\n";
        let (out, text) = run(raw);
        assert!(out.unwrap().contains("\"model\":\"my-alias\""));
        assert_eq!(text, "{\"x\":1}");
    }

    #[test]
    fn the_upstream_model_never_survives_however_it_is_written() {
        for raw in [
            "data: {\"model\":null,\"choices\":[]}\n\n",
            "data: {\"mod\\u0065l\":\"secret-model\",\"choices\":[]}\n\n",
            "data: {\"model\":{\"name\":\"secret-model\"},\"choices\":[]}\n\n",
        ] {
            let (out, _) = run(raw);
            let out = out.unwrap();
            assert!(
                !out.contains("secret-model") && out.contains(ALIAS),
                "{out}"
            );
        }
        // Two model keys are not one chunk's shape: the JSON path decides.
        assert_eq!(run("data: {\"model\":\"a\",\"model\":\"b\"}\n\n").0, None);
    }

    #[test]
    fn done_passes_and_other_shapes_go_to_the_json_path() {
        assert_eq!(run("data: [DONE]\n\n").0.unwrap(), "data: [DONE]\n\n");
        for raw in [
            "data: {\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n",
            "event: x\ndata: {\"model\":\"m\"}\n\n",
            "data: {\"model\":\n\"m\"}\n\n",
            "data: {\"model\":\"m\"}\r\n\r\n",
            "data: not json\n\n",
            "data: [\"m\"]\n\n",
            "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":7}}]}\n\n",
            ": keep-alive\n\n",
        ] {
            let mut output = String::new();
            let raw = Bytes::copy_from_slice(raw.as_bytes());
            assert!(relay(&raw, ALIAS, &mut output, &mut 0).is_none(), "{raw:?}");
            assert!(output.is_empty());
        }
    }
}
