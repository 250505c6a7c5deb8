//! Server settings, layered with figment: built-in defaults → `aex.toml` → `AEX_*` environment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use super::Secret;

/// Environment variables with the `AEX_` prefix that are not settings keys.
const NON_SETTING_ENV: &[&str] = &["HOME", "CONFIG", "URL", "ADMIN_TOKEN"];

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid configuration: {0}")]
    Figment(#[from] Box<figment::Error>),
    #[error("invalid configuration: {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Every setting of the server. Unknown keys are rejected, naming the key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address the HTTP server binds (`AEX_LISTEN`).
    pub listen: SocketAddr,
    /// Postgres URL (`AEX_DATABASE_URL`). Unset: the embedded cluster under `$AEX_HOME/pg`.
    /// The server's runtime role: it should own nothing (SPEC §10).
    pub database_url: Option<Secret>,
    /// The role that owns the tables and applies migrations (`AEX_MIGRATION_DATABASE_URL`):
    /// `aex migrate`, auto-migration and `aex init` use it, and grant `database_url`'s role what
    /// it needs. Unset: `database_url`.
    pub migration_database_url: Option<Secret>,
    /// The routing table file (`AEX_MODELS_FILE`); default `$AEX_HOME/models.toml`.
    pub models_file: Option<PathBuf>,
    /// Apply migrations at `aex serve` start (under an advisory lock).
    pub auto_migrate: bool,
    pub log_format: LogFormat,
    /// Largest request body accepted; larger bodies get 413.
    pub max_body_bytes: usize,
    pub server: ServerSettings,
    pub db: DbSettings,
    pub auth: AuthSettings,
    pub gateway: GatewaySettings,
    pub cluster: ClusterSettings,
    pub ledger: LedgerSettings,
    pub metrics: MetricsSettings,
    pub cli: CliSettings,
    pub tools: ToolsSettings,
    pub alerts: super::AlertsSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 9000)),
            database_url: None,
            migration_database_url: None,
            models_file: None,
            auto_migrate: true,
            log_format: LogFormat::Pretty,
            max_body_bytes: 4 * 1024 * 1024,
            server: ServerSettings::default(),
            db: DbSettings::default(),
            auth: AuthSettings::default(),
            gateway: GatewaySettings::default(),
            cluster: ClusterSettings::default(),
            ledger: LedgerSettings::default(),
            metrics: MetricsSettings::default(),
            cli: CliSettings::default(),
            tools: ToolsSettings::default(),
            alerts: super::AlertsSettings::default(),
        }
    }
}

/// Limits on what one client may hold of a replica (SPEC §3): slow or idle connections are
/// closed, open connections are capped, and a streaming client that stops reading is cut.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// A request's headers must arrive within this, counted from its first byte.
    pub header_read_timeout_seconds: u64,
    /// A keep-alive connection with no request in flight is closed after this.
    pub idle_timeout_seconds: u64,
    /// A request body must arrive within this (408 otherwise).
    pub body_read_timeout_seconds: u64,
    /// Connections open at once per replica (on each listener); more wait in the listen queue.
    pub max_connections: usize,
    /// A streaming client that takes nothing for this long is cut and settled.
    pub stream_write_timeout_seconds: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            header_read_timeout_seconds: 10,
            idle_timeout_seconds: 60,
            body_read_timeout_seconds: 30,
            max_connections: 10_000,
            stream_write_timeout_seconds: 30,
        }
    }
}

/// Where tool plugins may come from and what they may reach (SPEC §8).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolsSettings {
    /// Refuse to run a process plugin unless bubblewrap isolates it. `false` is an explicit
    /// opt-out, logged at startup and on every run.
    pub require_isolation: bool,
    /// The bubblewrap binary; used when it exists and works.
    pub bwrap_path: PathBuf,
    /// Address-space limit of a process plugin, in MiB.
    pub memory_limit_mib: u64,
    /// The only directory process plugins are installed from; default `$AEX_HOME/plugins`.
    pub plugin_dir: Option<PathBuf>,
    /// Largest executable a process plugin may be (it is read whole to be hashed).
    pub max_executable_bytes: u64,
    /// `host:port` pairs an `http` plugin may reach although they resolve to a loopback,
    /// private, link-local or unique-local address (`AEX_TOOLS__ALLOWED_HTTP_HOSTS='["h:p"]'`).
    /// Cloud metadata addresses stay refused.
    pub allowed_http_hosts: Vec<String>,
}

impl Default for ToolsSettings {
    fn default() -> Self {
        ToolsSettings {
            require_isolation: true,
            bwrap_path: PathBuf::from("/usr/bin/bwrap"),
            memory_limit_mib: 512,
            plugin_dir: None,
            max_executable_bytes: 256 << 20,
            allowed_http_hosts: Vec::new(),
        }
    }
}

impl ToolsSettings {
    /// `plugin_dir`, resolved against `$AEX_HOME` when not set.
    pub fn plugin_dir_path(&self) -> PathBuf {
        self.plugin_dir
            .clone()
            .unwrap_or_else(|| aex_home().join("plugins"))
    }
}

