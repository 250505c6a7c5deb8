//! Upstream providers: the OpenAI-compatible HTTP client every configured provider speaks, and
//! the extraction of usage from what they return.

pub mod openai;
pub mod usage;

pub use openai::{ProviderError, Upstream, UpstreamRequest, UpstreamResponse};
pub use usage::Usage;
