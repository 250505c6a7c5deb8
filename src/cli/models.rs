//! `aex models reload|show`: the routing table's versions, through the admin API.

use clap::Subcommand;
use serde_json::{json, Value};

use super::client::{AdminClient, Query};
use super::{emit, text, Cli};

#[derive(Debug, Subcommand)]
pub enum ModelsAction {
    /// Validate and activate a routing table on every replica: the given file, or else the
    /// server's own models file. An invalid document changes nothing.
    Reload {
        /// A routing table (TOML) to send; default: the server reads its models file.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
    /// Show the active version and the models it routes.
    Show,
}

pub async fn run(cli: &Cli, action: &ModelsAction) -> anyhow::Result<()> {
    let settings = super::settings(cli)?;
    let client = AdminClient::from_settings(&settings)?;
    match action {
        ModelsAction::Reload { file } => {
            let body = match file {
                Some(path) => {
                    let content = std::fs::read_to_string(path)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                    json!({"content": content})
                }
                None => json!({}),
            };
            let r = client
                .post(&["admin", "reload_config"], &Query::new(), &body)
                .await?;
            emit(cli.json, &r, || match r["changed"].as_bool() {
                Some(true) => format!(
                    "routing table version {} active (was {}); models: {}",
                    text(&r, "version"),
                    text(&r, "previous_version"),
                    models(&r)
                ),
                _ => format!(
                    "unchanged: version {} is already this document",
                    text(&r, "version")
                ),
            });
        }
        ModelsAction::Show => {
            let c = client.get(&["admin", "config"], &Query::new()).await?;
            emit(cli.json, &c, || {
                format!(
                    "routing table version {} ({}, {}); this replica routes version {}; models: {}",
                    text(&c, "version"),
                    text(&c, "source"),
                    text(&c, "created_at"),
                    text(&c, "replica_version"),
                    models(&c)
                )
            });
        }
    }
    Ok(())
}

fn models(v: &Value) -> String {
    let names: Vec<&str> = v["models"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    names.join(", ")
}
