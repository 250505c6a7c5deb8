//! How the mock counts and writes tokens: deterministic, so tests predict the bill from the
//! answer's own usage.

use serde_json::Value;

/// Tokens of a value for the mock's usage: one per whitespace-separated word of every string in
/// it (field names aside).
pub fn words(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Array(a) => a.iter().map(words).sum(),
        Value::Object(o) => o.values().map(words).sum(),
        _ => 0,
    }
}

/// A generated text of `n` tokens.
pub fn text_of(n: u64) -> String {
    (0..n)
        .map(|i| {
            if i == 0 {
                "Hello".to_owned()
            } else {
                format!(" w{i}")
            }
        })
        .collect()
}
