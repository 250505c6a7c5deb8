//! Upstream providers: the [`Provider`] abstraction, its OpenAI-compatible HTTP implementation
//! (the one kind every configured provider speaks today), and usage extraction.

pub mod openai;
pub mod sse;
pub mod usage;

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

pub use openai::OpenAiCompatible;
pub use usage::Usage;

use crate::config::{ProviderKind, ProviderRoute};
use crate::domain::CallRoute;

/// Why an upstream call produced no (complete) HTTP response.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("could not connect to provider {provider}: {detail}")]
    Connect { provider: String, detail: String },
    #[error("provider {provider} timed out")]
    Timeout { provider: String },
    #[error("provider {provider} failed: {detail}")]
    Transport { provider: String, detail: String },
}

impl ProviderError {
    /// The failure's kind, as the metrics label it.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Connect { .. } => "connect",
            ProviderError::Timeout { .. } => "timeout",
            ProviderError::Transport { .. } => "transport",
        }
    }
}

/// One call to send upstream.
pub struct UpstreamRequest<'a> {
    pub provider: &'a ProviderRoute,
    pub route: CallRoute,
    /// The JSON body, already rewritten for the provider (upstream model name, output cap).
    pub body: Bytes,
    /// A caller-supplied key (`X-AEX-Provider-Key`), used instead of the configured one.
    pub passthrough_key: Option<&'a str>,
    /// Whether the body asks for a stream (`"stream": true`).
    pub stream: bool,
}

/// A complete upstream response.
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// What a provider answered: a complete body, or (for a successful answer of server-sent events,
/// whatever was asked) the body as it arrives, chunk by chunk.
pub enum UpstreamReply {
    Complete(UpstreamResponse),
    Streaming {
        status: u16,
        chunks: BoxStream<'static, Result<Bytes, ProviderError>>,
    },
}

/// An upstream API.
pub trait Provider: Send + Sync {
    /// Sends one call. A successful answer of server-sent events returns
    /// [`UpstreamReply::Streaming`] as soon as the status is known; anything else returns the
    /// complete body.
    fn call<'a>(
        &'a self,
        req: UpstreamRequest<'a>,
    ) -> BoxFuture<'a, Result<UpstreamReply, ProviderError>>;
}

/// The provider implementation for each kind in the routing table.
#[derive(Clone)]
pub struct Providers {
    openai: Arc<OpenAiCompatible>,
}

impl Providers {
    pub fn new(connect_timeout: std::time::Duration) -> Result<Self, reqwest::Error> {
        Ok(Providers {
            openai: Arc::new(OpenAiCompatible::new(connect_timeout)?),
        })
    }

    pub fn get(&self, kind: ProviderKind) -> &dyn Provider {
        match kind {
            // Same transport for both wire formats: the gateway shapes the body for the kind.
            ProviderKind::Openai | ProviderKind::Anthropic => self.openai.as_ref(),
        }
    }
}
