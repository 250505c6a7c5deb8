//! A provider entry of the routing table: where its API is, which wire format it speaks, and how
//! it is authenticated — the key's header, fixed extra headers and query parameters — so that
//! OpenAI, Azure OpenAI, Anthropic and the OpenAI-compatible servers are each one block.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use super::routing_error::{invalid, RoutingError};

/// The file's shape of `[providers.<name>]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderDoc {
    pub kind: ProviderKind,
    pub base_url: String,
    /// Name of the environment variable holding the key; the key itself is never in the file.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The header the key is sent in (default: by kind, `bearer` for `openai`, `x-api-key` for
    /// `anthropic`).
    #[serde(default)]
    pub auth: Option<KeyHeader>,
    /// Fixed headers sent with every call (e.g. `anthropic-version`); never the key.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Fixed query parameters appended to every call's URL (e.g. Azure's `api-version`).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Total time allowed for one upstream call (for a stream: until its last byte).
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
}

fn default_timeout_seconds() -> u64 {
    120
}

/// The wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenAI-compatible HTTP API (OpenAI, Azure OpenAI, Gemini's and Groq's compatible
    /// endpoints, vLLM, llama.cpp server, Ollama, …).
    Openai,
    /// Anthropic's Messages API (`POST /messages`).
    Anthropic,
}

/// How the key is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyHeader {
    /// `Authorization: Bearer <key>` (OpenAI and the compatible servers).
    #[serde(rename = "bearer")]
    Bearer,
    /// `api-key: <key>` (Azure OpenAI).
    #[serde(rename = "api-key")]
    ApiKey,
    /// `x-api-key: <key>` (Anthropic).
    #[serde(rename = "x-api-key")]
    XApiKey,
}

impl KeyHeader {
    pub fn default_for(kind: ProviderKind) -> KeyHeader {
        match kind {
            ProviderKind::Openai => KeyHeader::Bearer,
            ProviderKind::Anthropic => KeyHeader::XApiKey,
        }
    }

    /// The header's name and the value that carries `key`.
    pub fn header(self, key: &str) -> (&'static str, String) {
        match self {
            KeyHeader::Bearer => ("authorization", format!("Bearer {key}")),
            KeyHeader::ApiKey => ("api-key", key.to_owned()),
            KeyHeader::XApiKey => ("x-api-key", key.to_owned()),
        }
    }
}

/// The Messages API version sent to an `anthropic` provider whose `headers` do not name one.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// Headers AEX sets itself on every call: a fixed value would contradict the body or the key.
const RESERVED_HEADERS: [&str; 9] = [
    "authorization",
    "api-key",
    "x-api-key",
    "content-type",
    "content-length",
    "accept",
    "host",
    "transfer-encoding",
    "connection",
];

/// A validated provider entry.
#[derive(Debug, Clone)]
pub struct ProviderRoute {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    pub api_key_env: Option<String>,
    pub auth: KeyHeader,
    /// Fixed headers, validated (an `anthropic` provider always has `anthropic-version`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Fixed query parameters, in the file's order.
    pub query: Vec<(String, String)>,
    pub timeout: Duration,
}

