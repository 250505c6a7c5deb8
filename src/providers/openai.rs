//! The OpenAI-compatible HTTP provider (OpenAI, Groq, vLLM, llama.cpp server, Ollama, …), on one
//! shared pooled `reqwest` client.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};

use crate::config::ProviderRoute;
use crate::domain::CallRoute;

/// Why an upstream call produced no HTTP response.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("could not connect to provider {provider}: {detail}")]
    Connect { provider: String, detail: String },
    #[error("provider {provider} timed out")]
    Timeout { provider: String },
    #[error("provider {provider} failed: {detail}")]
    Transport { provider: String, detail: String },
}

/// One call to send upstream.
pub struct UpstreamRequest<'a> {
    pub provider: &'a ProviderRoute,
    pub route: CallRoute,
    /// The JSON body, already rewritten for the provider (upstream model name).
    pub body: Bytes,
    /// A caller-supplied key (`X-AEX-Provider-Key`), used instead of the configured one.
    pub passthrough_key: Option<&'a str>,
}

/// A complete upstream response.
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// The shared upstream client.
#[derive(Clone)]
pub struct Upstream {
    client: reqwest::Client,
}

impl Upstream {
    pub fn new(connect_timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()?;
        Ok(Upstream { client })
    }

    /// The key for a provider: the caller's passthrough key, else the environment variable the
    /// routing table names. Read at call time so a rotated key needs no restart.
    fn api_key(req: &UpstreamRequest<'_>) -> Option<String> {
        if let Some(key) = req.passthrough_key {
            return Some(key.to_owned());
        }
        req.provider
            .api_key_env
            .as_deref()
            .and_then(|var| std::env::var(var).ok())
    }

    fn request(&self, req: &UpstreamRequest<'_>) -> reqwest::RequestBuilder {
        let url = format!("{}{}", req.provider.base_url, req.route.upstream_path());
        let mut builder = self
            .client
            .post(url)
            .timeout(req.provider.timeout)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(req.body.clone());
        if let Some(key) = Self::api_key(req) {
            builder = builder.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        builder
    }

    /// Sends a non-streaming call and reads the whole body.
    pub async fn send(&self, req: UpstreamRequest<'_>) -> Result<UpstreamResponse, ProviderError> {
        let provider = &req.provider.name;
        let response = self
            .request(&req)
            .send()
            .await
            .map_err(|e| classify(provider, e))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.map_err(|e| classify(provider, e))?;
        Ok(UpstreamResponse {
            status,
            content_type,
            body,
        })
    }
}

fn classify(provider: &str, e: reqwest::Error) -> ProviderError {
    let provider = provider.to_owned();
    if e.is_timeout() {
        ProviderError::Timeout { provider }
    } else if e.is_connect() {
        ProviderError::Connect {
            provider,
            detail: error_chain(&e),
        }
    } else {
        ProviderError::Transport {
            provider,
            detail: error_chain(&e),
        }
    }
}

/// An error with its causes, on one line (reqwest's top-level message alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
