//! Configuration: the server's settings (figment: defaults → `aex.toml` → `AEX_*`) and the
//! routing table of providers and models, which lives in its own file and is versioned in Postgres.

mod alerts;
mod live_routing;
mod prices;
mod provider;
mod routing;
mod routing_error;
mod secret;
mod settings;

pub use alerts::AlertsSettings;
pub use live_routing::LiveRouting;
pub use prices::InputTokens;
pub use provider::{
    KeyHeader, ProviderDoc, ProviderKind, ProviderRoute, DEFAULT_ANTHROPIC_VERSION,
};
pub use routing::{
    Capability, ModelRoute, RoutingDocument, RoutingError, RoutingTable, TokenizerKind,
    DEFAULT_CHAT_TEMPLATE_TOKENS, DEFAULT_IMAGE_PART_TOKENS, DEFAULT_MAX_HOSTED_TOOL_CALLS,
};
pub use secret::Secret;
pub use settings::{
    aex_home, AuthSettings, CliSettings, ClusterSettings, DbSettings, GatewaySettings,
    LedgerSettings, LogFormat, MetricsSettings, ServerSettings, Settings, SettingsError,
    ToolsSettings,
};
