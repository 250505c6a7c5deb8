//! `aex plugin install|list|enable|disable`: a tenant's tool plugin registry, through the admin
//! API. Installing needs an operator token (SPEC §8); a tenant admin's token lists, enables and
//! disables its tenant's plugins.

use clap::Subcommand;
use serde_json::{json, Value};

use super::client::AdminClient;
use super::{emit, emit_list, text, usd, Cli};

// Parsed once per process; boxing the install arguments would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum PluginAction {
    /// Install a plugin for a tenant (operator token): an `http` one by URL (checked against
    /// `tools.allowed_http_hosts` and the internal ranges), a `process` one by absolute path
    /// under `tools.plugin_dir` (hashed now, with its arguments).
    Install {
        name: String,
        #[arg(long, value_parser = ["http", "process"])]
        kind: String,
        #[arg(long, default_value = "1")]
        version: String,
        /// Price of one run in USD.
        #[arg(long, default_value = "0")]
        cost: String,
        #[arg(long, required_if_eq("kind", "http"))]
        url: Option<String>,
        /// Environment variable (on the servers) holding the HMAC secret calls are signed with.
        #[arg(long, required_if_eq("kind", "http"))]
        secret_env: Option<String>,
        /// Arguments passed to a process plugin (hashed with the executable).
        #[arg(long = "arg")]
        args: Vec<String>,
        /// The executable of a process plugin, under the servers' `tools.plugin_dir`.
        #[arg(long, required_if_eq("kind", "process"))]
        path: Option<String>,
        /// The executable's expected SHA-256 (as `sha256sum` prints it); the install fails when
        /// the file on the server differs.
        #[arg(long)]
        sha256: Option<String>,
        #[arg(long)]
        timeout_ms: Option<i32>,
        #[arg(long)]
        max_output_bytes: Option<i32>,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List the tenant's plugins.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Enable a plugin installed for the tenant (its admin or an operator).
    Enable {
        name: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Disable a plugin for the tenant: its agents can no longer run it.
    Disable {
        name: String,
        #[arg(long)]
        tenant: Option<String>,
    },
}

pub async fn run(cli: &Cli, action: &PluginAction) -> anyhow::Result<()> {
    let settings = super::settings(cli)?;
    let client = AdminClient::from_settings(&settings)?;
    match action {
        PluginAction::Install {
            name,
            kind,
            version,
            cost,
            url,
            secret_env,
            args,
            path,
            sha256,
            timeout_ms,
            max_output_bytes,
            tenant,
        } => {
            let q = client.tenant_query(tenant.as_deref()).await?;
            let manifest = match (url, path) {
                (Some(u), _) => json!({"url": u, "secret_env": secret_env}),
                (None, Some(p)) => match sha256 {
                    Some(h) => json!({"path": p, "args": args, "sha256": h}),
                    None => json!({"path": p, "args": args}),
                },
                (None, None) => json!({}),
            };
            let body = json!({"name": name, "kind": kind, "version": version, "cost_usd": cost,
                              "timeout_ms": timeout_ms, "max_output_bytes": max_output_bytes,
                              "manifest": manifest});
            let p = client.post(&["admin", "plugins"], &q, &body).await?;
            emit(cli.json, &p, || {
                format!(
                    "plugin {} {} installed",
                    text(&p, "name"),
                    text(&p, "version")
                )
            });
        }
        PluginAction::List { tenant } => {
            let q = client.tenant_query(tenant.as_deref()).await?;
            let list = client.get(&["admin", "plugins"], &q).await?;
            let header = format!(
                "{:<24} {:<10} {:<8} {:>12} {}",
                "NAME", "VERSION", "KIND", "COST_USD", "ENABLED"
            );
            emit_list(cli.json, "plugins", &list, &header, |p| {
                format!(
                    "{:<24} {:<10} {:<8} {:>12} {}",
                    text(p, "name"),
                    text(p, "version"),
                    text(p, "kind"),
                    usd(p, "cost_micro_usd"),
                    text(p, "enabled")
                )
            });
        }
        PluginAction::Enable { name, tenant } | PluginAction::Disable { name, tenant } => {
            let verb = match action {
                PluginAction::Enable { .. } => "enable",
                _ => "disable",
            };
            let q = client.tenant_query(tenant.as_deref()).await?;
            let p: Value = client
                .post(&["admin", "plugins", name, verb], &q, &json!(null))
                .await?;
            emit(cli.json, &p, || {
                format!(
                    "plugin {} enabled: {}",
                    text(&p, "name"),
                    text(&p, "enabled")
                )
            });
        }
    }
    Ok(())
}
