//! The routing table: providers, model aliases, prices, limits and fallbacks (SPEC §11).
//!
//! The TOML document is parsed into [`RoutingDocument`] (the file's shape) and validated into a
//! [`RoutingTable`] (what the gateway uses). Validation errors name the offending key.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::provider::{ProviderDoc, ProviderRoute};
use super::routing_error::invalid;
pub use super::routing_error::RoutingError;
use crate::money::{parse_usd, MicroUsd, PricePerMillion};

/// The file's shape, as written by a person.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingDocument {
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderDoc>,
    #[serde(default)]
    pub models: BTreeMap<String, ModelDoc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDoc {
    pub provider: String,
    pub upstream_model: String,
    /// Decimal USD per million input tokens, as a string so it is parsed exactly.
    pub input_usd_per_million: String,
    #[serde(default)]
    pub output_usd_per_million: Option<String>,
    /// Decimal USD per million cached input tokens (cache reads); unset: the input price.
    #[serde(default)]
    pub cached_input_usd_per_million: Option<String>,
    /// Decimal USD per million input tokens written to the cache; unset: the input price.
    #[serde(default)]
    pub cache_write_usd_per_million: Option<String>,
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    #[serde(default)]
    pub fallbacks: Vec<String>,
    #[serde(default)]
    pub tokenizer: Option<TokenizerKind>,
    /// Input plus output tokens the model accepts: bounds what AEX cannot count (stored
    /// context, files, hosted tools' reads). Shapes that need it are refused without it.
    #[serde(default)]
    pub context_window: Option<u32>,
    /// Worst case input tokens of one image part (default [`DEFAULT_IMAGE_PART_TOKENS`]).
    #[serde(default)]
    pub image_part_tokens: Option<u32>,
    /// Worst case of one audio part, in input tokens at the input price (so it includes the
    /// ratio of the audio price to the text price). Unset: audio parts are refused.
    #[serde(default)]
    pub audio_part_tokens: Option<u32>,
    /// Tokens the server's chat template adds around each message (and once more for the
    /// request). Default: 0 for a known tokenizer (its overhead is counted exactly), else
    /// [`DEFAULT_CHAT_TEMPLATE_TOKENS`].
    #[serde(default)]
    pub chat_template_tokens: Option<u32>,
    /// Decimal USD per call of a hosted tool, by tool type (`web_search`, `file_search`, …).
    /// A hosted tool not listed here is refused.
    #[serde(default)]
    pub hosted_tool_usd_per_call: BTreeMap<String, String>,
    /// Most hosted-tool calls one request may make (`max_tool_calls` is sent upstream).
    #[serde(default)]
    pub max_hosted_tool_calls: Option<u32>,
}

/// The worst an OpenAI model bills for one image part: gpt-4o-mini's high-detail tiling of its
/// largest accepted image (2048×768 after scaling: 8 tiles) is 2,833 + 8 × 5,667 = 48,169 tokens.
pub const DEFAULT_IMAGE_PART_TOKENS: u32 = 48_169;
/// Chat-template tokens per message for a model whose tokenizer AEX does not know: generous
/// against the turn markers of common templates (Gemma, Llama 3, ChatML add 4–10).
pub const DEFAULT_CHAT_TEMPLATE_TOKENS: u32 = 32;
/// Hosted-tool calls per request when the table does not say.
pub const DEFAULT_MAX_HOSTED_TOOL_CALLS: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Chat,
    Streaming,
    Tools,
    Vision,
    Responses,
    Embeddings,
}

/// How prompt tokens are counted for the estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerKind {
    /// tiktoken `o200k_base` (gpt-4o, gpt-4.1, o-series, gpt-5).
    O200kBase,
    /// tiktoken `cl100k_base` (gpt-4, gpt-3.5, text-embedding-3).
    Cl100kBase,
    /// One token per UTF-8 byte: a conservative upper bound for any BPE vocabulary.
    Bytes,
}

impl TokenizerKind {
    /// The tokenizer for an upstream model name when the table does not say.
    pub fn for_model(upstream_model: &str) -> TokenizerKind {
        let m = upstream_model.to_ascii_lowercase();
        let o200k = [
            "gpt-4o",
            "gpt-4.1",
            "gpt-4.5",
            "gpt-5",
            "o1",
            "o3",
            "o4",
            "chatgpt-4o",
        ];
        let cl100k = ["gpt-4", "gpt-3.5", "text-embedding-3", "text-embedding-ada"];
        if o200k.iter().any(|p| m.starts_with(p)) {
            TokenizerKind::O200kBase
        } else if cl100k.iter().any(|p| m.starts_with(p)) {
            TokenizerKind::Cl100kBase
        } else {
            TokenizerKind::Bytes
        }
    }
}

