//! `aex ledger verify|events`, through the admin API (`verify --local` reads the database
//! directly, for when no server runs).

use clap::Subcommand;

use super::client::AdminClient;
use super::{emit_list, text, Cli};

#[derive(Debug, Subcommand)]
pub enum LedgerAction {
    /// Walk every chain, recompute every hash, check the latest checkpoint, name the first bad
    /// event.
    Verify {
        /// Read the database directly (database_url) instead of asking the server.
        #[arg(long)]
        local: bool,
        /// Also prove that this archived head (the output of `aex ledger checkpoint --json`) is
        /// still in the chains; reads the database directly.
        #[arg(long, value_name = "FILE")]
        head: Option<std::path::PathBuf>,
    },
    /// Write a signed checkpoint of every chain's head now; `--json` prints the latest signed
    /// head, to archive outside the database.
    Checkpoint {
        /// Write it directly in the database (database_url) instead of asking the server.
        #[arg(long)]
        local: bool,
    },
    /// Write every event as JSON lines, re-verifiable with deploy/verify-ledger-export.py (reads
    /// the database directly).
    Export {
        /// File to write (default: standard output).
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
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

fn client(cli: &Cli) -> anyhow::Result<AdminClient> {
    AdminClient::from_settings(&super::settings(cli)?)
}

pub async fn run(cli: &Cli, action: &LedgerAction) -> anyhow::Result<()> {
    match action {
        LedgerAction::Verify {
            head: Some(file), ..
        } => super::db_checks::ledger_verify_head(cli, file).await,
        LedgerAction::Verify { local: true, .. } => super::db_checks::ledger_verify(cli).await,
        LedgerAction::Checkpoint { local: true } => super::db_checks::ledger_checkpoint(cli).await,
        LedgerAction::Checkpoint { local: false } => {
            let client = client(cli)?;
            let path = ["admin", "ledger", "checkpoints"];
            let written = client
                .post(&path, &Default::default(), &serde_json::json!(null))
                .await?;
            let latest = ["admin", "ledger", "checkpoints", "latest"];
            let head = client.get(&latest, &Default::default()).await?;
            super::db_checks::print_checkpoint(cli.json, written["checkpoint_id"].as_i64(), &head);
            Ok(())
        }
        LedgerAction::Export { output } => {
            super::db_checks::ledger_export(cli, output.as_deref()).await
        }
        LedgerAction::Verify { local: false, .. } => {
            let path = ["admin", "ledger", "verify"];
            let report = client(cli)?.get(&path, &Default::default()).await?;
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
            let client = client(cli)?;
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
                let (id, kind, ts) = (text(e, "id"), text(e, "event_type"), text(e, "ts"));
                format!("{id:>8} {kind:<32} {ts:<26} {}", e["payload"])
            });
            Ok(())
        }
    }
}
