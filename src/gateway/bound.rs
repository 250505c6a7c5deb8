//! The hold as a proof (SPEC §5.2): for every request shape, an upper bound of everything the
//! provider can bill, or a 400 naming the field that has none.
//!
//! [`read`] reads the shape of a request once, model-independently, and refuses what no bound
//! covers; [`Bound::for_model`] then prices that shape for one candidate model with its own
//! settings (image and audio worst cases, chat template, context window, hosted-tool fees). The
//! hold is the worst bound over every candidate the call may reach (`admission`).
//!
//! [`FIELDS`] (`bound/fields.rs`) is the table of every request field that changes the bill and
//! how it is bounded; each row has a test (`bound/tests.rs`) that shows it.

use serde_json::{Map, Value};

use super::estimate::{self, count_value};
use super::GatewayError;
use crate::config::ModelRoute;
use crate::domain::CallRoute;
use crate::money::MicroUsd;

/// Most choices OpenAI generates for one request.
pub const MAX_CHOICES: u64 = 128;
/// Most inputs of one embeddings request.
pub const MAX_EMBEDDING_INPUTS: usize = 2048;
/// The largest output cap accepted: no model generates more, and every sum of tokens and every
/// price product stays far from overflowing.
pub const MAX_OUTPUT_CAP: u64 = i32::MAX as u64;

/// The model-independent shape of a request: what multiplies or adds to the bill.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    /// Choices generated (`n`).
    pub choices: u64,
    /// The output cap the request asked for: the larger of the cap fields it sets.
    pub requested_cap: Option<u64>,
    /// The cap fields present in the body (null included): each is sent as the held cap.
    pub cap_fields: Vec<&'static str>,
    pub images: u64,
    pub audio: u64,
    /// Messages or input items, for the chat template's per-message tokens.
    pub messages: u64,
    /// The first field that makes the provider read input AEX cannot see.
    pub unseen_input: Option<&'static str>,
    /// Hosted tool types the request may call.
    pub hosted_tools: Vec<String>,
    /// `max_tool_calls` as asked.
    pub max_tool_calls: Option<u64>,
    /// Predicted output content (chat `prediction.content`).
    pub prediction: Option<Value>,
}

fn invalid(message: impl Into<String>, field: &str) -> GatewayError {
    GatewayError::invalid(message, Some(field))
}

/// A positive integer field of at most `max`; `None` when absent or null.
fn positive(body: &Map<String, Value>, field: &str, max: u64) -> Result<Option<u64>, GatewayError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 && n <= max => Ok(Some(n)),
            _ => Err(invalid(
                format!("`{field}` must be a positive integer of at most {max}"),
                field,
            )),
        },
    }
}

/// The cap fields of a route, in the order a default cap is sent.
fn cap_fields_of(route: CallRoute) -> &'static [&'static str] {
    match route {
        CallRoute::ChatCompletions => &["max_tokens", "max_completion_tokens"],
        CallRoute::Responses => &["max_output_tokens"],
        CallRoute::Messages => &["max_tokens"],
        _ => &[],
    }
}

