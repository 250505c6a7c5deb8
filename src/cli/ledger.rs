//! `aex ledger verify|events`, through the admin API (`verify --local` reads the database
//! directly, for when no server runs).

use clap::Subcommand;

use super::client::AdminClient;
use super::{emit_list, text, Cli};

#[derive(Debug, Subcommand)]
pub enum LedgerAction {
    /// Walk every chain, recompute every hash and name the first bad event.
    Verify {
        /// Read the database directly (database_url) instead of asking the server.
        #[arg(long)]
        local: bool,
    },
    /// List ledger events in append order.
    Events {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        /// Only this execution key.
        #[arg(long)]
        execution: Option<String>,
        /// Only events of this type, e.g. usage.commit.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// The next page: events after this id.
        #[arg(long)]
        after_id: Option<i64>,
        #[arg(long)]
        limit: Option<i64>,
    },
}

pub async fn run(cli: &Cli, action: &LedgerAction) -> anyhow::Result<()> {
    if let LedgerAction::Verify { local: true } = action {
        return super::db_checks::ledger_verify(cli).await;
    }
    let settings = super::settings(cli)?;
    let client = AdminClient::from_settings(&settings)?;
    match action {
        LedgerAction::Verify { .. } => {
            let report = client
                .get(&["admin", "ledger", "verify"], &Default::default())
                .await?;
            super::db_checks::print_verify(cli.json, &report)
        }
        LedgerAction::Events {
            tenant,
            agent,
            execution,
            event_type,
            after_id,
            limit,
        } => {
            let q = client
                .tenant_query(tenant.as_deref())
                .await?
                .add("agent", agent.as_ref())
                .add("execution_id", execution.as_ref())
                .add("event_type", event_type.as_ref())
                .add("after_id", *after_id)
                .add("limit", *limit);
            let list = client.get(&["admin", "ledger", "events"], &q).await?;
            let header = format!("{:>8} {:<32} {:<26} {}", "ID", "TYPE", "TS", "PAYLOAD");
            emit_list(cli.json, "events", &list, &header, |e| {
                format!(
                    "{:>8} {:<32} {:<26} {}",
                    text(e, "id"),
                    text(e, "event_type"),
                    text(e, "ts"),
                    e["payload"]
                )
            });
            Ok(())
        }
    }
}