/// A validated model alias: everything the gateway needs to price and dispatch a call.
#[derive(Debug, Clone)]
pub struct ModelRoute {
    pub alias: String,
    pub provider: Arc<ProviderRoute>,
    pub upstream_model: String,
    pub input_price: PricePerMillion,
    pub output_price: PricePerMillion,
    /// Cache-read and cache-write prices (`config::prices`); `None`: the input price.
    pub cached_input_price: Option<PricePerMillion>,
    pub cache_write_price: Option<PricePerMillion>,
    pub max_output_tokens: Option<u32>,
    pub capabilities: Vec<Capability>,
    pub fallbacks: Vec<String>,
    pub tokenizer: TokenizerKind,
    pub context_window: Option<u64>,
    pub image_part_tokens: u64,
    pub audio_part_tokens: Option<u64>,
    pub chat_template_tokens: u64,
    /// Price per call of each hosted tool type the model may use.
    pub hosted_tool_fees: BTreeMap<String, MicroUsd>,
    pub max_hosted_tool_calls: u64,
}

impl ModelRoute {
    pub fn has(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }
}

/// The validated routing table of one config version.
#[derive(Debug, Clone, Default)]
pub struct RoutingTable {
    pub version: i64,
    pub content_hash: String,
    models: HashMap<String, Arc<ModelRoute>>,
}

impl RoutingTable {
    /// Parses and validates a TOML routing document.
    pub fn parse(text: &str, version: i64) -> Result<RoutingTable, RoutingError> {
        let doc: RoutingDocument =
            toml::from_str(text).map_err(|e| RoutingError::Syntax(e.message().to_owned()))?;
        let mut table = Self::from_document(&doc)?;
        table.version = version;
        table.content_hash = content_hash(text);
        Ok(table)
    }

    pub fn from_document(doc: &RoutingDocument) -> Result<RoutingTable, RoutingError> {
        let mut providers = HashMap::new();
        for (name, p) in &doc.providers {
            providers.insert(name.clone(), Arc::new(ProviderRoute::from_doc(name, p)?));
        }
        let mut models = HashMap::new();
        for (alias, m) in &doc.models {
            let key = format!("models.{alias}");
            let provider = providers.get(&m.provider).cloned().ok_or_else(|| {
                invalid(
                    format!("{key}.provider"),
                    format!("no provider named {:?}", m.provider),
                )
            })?;
            let price = |field: &str, text: &str| {
                parse_usd(text)
                    .map(|p| PricePerMillion(p.0))
                    .map_err(|e| invalid(format!("{key}.{field}"), e.to_string()))
            };
            let input_price = price("input_usd_per_million", &m.input_usd_per_million)?;
            let output_price = match &m.output_usd_per_million {
                Some(text) => price("output_usd_per_million", text)?,
                None => PricePerMillion(0),
            };
            let optional_price = |field: &str, text: &Option<String>| {
                text.as_deref().map(|t| price(field, t)).transpose()
            };
            let cached_input_price = optional_price(
                "cached_input_usd_per_million",
                &m.cached_input_usd_per_million,
            )?;
            let cache_write_price = optional_price(
                "cache_write_usd_per_million",
                &m.cache_write_usd_per_million,
            )?;
            if m.capabilities.is_empty() {
                return Err(invalid(
                    format!("{key}.capabilities"),
                    "must list at least one",
                ));
            }
            let generates = m.capabilities.iter().any(|c| *c != Capability::Embeddings);
            if generates && m.output_usd_per_million.is_none() {
                return Err(invalid(
                    format!("{key}.output_usd_per_million"),
                    "is required for a model that generates output",
                ));
            }
            if m.max_output_tokens == Some(0) {
                return Err(invalid(
                    format!("{key}.max_output_tokens"),
                    "must be positive",
                ));
            }
            for fallback in &m.fallbacks {
                if fallback == alias || !doc.models.contains_key(fallback) {
                    return Err(invalid(
                        format!("{key}.fallbacks"),
                        format!("{fallback:?} is not another model alias"),
                    ));
                }
            }
            let positive = |field: &str, value: Option<u32>| match value {
                Some(0) => Err(invalid(format!("{key}.{field}"), "must be positive")),
                other => Ok(other.map(u64::from)),
            };
            let context_window = positive("context_window", m.context_window)?;
            let image_part_tokens = positive("image_part_tokens", m.image_part_tokens)?;
            let audio_part_tokens = positive("audio_part_tokens", m.audio_part_tokens)?;
            let max_hosted_tool_calls = positive("max_hosted_tool_calls", m.max_hosted_tool_calls)?;
            let mut hosted_tool_fees = BTreeMap::new();
            for (tool, text) in &m.hosted_tool_usd_per_call {
                let fee = parse_usd(text).map_err(|e| {
                    invalid(
                        format!("{key}.hosted_tool_usd_per_call.{tool}"),
                        e.to_string(),
                    )
                })?;
                hosted_tool_fees.insert(tool.clone(), fee);
            }
            let tokenizer = m
                .tokenizer
                .unwrap_or_else(|| TokenizerKind::for_model(&m.upstream_model));
            let template_default = match tokenizer {
                TokenizerKind::Bytes => DEFAULT_CHAT_TEMPLATE_TOKENS,
                _ => 0,
            };
            models.insert(
                alias.clone(),
                Arc::new(ModelRoute {
                    alias: alias.clone(),
                    provider,
                    upstream_model: m.upstream_model.clone(),
                    input_price,
                    output_price,
                    cached_input_price,
                    cache_write_price,
                    max_output_tokens: m.max_output_tokens,
                    capabilities: m.capabilities.clone(),
                    fallbacks: m.fallbacks.clone(),
                    tokenizer,
                    context_window,
                    image_part_tokens: image_part_tokens
                        .unwrap_or(u64::from(DEFAULT_IMAGE_PART_TOKENS)),
                    audio_part_tokens,
                    chat_template_tokens: u64::from(
                        m.chat_template_tokens.unwrap_or(template_default),
                    ),
                    hosted_tool_fees,
                    max_hosted_tool_calls: max_hosted_tool_calls
                        .unwrap_or(u64::from(DEFAULT_MAX_HOSTED_TOOL_CALLS)),
                }),
            );
        }
        Ok(RoutingTable {
            version: 0,
            content_hash: String::new(),
            models,
        })
    }