/// Reads and checks the shape of `body` for `route`; `Err` names the field no bound covers.
pub fn read(route: CallRoute, body: &Map<String, Value>) -> Result<Shape, GatewayError> {
    if route == CallRoute::Completions {
        return completions::read(body);
    }
    if route == CallRoute::Embeddings {
        check_embeddings_input(body)?;
        // Each input is framed on its own (a server may add its special tokens to each).
        let inputs = match body.get("input") {
            Some(Value::Array(items)) if items.iter().all(Value::is_array) => items.len(),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => items.len(),
            _ => 1,
        };
        return Ok(Shape {
            choices: 1,
            messages: inputs as u64,
            ..Shape::default()
        });
    }
    let mut shape = Shape {
        choices: positive(body, "n", MAX_CHOICES)?.unwrap_or(1),
        ..Shape::default()
    };
    for field in cap_fields_of(route) {
        if body.contains_key(*field) {
            shape.cap_fields.push(field);
            let cap = positive(body, field, MAX_OUTPUT_CAP)?;
            shape.requested_cap = shape.requested_cap.max(cap);
        }
    }
    refuse_unpriced(body)?;
    for field in ["previous_response_id", "conversation", "prompt"] {
        if route == CallRoute::Responses && body.get(field).is_some_and(|v| !v.is_null()) {
            shape.unseen_input.get_or_insert(field);
        }
    }
    let input = match route {
        CallRoute::ChatCompletions | CallRoute::Messages => body.get("messages"),
        _ => body.get("input"),
    };
    if let Some(input) = input {
        shape.messages = match input {
            Value::Array(items) => items.len() as u64,
            _ => 1,
        };
        walk_parts(input, &mut shape);
    }
    if let Some(p) = body.get("prediction").filter(|p| !p.is_null()) {
        shape.prediction = Some(p.get("content").cloned().unwrap_or_else(|| p.clone()));
    }
    read_hosted_tools(body, &mut shape)?;
    Ok(shape)
}

/// Refuses the fields that bill at prices the routing table does not have, or after settlement.
fn refuse_unpriced(body: &Map<String, Value>) -> Result<(), GatewayError> {
    match body.get("service_tier") {
        None | Some(Value::Null) => {}
        // `standard_only` is Anthropic's: never above the table's prices.
        Some(Value::String(t))
            if matches!(t.as_str(), "auto" | "default" | "flex" | "standard_only") => {}
        Some(_) => {
            return Err(invalid(
                "`service_tier` must be auto, default or flex: other tiers bill above the prices AEX holds",
                "service_tier",
            ))
        }
    }
    if body
        .get("background")
        .is_some_and(|b| !b.is_null() && b != &Value::Bool(false))
    {
        return Err(invalid(
            "`background` responses are not supported: their usage arrives after AEX settles",
            "background",
        ));
    }
    let audio_out = body.get("audio").is_some_and(|a| !a.is_null())
        || body
            .get("modalities")
            .and_then(Value::as_array)
            .is_some_and(|m| m.iter().any(|x| x.as_str() == Some("audio")));
    if audio_out {
        return Err(invalid(
            "audio output is not supported: it bills at audio prices the routing table does not have",
            "modalities",
        ));
    }
    Ok(())
}

/// Counts the parts AEX cannot tokenize and notes references to stored input.
fn walk_parts(value: &Value, shape: &mut Shape) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| walk_parts(v, shape)),
        Value::Object(obj) => {
            match estimate::part_kind(obj) {
                Some(estimate::Part::Image) => shape.images += 1,
                Some(estimate::Part::Audio) => shape.audio += 1,
                Some(estimate::Part::File) => {
                    shape.unseen_input.get_or_insert("file");
                }
                None => {}
            }
            if obj.get("type").and_then(Value::as_str) == Some("item_reference") {
                shape.unseen_input.get_or_insert("item_reference");
            }
            if obj.contains_key("encrypted_content") {
                shape.unseen_input.get_or_insert("encrypted_content");
            }
            // An assistant message's earlier audio answer, referred to by id.
            if obj.get("audio").is_some_and(|a| a.get("id").is_some()) {
                shape.unseen_input.get_or_insert("audio");
            }
            obj.values().for_each(|v| walk_parts(v, shape));
        }
        _ => {}
    }
}

/// The tools a request declares, each with its type (`function` when it names none).
pub fn declared_tools(body: &Map<String, Value>) -> impl Iterator<Item = (&Value, &str)> {
    body.get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|tool| {
            let kind = tool
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("function");
            (tool, kind)
        })
}

