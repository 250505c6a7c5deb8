//! Configuration: the server's settings (figment: defaults → `aex.toml` → `AEX_*`) and the
//! routing table of providers and models, which lives in its own file and is versioned in Postgres.

mod alerts;
mod live_routing;
mod media_prices;
mod prices;
mod provider;
mod routing;
mod routing_error;
mod secret;
mod sections;
mod settings;

pub use alerts::AlertsSettings;
pub use live_routing::LiveRouting;
pub use media_prices::{MediaPrices, DEFAULT_AUDIO_MIN_BITRATE_BPS};
pub use prices::InputTokens;
pub use provider::{
    KeyHeader, ProviderDoc, ProviderKind, ProviderRoute, DEFAULT_ANTHROPIC_VERSION,
};
pub use routing::{
    Capability, ModelRoute, RoutingDocument, RoutingError, RoutingTable, TokenizerKind,
    DEFAULT_CHAT_TEMPLATE_TOKENS, DEFAULT_IMAGE_PART_TOKENS, DEFAULT_MAX_HOSTED_TOOL_CALLS,
};
pub use secret::Secret;
pub use sections::{
    aex_home, AuthSettings, CliSettings, ClusterSettings, DbSettings, GatewaySettings,
    LedgerSettings, LogFormat, MetricsSettings, ServerSettings, ToolsSettings,
};
pub use settings::{Settings, SettingsError};
