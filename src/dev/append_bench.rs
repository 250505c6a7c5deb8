//! `aex dev bench-append`: append throughput through the real append path — one transaction
//! per event, the chain's advisory lock, the tail read, the insert, the commit — with concurrent
//! appenders spread over a number of new chains. One chain is one busy tenant with one agent
//! (every append waits for the one before); as many chains as appenders is a busy tenant with
//! many agents, which is how money events are partitioned.

use std::time::Instant;

use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{AgentId, TenantId};
use crate::ledger::{self, NewEvent};

#[derive(Debug, Serialize)]
pub struct AppendReport {
    pub appenders: usize,
    pub chains: usize,
    pub events: u64,
    pub elapsed_ms: u64,
    pub events_per_second: u64,
}

async fn append_one(pool: &PgPool, tenant: TenantId, agent: AgentId) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    ledger::append(
        &mut tx,
        NewEvent::for_agent(
            tenant,
            agent,
            "bench.append",
            None,
            json!({"bench": true, "actual_micro_usd": 1_234}),
        ),
    )
    .await?;
    tx.commit().await
}

/// Appends `events` events from `appenders` concurrent tasks; task `i` writes to chain
/// `i % chains`.
pub async fn bench(
    pool: &PgPool,
    appenders: usize,
    chains: usize,
    events: u64,
) -> Result<AppendReport, sqlx::Error> {
    let appenders = appenders.max(1);
    let tenant = TenantId(Uuid::new_v4());
    let agents: Vec<AgentId> = (0..chains.max(1))
        .map(|_| AgentId(Uuid::new_v4()))
        .collect();
    let per_task = events / appenders as u64;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..appenders {
        let (pool, agent) = (pool.clone(), agents[i % agents.len()]);
        tasks.spawn(async move {
            for _ in 0..per_task {
                append_one(&pool, tenant, agent).await?;
            }
            Ok::<(), sqlx::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| sqlx::Error::Protocol(format!("an appender panicked: {e}")))??;
    }
    let elapsed = started.elapsed();
    let events = per_task * appenders as u64;
    Ok(AppendReport {
        appenders,
        chains: agents.len(),
        events,
        elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        events_per_second: (events as f64 / elapsed.as_secs_f64().max(1e-9)) as u64,
    })
}