fn read_hosted_tools(body: &Map<String, Value>, shape: &mut Shape) -> Result<(), GatewayError> {
    for (_, kind) in declared_tools(body) {
        if !matches!(kind, "function" | "custom") && !shape.hosted_tools.iter().any(|t| t == kind) {
            shape.hosted_tools.push(kind.to_owned());
        }
    }
    if body.get("web_search_options").is_some_and(|w| !w.is_null())
        && !shape.hosted_tools.iter().any(|t| t == "web_search")
    {
        shape.hosted_tools.push("web_search".to_owned());
    }
    shape.max_tool_calls = positive(body, "max_tool_calls", MAX_OUTPUT_CAP)?;
    Ok(())
}

/// OpenAI's accepted shapes of embeddings input: a string, an array of strings, an array of
/// token ids, or an array of arrays of token ids, none empty, at most 2048 items.
fn check_embeddings_input(body: &Map<String, Value>) -> Result<(), GatewayError> {
    let token_ids = |a: &[Value]| !a.is_empty() && a.iter().all(|t| t.as_u64().is_some());
    let ok = match body.get("input") {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_EMBEDDING_INPUTS => {
            items
                .iter()
                .all(|i| i.as_str().is_some_and(|s| !s.is_empty()))
                || token_ids(items)
                || items
                    .iter()
                    .all(|i| i.as_array().is_some_and(|a| token_ids(a)))
        }
        _ => false,
    };
    if ok {
        return Ok(());
    }
    Err(invalid(
        format!("`input` must be a non-empty string, or an array of at most {MAX_EMBEDDING_INPUTS} non-empty strings, token ids, or non-empty arrays of token ids"),
        "input",
    ))
}

/// What one candidate model can bill for a request, output cap aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// Input tokens, at the input price.
    pub prompt_tokens: u64,
    /// Choices, each generating up to the cap plus `extra_output_tokens`.
    pub choices: u64,
    /// Output tokens billed per choice beyond the cap (rejected predicted output).
    pub extra_output_tokens: u64,
    /// Hosted-tool calls allowed (`max_tool_calls` sent upstream), when the request has any.
    pub tool_calls: Option<u64>,
    /// Their fees.
    pub fees: MicroUsd,
}

impl Bound {
    /// The bound of `shape` on `model`; `Err` names the field, or the model setting, missing.
    pub fn for_model(
        route: CallRoute,
        shape: &Shape,
        model: &ModelRoute,
        body: &Map<String, Value>,
    ) -> Result<Bound, GatewayError> {
        let setting = |name: &str| format!("models.{}.{name}", model.alias);
        let mut prompt = estimate::prompt_tokens(route, model.tokenizer, body);
        prompt += match route {
            // Special tokens around each input, for a tokenizer AEX does not know.
            CallRoute::Embeddings => model.chat_template_tokens * shape.messages,
            _ => model.chat_template_tokens * (shape.messages + 1),
        };
        prompt += shape.images * model.image_part_tokens;
        if shape.audio > 0 {
            let per = model.audio_part_tokens.ok_or_else(|| {
                invalid(
                    format!(
                        "audio input parts cannot be bounded: model `{}` has no `{}`",
                        model.alias,
                        setting("audio_part_tokens")
                    ),
                    "input_audio",
                )
            })?;
            prompt += shape.audio * per;
        }
        let window = |field: &str| {
            model.context_window.ok_or_else(|| {
                invalid(
                    format!("`{field}` makes the provider read input AEX cannot count, bounded by the context window; model `{}` has no `{}`", model.alias, setting("context_window")),
                    field,
                )
            })
        };
        if let Some(field) = shape.unseen_input {
            prompt = prompt.max(window(field)?);
        }
        let mut fees = MicroUsd::ZERO;
        let mut tool_calls = None;
        if !shape.hosted_tools.is_empty() {
            let mut fee = MicroUsd::ZERO;
            for tool in &shape.hosted_tools {
                let f = model.hosted_tool_fees.get(tool).ok_or_else(|| {
                    invalid(
                        format!(
                            "hosted tool `{tool}` has no price: model `{}` has no `{}`",
                            model.alias,
                            setting(&format!("hosted_tool_usd_per_call.{tool}"))
                        ),
                        "tools",
                    )
                })?;
                fee = fee.max(*f);
            }
            let calls = shape
                .max_tool_calls
                .map_or(model.max_hosted_tool_calls, |c| {
                    c.min(model.max_hosted_tool_calls)
                });
            // Each call's results are read back as input, so each step may read the window.
            prompt = prompt.max(window("tools")?).saturating_mul(calls + 1);
            fees = MicroUsd(
                fee.0
                    .saturating_mul(i64::try_from(calls).unwrap_or(i64::MAX)),
            );
            tool_calls = Some(calls);
        }
        let extra_output_tokens = shape
            .prediction
            .as_ref()
            .map_or(0, |p| count_value(model.tokenizer, p));
        Ok(Bound {
            prompt_tokens: prompt,
            choices: shape.choices.max(1),
            extra_output_tokens,
            tool_calls,
            fees,
        })
    }

