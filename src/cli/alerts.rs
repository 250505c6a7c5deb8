//! `aex alerts list|ack` and `aex webhook add|list|test|remove`: a tenant's alerts and the
//! endpoints they are delivered to, through the admin API.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use super::client::{AdminClient, Query};
use super::{emit, emit_list, text, Cli};

#[derive(Debug, Subcommand)]
pub enum AlertsAction {
    /// List alerts, newest first, with the counts of open ones by severity.
    List {
        /// Only open (not acknowledged) alerts.
        #[arg(long)]
        open: bool,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        severity: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        /// At most this many (default 50).
        #[arg(long)]
        limit: Option<i64>,
        /// Without it, an operator sees every tenant's alerts and the installation's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Acknowledge an alert (recorded in the ledger).
    Ack {
        id: i64,
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhookAction {
    /// Add an endpoint for the tenant's alerts; prints its secret (`whsec_…`) once.
    Add {
        url: String,
        #[arg(long)]
        description: Option<String>,
        /// Only these event types (comma-separated, e.g. `alert.agent_budget,alert.overrun`).
        #[arg(long, value_delimiter = ',')]
        events: Option<Vec<String>>,
        /// Every tenant's alerts and the installation's (operator token).
        #[arg(long)]
        all_tenants: bool,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List endpoints.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Send a test delivery now and print how its first attempt went.
    Test { id: String },
    /// Delete an endpoint and its deliveries.
    Remove { id: String },
}

pub async fn run_alerts(cli: &Cli, action: &AlertsAction) -> anyhow::Result<()> {
    let client = AdminClient::from_settings(&super::settings(cli)?)?;
    match action {
        AlertsAction::List {
            open,
            kind,
            severity,
            agent,
            limit,
            tenant,
        } => {
            let q = client
                .tenant_query(tenant.as_deref())
                .await?
                .add("status", open.then_some("open"))
                .add("kind", kind.as_deref())
                .add("severity", severity.as_deref())
                .add("agent", agent.as_deref())
                .add("limit", *limit);
            let page = client.get(&["admin", "alerts"], &q).await?;
            emit(cli.json, &page, || human_alerts(&page));
        }
        AlertsAction::Ack { id, tenant } => {
            let q = client.tenant_query(tenant.as_deref()).await?;
            let a = client
                .post(&["admin", "alerts", &id.to_string(), "ack"], &q, &json!({}))
                .await?;
            emit(cli.json, &a, || {
                format!(
                    "alert {} acknowledged by {}",
                    text(&a, "id"),
                    text(&a, "acked_by")
                )
            });
        }
    }
    Ok(())
}

fn human_alerts(page: &Value) -> String {
    let s = &page["summary"];
    let mut lines = vec![
        format!(
            "{} alerts, {} open ({} critical, {} warning, {} info)",
            text(s, "total"),
            text(s, "open"),
            text(s, "critical"),
            text(s, "warning"),
            text(s, "info")
        ),
        format!(
            "{:<8} {:<9} {:<20} {:<27} {}",
            "ID", "SEVERITY", "KIND", "RAISED", "MESSAGE"
        ),
    ];
    for a in page["alerts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let acked = if a["acked_at"].is_null() {
            ""
        } else {
            " (acknowledged)"
        };
        lines.push(format!(
            "{:<8} {:<9} {:<20} {:<27} {}{acked}",
            text(a, "id"),
            text(a, "severity"),
            text(a, "kind"),
            text(a, "created_at"),
            text(a, "message")
        ));
    }
    lines.join("\n")
}

pub async fn run_webhook(cli: &Cli, action: &WebhookAction) -> anyhow::Result<()> {
    let client = AdminClient::from_settings(&super::settings(cli)?)?;
    match action {
        WebhookAction::Add {
            url,
            description,
            events,
            all_tenants,
            tenant,
        } => {
            let q = client.tenant_query(tenant.as_deref()).await?;
            let body = json!({"url": url, "description": description, "event_types": events,
                              "all_tenants": all_tenants});
            let w = client.post(&["admin", "webhooks"], &q, &body).await?;
            emit(cli.json, &w, || {
                format!(
                    "webhook {} added for {}\nsecret (shown once): {}",
                    text(&w["webhook"], "id"),
                    text(&w["webhook"], "url"),
                    text(&w, "secret")
                )
            });
        }
        WebhookAction::List { tenant } => {
            let q = client.tenant_query(tenant.as_deref()).await?;
            let list = client.get(&["admin", "webhooks"], &q).await?;
            let header = format!("{:<36} {:<8} {:<36} {}", "ID", "ENABLED", "TENANT", "URL");
            emit_list(cli.json, "webhooks", &list, &header, |w| {
                format!(
                    "{:<36} {:<8} {:<36} {}",
                    text(w, "id"),
                    text(w, "enabled"),
                    text(w, "tenant_id"),
                    text(w, "url")
                )
            });
        }
        WebhookAction::Test { id } => {
            let d = client
                .post(
                    &["admin", "webhooks", id, "test"],
                    &Query::new(),
                    &json!({}),
                )
                .await?;
            let first = &d["attempt_log"][0];
            if d["state"] != "delivered" {
                let why = match first.is_null() {
                    true => "no attempt yet".to_owned(),
                    false => text(first, "error"),
                };
                anyhow::bail!(
                    "the test delivery {} was not delivered: {why}",
                    text(&d, "id")
                );
            }
            emit(cli.json, &d, || {
                format!(
                    "test delivery {} delivered: HTTP {} in {} ms",
                    text(&d, "id"),
                    text(first, "status_code"),
                    text(first, "duration_ms")
                )
            });
        }
        WebhookAction::Remove { id } => {
            client
                .call(
                    Method::DELETE,
                    &["admin", "webhooks", id],
                    &Query::new(),
                    None,
                )
                .await?;
            emit(cli.json, &json!({"deleted": id}), || {
                format!("webhook {id} removed")
            });
        }
    }
    Ok(())
}
