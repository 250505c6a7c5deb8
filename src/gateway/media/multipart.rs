//! `multipart/form-data` as the audio routes take it: read into its text fields (a repeated
//! field, such as `timestamp_granularities[]`, becomes an array) and its one file, and written
//! again for the provider with the upstream model name.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Map, Value};

use super::UploadFile;

/// The boundary parameter of a `multipart/form-data` content type; `None` for another type.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut parts = content_type.split(';');
    if !parts
        .next()?
        .trim()
        .eq_ignore_ascii_case("multipart/form-data")
    {
        return None;
    }
    parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("boundary"))
            .then(|| v.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty() && b.len() <= 200)
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// A header parameter (`name="x"`) of a part's `Content-Disposition`.
fn param(disposition: &str, name: &str) -> Option<String> {
    disposition.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// Reads a form: its text fields and its file. `Err` says what is malformed.
pub fn parse(
    boundary: &str,
    body: &Bytes,
) -> Result<(Map<String, Value>, Option<UploadFile>), String> {
    let delimiter = format!("--{boundary}");
    let separator = format!("\r\n--{boundary}");
    let start = find(body, delimiter.as_bytes()).ok_or("the body has no part")?;
    let mut at = start + delimiter.len();
    let mut fields = Map::new();
    let mut file = None;
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            break;
        }
        let rest = rest
            .strip_prefix(b"\r\n")
            .ok_or("a part boundary is not followed by CRLF")?;
        let head_end = find(rest, b"\r\n\r\n").ok_or("a part has no end of headers")?;
        let head =
            std::str::from_utf8(&rest[..head_end]).map_err(|_| "a part's headers are not UTF-8")?;
        let content_start = at + (body.len() - at - rest.len()) + head_end + 4;
        let len = find(&body[content_start..], separator.as_bytes())
            .ok_or("the form has no closing boundary")?;
        let content = body.slice(content_start..content_start + len);
        at = content_start + len + separator.len();
        let mut disposition = "";
        let mut content_type = "application/octet-stream";
        for line in head.split("\r\n") {
            if let Some((k, v)) = line.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-disposition") {
                    disposition = v.trim();
                } else if k.trim().eq_ignore_ascii_case("content-type") {
                    content_type = v.trim();
                }
            }
        }
        let name = param(disposition, "name").ok_or("a part has no name")?;
        if let Some(filename) = param(disposition, "filename") {
            if file.is_some() || name != "file" {
                return Err(format!(
                    "unexpected file part {name:?}: only one `file` is accepted"
                ));
            }
            file = Some(UploadFile {
                filename,
                content_type: content_type.to_owned(),
                bytes: content,
            });
            continue;
        }
        let text = String::from_utf8(content.to_vec())
            .map_err(|_| format!("field {name:?} is not UTF-8 text"))?;
        match fields.get_mut(&name) {
            Some(Value::Array(items)) => items.push(Value::String(text)),
            Some(first) => *first = Value::Array(vec![first.take(), Value::String(text)]),
            None => {
                fields.insert(name, Value::String(text));
            }
        }
    }
    Ok((fields, file))
}

/// The form sent upstream: the text fields (the model renamed) and the file; with its
/// content type.
pub fn encode(
    fields: &Map<String, Value>,
    upstream_model: &str,
    file: &UploadFile,
) -> (String, Bytes) {
    let boundary = format!("aex-{}", uuid::Uuid::new_v4().simple());
    let mut out = BytesMut::new();
    let mut part = |name: &str, value: &str| {
        out.put_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes());
    };
    part("model", upstream_model);
    for (name, value) in fields.iter().filter(|(n, _)| *n != "model") {
        let values = match value {
            Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        for v in values {
            let text = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            part(&quoted(name), &text);
        }
    }
    out.put_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\nContent-Type: {}\r\n\r\n",
            quoted(&file.filename),
            quoted(&file.content_type)
        )
        .as_bytes(),
    );
    out.put_slice(&file.bytes);
    out.put_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/form-data; boundary={boundary}"),
        out.freeze(),
    )
}

/// A header value without the characters that would end it (quotes, CR, LF).
fn quoted(text: &str) -> String {
    text.chars()
        .filter(|c| !matches!(c, '\r' | '\n'))
        .map(|c| if c == '"' { '\'' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_round_trips_with_the_model_renamed() {
        let file = UploadFile {
            filename: "a.mp3".into(),
            content_type: "audio/mpeg".into(),
            bytes: Bytes::from_static(b"ID3\r\n--not-a-boundary\x00\xff"),
        };
        let mut fields = Map::new();
        fields.insert("model".into(), Value::String("whisper".into()));
        fields.insert(
            "timestamp_granularities[]".into(),
            serde_json::json!(["word", "segment"]),
        );
        let (ct, body) = encode(&fields, "whisper-1", &file);
        let b = boundary(&ct).unwrap();
        let (read, got) = parse(&b, &body).unwrap();
        assert_eq!(read["model"], "whisper-1");
        assert_eq!(
            read["timestamp_granularities[]"],
            serde_json::json!(["word", "segment"])
        );
        let got = got.unwrap();
        assert_eq!((got.filename.as_str(), got.bytes), ("a.mp3", file.bytes));
    }

    #[test]
    fn malformed_forms_are_refused() {
        assert!(boundary("application/json").is_none());
        assert!(parse("x", &Bytes::from_static(b"garbage")).is_err());
        let unterminated =
            Bytes::from_static(b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv");
        assert!(parse("x", &unterminated).is_err());
        let two_files = Bytes::from_static(b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\n\r\n1\r\n--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.mp3\"\r\n\r\n2\r\n--x--\r\n");
        assert!(parse("x", &two_files).is_err());
    }
}
