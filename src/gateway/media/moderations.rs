//! `POST /v1/moderations`: free, but still authenticated, rate limited (its input counts in the
//! TPM window), held at zero, settled and ledgered like any call.

use serde_json::{Map, Value};

use super::plan::{self, json_upstream, Meter, Plan};
use crate::config::ModelRoute;
use crate::gateway::estimate::count_value;
use crate::gateway::GatewayError;
use crate::money::MicroUsd;

pub fn plan(model: &ModelRoute, body: &Map<String, Value>) -> Result<Plan, GatewayError> {
    let input = body.get("input");
    let ok = match input {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(items)) => {
            !items.is_empty() && items.iter().all(|i| i.is_string() || i.is_object())
        }
        _ => false,
    };
    if !ok {
        return Err(GatewayError::invalid(
            "`input` is required and must be a non-empty string, or an array of strings or of text and image parts",
            Some("input"),
        ));
    }
    Ok(Plan {
        unit: "request",
        units_bound: 1,
        cost_bound: MicroUsd::ZERO,
        prompt_tokens: input.map_or(0, |i| count_value(model.tokenizer, i)),
        covers: "a moderation (free)".to_owned(),
        content_type: plan::JSON.to_owned(),
        upstream_content_type: plan::JSON.to_owned(),
        upstream_body: json_upstream(model, body),
        meter: Meter::Moderation,
    })
}