/// How the management commands reach the admin API (`AEX_URL` and `AEX_ADMIN_TOKEN` override).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CliSettings {
    /// Base URL of a server, e.g. `http://127.0.0.1:9000`; default: derived from `listen`.
    pub url: Option<String>,
    /// The operator token `aex init` printed.
    pub admin_token: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DbSettings {
    pub max_connections: u32,
    pub acquire_timeout_seconds: u64,
}

impl Default for DbSettings {
    fn default() -> Self {
        DbSettings {
            max_connections: 32,
            acquire_timeout_seconds: 5,
        }
    }
}

/// Token signing. Several keys may be configured so that keys can rotate: new tokens are signed
/// with `active_kid`, and any configured key verifies tokens that name it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    pub issuer: String,
    pub active_kid: String,
    pub keys: BTreeMap<String, Secret>,
    /// How often the revocation set is reloaded in full, besides LISTEN/NOTIFY.
    pub revocation_resync_seconds: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            issuer: "aex".to_owned(),
            active_kid: "k1".to_owned(),
            keys: BTreeMap::new(),
            revocation_resync_seconds: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    /// How long a duplicate keyed request waits for the first to finish before 409.
    pub idempotency_wait_seconds: u64,
    /// How long cached results are kept for replay.
    pub result_retention_hours: u64,
    /// Output cap used when neither the request nor the model sets one.
    pub default_max_output_tokens: u32,
    /// With `clamp_max_tokens`, the smallest output cap worth sending instead of a 402.
    pub clamp_min_output_tokens: u32,
    /// Connect timeout of the shared upstream HTTP client.
    pub upstream_connect_timeout_seconds: u64,
    /// How many money transactions (admission, settlement) of one agent a replica runs at once;
    /// more wait in the replica rather than in Postgres's lock queue (`gateway::agent_gate`).
    pub agent_transaction_slots: u32,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            idempotency_wait_seconds: 10,
            result_retention_hours: 24,
            default_max_output_tokens: 4096,
            clamp_min_output_tokens: 16,
            upstream_connect_timeout_seconds: 10,
            agent_transaction_slots: 4,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    pub heartbeat_seconds: u64,
    /// A replica whose heartbeat is older than this is considered lost.
    pub stale_after_seconds: u64,
    pub reconcile_interval_seconds: u64,
    /// How long SIGTERM waits for in-flight requests and settlements.
    pub drain_timeout_seconds: u64,
    /// After SIGTERM, how long to keep accepting connections while `/ready` answers 503, so a
    /// load balancer that polls it stops routing here before the listener closes. 0 (the
    /// default) closes at once, for platforms that drain first (Kubernetes with a preStop sleep).
    pub drain_grace_seconds: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            heartbeat_seconds: 5,
            stale_after_seconds: 30,
            reconcile_interval_seconds: 15,
            drain_timeout_seconds: 30,
            drain_grace_seconds: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSettings {
    pub checkpoint_interval_seconds: u64,
    /// Verify the ledger since the last checkpoint at startup.
    pub verify_on_startup: bool,
    /// Exit instead of staying unready when the startup gate fails.
    pub refuse_start_on_failure: bool,
    /// How often a running server verifies the events appended since its last check, for
    /// `/metrics` and the dashboard (0: only at startup and on request).
    pub verify_interval_seconds: u64,
    /// How often that check walks every chain again from the start instead.
    pub full_verify_interval_seconds: u64,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        LedgerSettings {
            checkpoint_interval_seconds: 60,
            verify_on_startup: true,
            refuse_start_on_failure: false,
            verify_interval_seconds: 10,
            full_verify_interval_seconds: 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Also export spend per agent (off by default to bound cardinality).
    pub agent_labels: bool,
    /// A second address serving only `/metrics` (e.g. `0.0.0.0:9100`); `/metrics` stays on the
    /// main port too.
    pub listen: Option<SocketAddr>,
    /// How often the gauges read from the database (spend, stale reservations, exhausted
    /// budgets) are sampled.
    pub sample_interval_seconds: u64,
    /// A reservation held longer than this counts as stale.
    pub stale_reservation_seconds: u64,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            agent_labels: false,
            listen: None,
            sample_interval_seconds: 10,
            stale_reservation_seconds: 600,
        }
    }
}

/// `host:port` with a non-empty host and a numeric port (IPv6 hosts in brackets).
fn is_host_port(entry: &str) -> bool {
    entry
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// `$AEX_HOME`, default `~/.aex`.
pub fn aex_home() -> PathBuf {
    if let Some(home) = std::env::var_os("AEX_HOME") {
        return PathBuf::from(home);
    }
    let user_home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| ".".into());
    user_home.join(".aex")
}

