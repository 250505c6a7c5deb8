//! `aex token issue|list|revoke|rotate`, through the admin API.

use clap::Subcommand;
use serde_json::{json, Value};

use super::client::AdminClient;
use super::{emit, emit_list, text, Cli};

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Issue a token (printed once; `--json` has it in a top-level `token` field).
    Issue {
        #[arg(long, value_parser = ["execution", "read-only", "admin", "operator"])]
        scope: String,
        /// The agent (name or id) of an execution or read-only token.
        #[arg(long)]
        agent: Option<String>,
        /// Tenant (name or id) of an admin token or of the agent.
        #[arg(long)]
        tenant: Option<String>,
        /// Lifetime in hours (default: no expiry).
        #[arg(long)]
        ttl: Option<u32>,
        /// Who an admin or operator token names.
        #[arg(long)]
        subject: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List tokens (metadata only).
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        scope: Option<String>,
        /// Include revoked tokens.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a token by id; every replica refuses it within a second.
    Revoke {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Revoke a token and issue its successor (printed once).
    Rotate { id: String },
}

fn emit_issued(json: bool, v: &Value) {
    emit(json, v, || {
        format!(
            "{} token {} for {} issued\ntoken (shown once): {}",
            text(v, "scope"),
            text(v, "token_id"),
            text(v, "subject"),
            text(v, "token")
        )
    });
}

pub async fn run(cli: &Cli, action: &TokenAction) -> anyhow::Result<()> {
    let settings = super::settings(cli)?;
    let client = AdminClient::from_settings(&settings)?;
    match action {
        TokenAction::Issue {
            scope,
            agent,
            tenant,
            ttl,
            subject,
            description,
        } => {
            let q = client.tenant_query(tenant.as_deref()).await?;
            let body = json!({"scope": scope, "agent": agent, "ttl_hours": ttl,
                              "subject": subject, "description": description});
            emit_issued(
                cli.json,
                &client.post(&["admin", "tokens"], &q, &body).await?,
            );
        }
        TokenAction::List {
            tenant,
            agent,
            scope,
            all,
        } => {
            let q = client
                .tenant_query(tenant.as_deref())
                .await?
                .add("agent", agent.as_ref())
                .add("scope", scope.as_ref())
                .add("include_revoked", Some(*all));
            let list = client.get(&["admin", "tokens"], &q).await?;
            let header = format!(
                "{:<36} {:<10} {:<24} {:<25} {}",
                "ID", "SCOPE", "SUBJECT", "EXPIRES", "REVOKED"
            );
            emit_list(cli.json, "tokens", &list, &header, |t| {
                format!(
                    "{:<36} {:<10} {:<24} {:<25} {}",
                    text(t, "id"),
                    text(t, "scope"),
                    text(t, "subject"),
                    text(t, "expires_at"),
                    text(t, "revoked_at")
                )
            });
        }
        TokenAction::Revoke { id, reason } => {
            let t = client
                .post(
                    &["admin", "tokens", id, "revoke"],
                    &Default::default(),
                    &json!({"reason": reason}),
                )
                .await?;
            emit(cli.json, &t, || {
                format!(
                    "token {} revoked ({})",
                    text(&t, "id"),
                    text(&t, "revoked_reason")
                )
            });
        }
        TokenAction::Rotate { id } => {
            let issued = client
                .post(
                    &["admin", "tokens", id, "rotate"],
                    &Default::default(),
                    &json!({}),
                )
                .await?;
            emit_issued(cli.json, &issued);
        }
    }
    Ok(())
}
