//! `POST /v1/images/generations`: held at `n` × the dearest price that can apply to the size and
//! quality asked (absent or `auto`: any of the model's entries), billed per image returned at the
//! price of the size and quality the answer reports (else those asked). A size or quality the
//! table has no price for is a 400 naming the setting, never a free call.

use serde_json::{Map, Value};

use super::plan::{self, count, json_upstream, required, string, Bill, Meter, Plan};
use crate::config::ModelRoute;
use crate::gateway::estimate::count_text;
use crate::gateway::settlement::UsageSource;
use crate::gateway::GatewayError;
use crate::money::MicroUsd;

/// OpenAI's most images per request.
pub const MAX_IMAGES: u64 = 10;

fn dearest(prices: &[(&str, MicroUsd)]) -> Option<(String, MicroUsd)> {
    prices
        .iter()
        .max_by_key(|(_, p)| *p)
        .map(|(k, p)| ((*k).to_owned(), *p))
}

pub fn plan(model: &ModelRoute, body: &Map<String, Value>) -> Result<Plan, GatewayError> {
    let prompt = required(body, "prompt")?;
    let n = count(body, "n", MAX_IMAGES)?.unwrap_or(1);
    let size = string(body, "size")?;
    let quality = string(body, "quality")?;
    let prices = model.media.image_prices(size, quality);
    let Some((key, per_image)) = dearest(&prices) else {
        let wanted = match quality {
            Some(q) => format!("{}/{q}", size.unwrap_or("SIZE")),
            None => size.unwrap_or("SIZE").to_owned(),
        };
        return Err(GatewayError::invalid(
            format!(
                "images of size {} and quality {} have no price: model `{}` has no `models.{}.image_usd_per_image.\"{wanted}\"`",
                size.unwrap_or("auto"),
                quality.unwrap_or("auto"),
                model.alias,
                model.alias
            ),
            Some(if size.is_some() { "size" } else { "quality" }),
        ));
    };
    let cost_bound = MicroUsd(per_image.0.saturating_mul(n as i64));
    Ok(Plan {
        unit: "image",
        units_bound: n,
        cost_bound,
        prompt_tokens: count_text(model.tokenizer, prompt),
        covers: format!(
            "{n} image(s) at {per_image} USD each (the dearest price that can apply: {key})"
        ),
        content_type: plan::JSON.to_owned(),
        upstream_content_type: plan::JSON.to_owned(),
        upstream_body: json_upstream(model, body),
        meter: Meter::Images {
            size: size.map(str::to_owned),
            quality: quality.map(str::to_owned),
            held_per_image: per_image,
        },
    })
}

/// The images returned (`data`), each at the price of what the answer says it made.
pub fn bill(
    model: &ModelRoute,
    (size, quality): (Option<&str>, Option<&str>),
    held_per_image: MicroUsd,
    body: &[u8],
) -> Option<Bill> {
    let answer: Value = serde_json::from_slice(body).ok()?;
    let images = answer.get("data")?.as_array()?.len() as u64;
    let size = answer.get("size").and_then(Value::as_str).or(size);
    let quality = answer.get("quality").and_then(Value::as_str).or(quality);
    // An answer naming a size or quality the table lacks is billed at the held price.
    let (key, price) = dearest(&model.media.image_prices(size, quality))
        .unwrap_or_else(|| ("held".to_owned(), held_per_image));
    Some(Bill {
        units: images,
        cost: MicroUsd(
            price
                .0
                .saturating_mul(i64::try_from(images).unwrap_or(i64::MAX)),
        ),
        source: UsageSource::Reported,
        price: Some(key),
    })
}