    /// Output tokens billable with `cap` per choice.
    pub fn output_tokens(&self, cap: u64) -> u64 {
        self.choices
            .saturating_mul(cap.saturating_add(self.extra_output_tokens))
    }
}

/// A model the call may reach, with its bound for this request.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub model: std::sync::Arc<ModelRoute>,
    pub bound: Bound,
}

impl Bound {
    /// The most `model` can bill for a request bounded by `self` with `output_cap` per choice.
    pub fn estimate(&self, model: &ModelRoute, output_cap: Option<u64>) -> estimate::Estimate {
        let output_tokens = output_cap.map_or(0, |cap| self.output_tokens(cap));
        let cost = model
            .input_price_bound()
            .cost(self.prompt_tokens)
            .saturating_add(model.output_price.cost(output_tokens))
            .saturating_add(self.fees);
        estimate::Estimate {
            prompt_tokens: self.prompt_tokens,
            output_cap,
            output_tokens,
            cost,
        }
    }
}

/// The most expensive candidate's estimate with `output_cap` per choice: what the reservation
/// holds. `prompt_tokens` and `output_tokens` are the largest over the candidates too, so usage
/// AEX counts itself is bounded by them.
pub fn worst_estimate(candidates: &[Candidate], output_cap: Option<u64>) -> estimate::Estimate {
    let mut worst = estimate::Estimate {
        prompt_tokens: 0,
        output_cap,
        output_tokens: 0,
        cost: MicroUsd::ZERO,
    };
    for c in candidates {
        let e = c.bound.estimate(&c.model, output_cap);
        worst.prompt_tokens = worst.prompt_tokens.max(e.prompt_tokens);
        worst.output_tokens = worst.output_tokens.max(e.output_tokens);
        worst.cost = worst.cost.max(e.cost);
    }
    worst
}

/// The largest cap per choice whose worst estimate over `candidates` fits `room`; `None` when
/// not even a one-token cap fits (or output is free on some candidate and the cap is unbounded
/// by money: then `max`).
pub fn affordable_cap(candidates: &[Candidate], room: MicroUsd, max: u64) -> Option<u64> {
    let mut cap = max;
    for c in candidates {
        let left = room
            .saturating_sub(c.model.input_price_bound().cost(c.bound.prompt_tokens))
            .saturating_sub(c.bound.fees);
        if left < MicroUsd::ZERO {
            return None;
        }
        if let Some(tokens) = c.model.output_price.tokens_affordable(left) {
            let per_choice =
                (tokens / c.bound.choices.max(1)).checked_sub(c.bound.extra_output_tokens)?;
            cap = cap.min(per_choice);
        }
    }
    // Rounding is per price product, as at settlement: check the whole, never trust the parts.
    (cap > 0 && worst_estimate(candidates, Some(cap)).cost <= room).then_some(cap)
}

mod completions;
mod fields;
pub use fields::{FieldRule, FIELDS};
#[cfg(test)]
mod tests;