impl Settings {
    /// The config file: `--config`, else `AEX_CONFIG`, else `$AEX_HOME/aex.toml`.
    pub fn config_path(explicit: Option<&Path>) -> PathBuf {
        explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("AEX_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| aex_home().join("aex.toml"))
    }

    /// Loads defaults, then the file (if it exists), then the environment, and validates.
    pub fn load(config_file: &Path) -> Result<Settings, SettingsError> {
        Self::from_figment(
            Figment::from(Serialized::defaults(Settings::default()))
                .merge(Toml::file(config_file))
                .merge(Env::prefixed("AEX_").ignore(NON_SETTING_ENV).split("__")),
        )
    }

    fn from_figment(figment: Figment) -> Result<Settings, SettingsError> {
        let settings: Settings = figment.extract().map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key, message: &str| {
            Err(SettingsError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        if self.max_body_bytes < 1024 {
            return invalid("max_body_bytes", "must be at least 1024");
        }
        let server = &self.server;
        for (key, value) in [
            (
                "server.header_read_timeout_seconds",
                server.header_read_timeout_seconds,
            ),
            ("server.idle_timeout_seconds", server.idle_timeout_seconds),
            (
                "server.body_read_timeout_seconds",
                server.body_read_timeout_seconds,
            ),
            (
                "server.stream_write_timeout_seconds",
                server.stream_write_timeout_seconds,
            ),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        if server.max_connections < 1 {
            return invalid("server.max_connections", "must be at least 1");
        }
        if self.gateway.agent_transaction_slots < 1 {
            return invalid("gateway.agent_transaction_slots", "must be at least 1");
        }
        if self.db.max_connections < 2 {
            return invalid("db.max_connections", "must be at least 2");
        }
        if !self.auth.keys.is_empty() && !self.auth.keys.contains_key(&self.auth.active_kid) {
            return invalid("auth.active_kid", "names no key in auth.keys");
        }
        if self.auth.keys.values().any(|k| k.expose().len() < 32) {
            return invalid("auth.keys", "every key must be at least 32 characters");
        }
        if self.metrics.sample_interval_seconds == 0 {
            return invalid("metrics.sample_interval_seconds", "must be at least 1");
        }
        if let Some(bad) = self
            .tools
            .allowed_http_hosts
            .iter()
            .find(|h| !is_host_port(h))
        {
            return Err(SettingsError::Invalid {
                key: "tools.allowed_http_hosts",
                message: format!("{bad:?} is not host:port"),
            });
        }
        if self.cluster.stale_after_seconds <= self.cluster.heartbeat_seconds {
            return invalid(
                "cluster.stale_after_seconds",
                "must exceed cluster.heartbeat_seconds",
            );
        }
        Ok(())
    }

    /// The URL migrations run with: `migration_database_url`, else `database_url`.
    pub fn migration_url(&self) -> Option<&Secret> {
        self.migration_database_url
            .as_ref()
            .or(self.database_url.as_ref())
    }

    /// The routing table file, resolved against `$AEX_HOME` when not set.
    pub fn models_file_path(&self) -> PathBuf {
        self.models_file
            .clone()
            .unwrap_or_else(|| aex_home().join("models.toml"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str) -> Result<Settings, SettingsError> {
        Settings::from_figment(
            Figment::from(Serialized::defaults(Settings::default())).merge(Toml::string(text)),
        )
    }

    #[test]
    fn defaults_listen_on_loopback_port_9000() {
        let s = from_toml("").unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:9000");
        assert!(s.auto_migrate);
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = from_toml("listne = \"0.0.0.0:1\"").unwrap_err().to_string();
        assert!(err.contains("listne"), "{err}");
        let err = from_toml("[gateway]\nwait = 3").unwrap_err().to_string();
        assert!(err.contains("wait"), "{err}");
    }

    #[test]
    fn validation_errors_name_the_key() {
        let err = from_toml(
            "[auth]\nactive_kid = \"k9\"\n[auth.keys]\nk1 = \"0123456789abcdef0123456789abcdef\"",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("auth.active_kid"), "{err}");
        let err = from_toml("[auth.keys]\nk1 = \"short\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.keys"), "{err}");
    }

    #[test]
    fn allowed_http_hosts_come_from_the_environment_as_a_list() {
        // The same parsing as `AEX_TOOLS__ALLOWED_HTTP_HOSTS`, under a prefix no other test reads.
        std::env::set_var(
            "AEXTESTPLUGINS_TOOLS__ALLOWED_HTTP_HOSTS",
            r#"["127.0.0.1:8088", "localhost:9000"]"#,
        );
        let s = Settings::from_figment(
            Figment::from(Serialized::defaults(Settings::default()))
                .merge(Env::prefixed("AEXTESTPLUGINS_").split("__")),
        )
        .unwrap();
        assert_eq!(
            s.tools.allowed_http_hosts,
            vec!["127.0.0.1:8088".to_owned(), "localhost:9000".to_owned()]
        );
        assert!(
            s.tools.require_isolation,
            "isolation is required by default"
        );
        let err = from_toml("[tools]\nallowed_http_hosts = [\"localhost\"]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tools.allowed_http_hosts"), "{err}");
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let s = from_toml(
            "database_url = \"postgres://u:pw@h/db\"\n[auth.keys]\nk1 = \"0123456789abcdef0123456789abcdefXYZ\"",
        )
        .unwrap();
        let debug = format!("{s:?}");
        assert!(!debug.contains("pw@"), "{debug}");
        assert!(!debug.contains("XYZ"), "{debug}");
    }
}
