//! `aex dev …`: the mock upstream, and the ledger seeding and append benchmark that
//! `bench/ledger.sh` drives (hidden: they write to the configured database).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{db_checks, emit, Cli, DevAction};
use crate::dev::{append_bench, ledger_seed, mock_upstream};

pub async fn run(cli: &Cli, action: &DevAction) -> anyhow::Result<()> {
    match action {
        DevAction::MockUpstream {
            listen,
            delay_ms,
            chunks,
            chunk_delay_ms,
            bill_max,
        } => {
            let control = Arc::new(mock_upstream::MockControl::default());
            // Nothing outside this process can read recorded requests: do not keep them.
            control.record.store(false, Ordering::SeqCst);
            control.delay_ms.store(*delay_ms, Ordering::SeqCst);
            control.chunks.store(*chunks, Ordering::SeqCst);
            control.bill_max.store(*bill_max, Ordering::SeqCst);
            control
                .chunk_delay_ms
                .store(*chunk_delay_ms, Ordering::SeqCst);
            let addr = mock_upstream::spawn(*listen, control).await?;
            println!("{addr}");
            tokio::signal::ctrl_c().await?;
            Ok(())
        }
        DevAction::SeedLedger { events, chains } => {
            let pool = db_checks::pool(cli).await?;
            let report = ledger_seed::seed(&pool, *events, *chains).await?;
            emit(cli.json, &serde_json::to_value(&report)?, || {
                format!(
                    "seeded {} events over {} chains in {} ms ({} events/s)",
                    report.events, report.chains, report.elapsed_ms, report.events_per_second
                )
            });
            Ok(())
        }
        DevAction::BenchAppend {
            appenders,
            chains,
            events,
        } => {
            let pool = db_checks::pool(cli).await?;
            let report = append_bench::bench(&pool, *appenders, *chains, *events).await?;
            emit(cli.json, &serde_json::to_value(&report)?, || {
                format!(
                    "{} appenders on {} chains: {} events in {} ms ({} events/s)",
                    report.appenders,
                    report.chains,
                    report.events,
                    report.elapsed_ms,
                    report.events_per_second
                )
            });
            Ok(())
        }
    }
}