    pub fn model(&self, alias: &str) -> Option<&Arc<ModelRoute>> {
        self.models.get(alias)
    }

    /// All aliases, sorted.
    pub fn aliases(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.models.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }
}

/// SHA-256 (hex) of a routing document's text: identical files from many replicas are one version.
pub fn content_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = r#"
[providers.openai]
kind = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"
timeout_seconds = 120

[models."gpt-4o-mini"]
provider = "openai"
upstream_model = "gpt-4o-mini"
input_usd_per_million = "0.15"
output_usd_per_million = "0.60"
max_output_tokens = 16384
capabilities = ["chat", "streaming", "tools", "vision", "responses"]
fallbacks = []

[models."text-embedding-3-small"]
provider = "openai"
upstream_model = "text-embedding-3-small"
input_usd_per_million = "0.02"
capabilities = ["embeddings"]
"#;

    #[test]
    fn parses_the_spec_example_with_exact_prices() {
        let t = RoutingTable::parse(SPEC_EXAMPLE, 1).unwrap();
        let m = t.model("gpt-4o-mini").unwrap();
        assert_eq!(m.input_price, PricePerMillion(150_000));
        assert_eq!(m.output_price, PricePerMillion(600_000));
        assert_eq!(m.tokenizer, TokenizerKind::O200kBase);
        assert_eq!(m.provider.base_url, "https://api.openai.com/v1");
        let e = t.model("text-embedding-3-small").unwrap();
        assert_eq!(e.input_price, PricePerMillion(20_000));
        assert_eq!(t.aliases(), vec!["gpt-4o-mini", "text-embedding-3-small"]);
        assert_eq!(t.content_hash.len(), 64);
    }

    #[test]
    fn errors_name_the_key() {
        let bad_price = SPEC_EXAMPLE.replace("\"0.15\"", "\"0.15abc\"");
        let err = RoutingTable::parse(&bad_price, 1).unwrap_err().to_string();
        assert!(
            err.contains("models.gpt-4o-mini.input_usd_per_million"),
            "{err}"
        );

        let bad_provider = SPEC_EXAMPLE.replace(
            "provider = \"openai\"\nupstream_model = \"gpt-4o-mini\"",
            "provider = \"nope\"\nupstream_model = \"gpt-4o-mini\"",
        );
        let err = RoutingTable::parse(&bad_provider, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("models.gpt-4o-mini.provider"), "{err}");

        let bad_fallback = SPEC_EXAMPLE.replace("fallbacks = []", "fallbacks = [\"ghost\"]");
        let err = RoutingTable::parse(&bad_fallback, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("models.gpt-4o-mini.fallbacks"), "{err}");

        let unknown = format!("{SPEC_EXAMPLE}\n[models.x]\nprovider=\"openai\"\nupstream_model=\"x\"\ninput_usd_per_million=\"1\"\nprice=3\n");
        let err = RoutingTable::parse(&unknown, 1).unwrap_err().to_string();
        assert!(err.contains("price"), "{err}");
    }

    #[test]
    fn float_prices_are_refused_because_they_are_not_exact() {
        let float = SPEC_EXAMPLE.replace("\"0.15\"", "0.15");
        assert!(RoutingTable::parse(&float, 1).is_err());
    }

    #[test]
    fn tokenizer_follows_the_model_family() {
        assert_eq!(TokenizerKind::for_model("gpt-4o"), TokenizerKind::O200kBase);
        assert_eq!(
            TokenizerKind::for_model("gpt-4-turbo"),
            TokenizerKind::Cl100kBase
        );
        assert_eq!(
            TokenizerKind::for_model("llama-3.1-8b"),
            TokenizerKind::Bytes
        );
    }
}
