//! The sections of the settings (`[server]`, `[tools]`, `[cli]`, `[db]`, `[auth]`, `[gateway]`,
//! `[cluster]`, `[ledger]`, `[metrics]`), each with its defaults, and `$AEX_HOME`. How they are
//! loaded and checked together is `settings`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Secret;
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
    /// Threads that run the replica's tasks (tokio's workers). Unset: one per core the process
    /// may use, less one when Postgres is on the same machine (`server::worker_threads`).
    pub worker_threads: Option<usize>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            header_read_timeout_seconds: 10,
            idle_timeout_seconds: 60,
            body_read_timeout_seconds: 30,
            max_connections: 10_000,
            stream_write_timeout_seconds: 30,
            worker_threads: None,
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
    /// The database connections one replica may open, over both of its pools (see
    /// [`DbSettings::money_pool_size`]): what Postgres's `max_connections` must cover per replica.
    pub max_connections: u32,
    pub acquire_timeout_seconds: u64,
}

impl DbSettings {
    /// The money transactions' pipelined pool (`store::hot`): half of `max_connections`. The
    /// setting is the replica's whole budget, so adding that pool did not double what every
    /// replica may open (two replicas at the default stay within Postgres's default 100).
    pub fn money_pool_size(&self) -> u32 {
        (self.max_connections / 2).max(1)
    }

    /// The sqlx pool (every other statement): the rest of `max_connections`.
    pub fn general_pool_size(&self) -> u32 {
        self.max_connections
            .saturating_sub(self.money_pool_size())
            .max(1)
    }
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
    /// The largest audio upload `/v1/audio/transcriptions` and `/translations` accept (OpenAI's
    /// limit: 25 MiB); a larger one is a 413 before anything is held.
    pub max_audio_upload_bytes: usize,
    /// The most agents one tenant may have, decommissioned ones included; one more is a 409
    /// `agent_limit_reached`. A tenant's `spent` is a sum over all its agents, computed when a
    /// budgeted tenant is admitted and settled, so an unbounded count would let a tenant admin
    /// slow every call of the tenant and load the database every tenant shares.
    pub max_agents_per_tenant: u32,
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
            max_audio_upload_bytes: 25 * 1024 * 1024,
            max_agents_per_tenant: 1000,
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

#[cfg(test)]
mod tests {
    use super::DbSettings;

    #[test]
    fn the_two_pools_share_one_connection_budget_and_each_has_one() {
        for max in [2, 3, 10, 32, 33, 1_000] {
            let db = DbSettings {
                max_connections: max,
                ..DbSettings::default()
            };
            let (money, general) = (db.money_pool_size(), db.general_pool_size());
            assert_eq!(money + general, max, "max_connections {max}");
            assert!(money >= 1 && general >= money, "max_connections {max}");
        }
    }
}