impl ProviderRoute {
    /// Validates `[providers.<name>]`; errors name the key.
    pub fn from_doc(name: &str, p: &ProviderDoc) -> Result<ProviderRoute, RoutingError> {
        let key = format!("providers.{name}");
        if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
            return Err(invalid(
                format!("{key}.base_url"),
                "must start with http:// or https://",
            ));
        }
        if p.base_url.contains(['?', '#']) {
            return Err(invalid(
                format!("{key}.base_url"),
                "must not carry a query or fragment: put query parameters in `query`",
            ));
        }
        if p.timeout_seconds == 0 {
            return Err(invalid(
                format!("{key}.timeout_seconds"),
                "must be positive",
            ));
        }
        if p.api_key_env
            .as_deref()
            .is_some_and(|v| v.trim().is_empty())
        {
            return Err(invalid(
                format!("{key}.api_key_env"),
                "must name an environment variable",
            ));
        }
        let mut headers = Vec::with_capacity(p.headers.len() + 1);
        for (header, value) in &p.headers {
            let field = format!("{key}.headers.{header}");
            let name = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| invalid(&field, "is not a valid header name"))?;
            if RESERVED_HEADERS.contains(&name.as_str()) {
                return Err(invalid(
                    &field,
                    "is set by AEX (the key goes in api_key_env, its header in auth)",
                ));
            }
            let value = HeaderValue::from_str(value)
                .map_err(|_| invalid(&field, "is not a valid header value"))?;
            headers.push((name, value));
        }
        if p.kind == ProviderKind::Anthropic
            && !headers.iter().any(|(n, _)| n == "anthropic-version")
        {
            headers.push((
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
            ));
        }
        let mut query = Vec::with_capacity(p.query.len());
        for (param, value) in &p.query {
            if param.is_empty() {
                return Err(invalid(format!("{key}.query"), "a parameter needs a name"));
            }
            query.push((param.clone(), value.clone()));
        }
        Ok(ProviderRoute {
            name: name.to_owned(),
            kind: p.kind,
            base_url: p.base_url.trim_end_matches('/').to_owned(),
            api_key_env: p.api_key_env.clone(),
            auth: p.auth.unwrap_or(KeyHeader::default_for(p.kind)),
            headers,
            query,
            timeout: Duration::from_secs(p.timeout_seconds),
        })
    }

    /// The URL of `path` below the base URL, with the fixed query parameters.
    pub fn url(&self, path: &str) -> String {
        let mut url = format!("{}{path}", self.base_url);
        if !self.query.is_empty() {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &self.query {
                q.append_pair(k, v);
            }
            url.push('?');
            url.push_str(&q.finish());
        }
        url
    }

    /// `builder` with the provider's fixed headers and, when there is one, the key in its header.
    pub fn authorize(
        &self,
        mut builder: reqwest::RequestBuilder,
        key: Option<&str>,
    ) -> reqwest::RequestBuilder {
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        if let Some(key) = key {
            let (name, value) = self.auth.header(key);
            builder = builder.header(name, value);
        }
        builder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(extra: &str) -> Result<ProviderRoute, RoutingError> {
        let text = format!("base_url = \"https://example.test/v1\"\n{extra}");
        let p: ProviderDoc =
            toml::from_str(&text).map_err(|e| RoutingError::Syntax(e.to_string()))?;
        ProviderRoute::from_doc("p", &p)
    }

    #[test]
    fn the_key_header_defaults_by_kind() {
        let openai = doc("kind = \"openai\"").unwrap();
        assert_eq!(openai.auth, KeyHeader::Bearer);
        assert!(openai.headers.is_empty());
        let anthropic = doc("kind = \"anthropic\"").unwrap();
        assert_eq!(anthropic.auth, KeyHeader::XApiKey);
        assert_eq!(anthropic.headers[0].0, "anthropic-version");
        assert_eq!(anthropic.headers[0].1, DEFAULT_ANTHROPIC_VERSION);
        let pinned =
            doc("kind = \"anthropic\"\nheaders = { \"anthropic-version\" = \"2024-01-01\" }")
                .unwrap();
        assert_eq!(pinned.headers.len(), 1);
        assert_eq!(pinned.headers[0].1, "2024-01-01");
    }

    #[test]
    fn azure_sends_api_key_and_api_version() {
        let azure = doc(
            "kind = \"openai\"\nauth = \"api-key\"\nquery = { \"api-version\" = \"2024-10-21\" }",
        )
        .unwrap();
        assert_eq!(azure.auth.header("k"), ("api-key", "k".to_owned()));
        assert_eq!(
            azure.url("/chat/completions"),
            "https://example.test/v1/chat/completions?api-version=2024-10-21"
        );
    }

    #[test]
    fn bad_entries_are_named() {
        for (extra, named) in [
            (
                "kind = \"openai\"\nheaders = { Authorization = \"x\" }",
                "providers.p.headers.Authorization",
            ),
            (
                "kind = \"openai\"\nheaders = { \"bad header\" = \"x\" }",
                "providers.p.headers.bad header",
            ),
            (
                "kind = \"openai\"\nheaders = { a = \"line\\nbreak\" }",
                "providers.p.headers.a",
            ),
            (
                "kind = \"openai\"\nquery = { \"\" = \"x\" }",
                "providers.p.query",
            ),
            (
                "kind = \"openai\"\napi_key_env = \" \"",
                "providers.p.api_key_env",
            ),
            (
                "kind = \"openai\"\ntimeout_seconds = 0",
                "providers.p.timeout_seconds",
            ),
        ] {
            let err = doc(extra).unwrap_err().to_string();
            assert!(err.contains(named), "{extra}: {err}");
        }
        for (extra, named) in [
            ("kind = \"openai\"\nauth = \"basic\"", "basic"),
            ("kind = \"gemini\"", "gemini"),
            ("kind = \"openai\"\nkey_header = \"x\"", "key_header"),
        ] {
            let err = doc(extra).unwrap_err().to_string();
            assert!(err.contains(named), "{extra}: {err}");
        }
        let with_query: ProviderDoc =
            toml::from_str("kind = \"openai\"\nbase_url = \"https://x.test/v1?api-version=1\"")
                .unwrap();
        let err = ProviderRoute::from_doc("p", &with_query)
            .unwrap_err()
            .to_string();
        assert!(err.contains("providers.p.base_url"), "{err}");
    }
}
