//! Server settings, layered with figment: built-in defaults → `aex.toml` → `AEX_*` environment,
//! and checked together. The sections (`[server]`, `[db]`, …) and their defaults are `sections`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use super::sections::{
    aex_home, AuthSettings, CliSettings, ClusterSettings, DbSettings, GatewaySettings,
    LedgerSettings, LogFormat, MetricsSettings, ServerSettings, ToolsSettings,
};
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

/// `host:port` with a non-empty host and a numeric port (IPv6 hosts in brackets).
fn is_host_port(entry: &str) -> bool {
    entry
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
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
        if server.worker_threads == Some(0) {
            return invalid("server.worker_threads", "must be at least 1");
        }
        if self.gateway.max_audio_upload_bytes < 1024 {
            return invalid("gateway.max_audio_upload_bytes", "must be at least 1024");
        }
        if self.gateway.agent_transaction_slots < 1 {
            return invalid("gateway.agent_transaction_slots", "must be at least 1");
        }
        if self.gateway.max_agents_per_tenant < 1 {
            return invalid("gateway.max_agents_per_tenant", "must be at least 1");
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
        let err = from_toml("[server]\nworker_threads = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.worker_threads"), "{err}");
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
    fn the_agent_limit_defaults_to_a_thousand_and_comes_from_the_environment() {
        assert_eq!(from_toml("").unwrap().gateway.max_agents_per_tenant, 1000);
        // The same parsing as `AEX_GATEWAY__MAX_AGENTS_PER_TENANT`, under a prefix of its own.
        std::env::set_var("AEXTESTAGENTCAP_GATEWAY__MAX_AGENTS_PER_TENANT", "25");
        let s = Settings::from_figment(
            Figment::from(Serialized::defaults(Settings::default()))
                .merge(Env::prefixed("AEXTESTAGENTCAP_").split("__")),
        )
        .unwrap();
        assert_eq!(s.gateway.max_agents_per_tenant, 25);
        let err = from_toml("[gateway]\nmax_agents_per_tenant = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("gateway.max_agents_per_tenant"), "{err}");
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
