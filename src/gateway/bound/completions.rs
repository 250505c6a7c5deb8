//! The shape of a legacy `/v1/completions` request: every prompt of an array is its own
//! completion, and each generates `best_of` candidates server-side (billed, though only `n` are
//! returned), so the output bound is prompts × max(`n`, `best_of`) × the cap.

use serde_json::{Map, Value};

use super::{invalid, positive, Shape, MAX_CHOICES, MAX_EMBEDDING_INPUTS};
use crate::gateway::GatewayError;

/// OpenAI's largest `best_of`.
pub const MAX_BEST_OF: u64 = 20;

/// How many prompts `prompt` holds: a string or one array of token ids is one; an array of
/// strings or of token-id arrays is one per item. `None` for any other shape.
fn prompts(prompt: Option<&Value>) -> Option<u64> {
    let token_ids = |a: &[Value]| !a.is_empty() && a.iter().all(|t| t.as_u64().is_some());
    match prompt? {
        Value::String(s) if !s.is_empty() => Some(1),
        Value::Array(items) if !items.is_empty() && items.len() <= MAX_EMBEDDING_INPUTS => {
            if token_ids(items) {
                Some(1)
            } else if items
                .iter()
                .all(|i| i.as_str().is_some_and(|s| !s.is_empty()))
                || items
                    .iter()
                    .all(|i| i.as_array().is_some_and(|a| token_ids(a)))
            {
                Some(items.len() as u64)
            } else {
                None
            }
        }
        _ => None,
    }
}

pub fn read(body: &Map<String, Value>) -> Result<Shape, GatewayError> {
    let prompts = prompts(body.get("prompt")).ok_or_else(|| {
        invalid(
            format!("`prompt` must be a non-empty string, an array of at most {MAX_EMBEDDING_INPUTS} non-empty strings, an array of token ids, or an array of arrays of token ids"),
            "prompt",
        )
    })?;
    let n = positive(body, "n", MAX_CHOICES)?.unwrap_or(1);
    let best_of = positive(body, "best_of", MAX_BEST_OF)?.unwrap_or(1);
    if best_of > 1 && best_of < n {
        return Err(invalid(
            format!("`best_of` ({best_of}) must be at least `n` ({n})"),
            "best_of",
        ));
    }
    let mut shape = Shape {
        choices: prompts * n.max(best_of),
        messages: prompts,
        ..Shape::default()
    };
    if body.contains_key("max_tokens") {
        shape.cap_fields.push("max_tokens");
        shape.requested_cap = positive(body, "max_tokens", super::MAX_OUTPUT_CAP)?;
    }
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape(v: Value) -> Result<Shape, GatewayError> {
        read(v.as_object().unwrap())
    }

    #[test]
    fn every_prompt_and_every_best_of_candidate_is_a_choice() {
        let s = shape(json!({"prompt": ["a", "b", "c"], "n": 2, "best_of": 5, "max_tokens": 7}))
            .unwrap();
        assert_eq!((s.choices, s.requested_cap), (15, Some(7)));
        assert_eq!(shape(json!({"prompt": [1, 2, 3]})).unwrap().choices, 1);
        assert_eq!(shape(json!({"prompt": [[1], [2]], "n": 3})).unwrap().choices, 6);
    }

    #[test]
    fn shapes_no_bound_covers_are_refused_by_field() {
        let field = |v: Value| match shape(v) {
            Err(GatewayError::InvalidRequest { param, .. }) => param,
            other => panic!("{:?}", other.map(|s| s.choices)),
        };
        assert_eq!(field(json!({"prompt": ""})).as_deref(), Some("prompt"));
        assert_eq!(field(json!({"prompt": [{"x": 1}]})).as_deref(), Some("prompt"));
        assert_eq!(field(json!({"prompt": "x", "best_of": 21})).as_deref(), Some("best_of"));
        assert_eq!(field(json!({"prompt": "x", "n": 3, "best_of": 2})).as_deref(), Some("best_of"));
        assert_eq!(field(json!({"prompt": "x", "max_tokens": 0})).as_deref(), Some("max_tokens"));
    }
}
