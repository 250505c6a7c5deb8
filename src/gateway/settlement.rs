//! Exactly-once settlement (SPEC §5.3). One transaction per outcome: compare-and-set the
//! reservation out of RESERVED (a second attempt finds no row and changes nothing), move the
//! money on the tenant and agent counters, finish the execution with its cached result, append
//! the ledger event and the projection.

use std::time::Duration;

use serde_json::json;
use sqlx::PgConnection;

use super::admission::Reservation;
use super::error::is_unavailable;
use super::rate_limit;
use super::Gateway;
use crate::config::ModelRoute;
use crate::domain::ExecutionState;
use crate::ledger::fold::types;
use crate::ledger::{self, NewEvent};
use crate::money::MicroUsd;
use crate::providers::Usage;
use crate::store::executions::{self, Settled};
use crate::store::{agents, projection, rate_windows, reservations, tenants};

/// How an execution is priced at commit.
#[derive(Debug, Clone, Copy)]
pub enum Priced<'a> {
    /// By tokens, at a model's prices.
    Tokens(&'a ModelRoute),
    /// A fixed price (a tool plugin's declared cost), named by `label`.
    Fixed { label: &'a str, cost: MicroUsd },
}

impl Priced<'_> {
    fn cost(&self, usage: Usage) -> i64 {
        match self {
            Priced::Tokens(model) => {
                model
                    .input_price
                    .cost(usage.prompt_tokens)
                    .saturating_add(model.output_price.cost(usage.completion_tokens))
                    .0
            }
            Priced::Fixed { cost, .. } => cost.0,
        }
    }

    fn label(&self) -> &str {
        match self {
            Priced::Tokens(model) => &model.alias,
            Priced::Fixed { label, .. } => label,
        }
    }
}

/// Whether usage came from the provider or was counted by AEX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageSource {
    Reported,
    Estimated,
}

impl UsageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Reported => "reported",
            UsageSource::Estimated => "estimated",
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The provider did work: charge it.
    Commit {
        usage: Usage,
        source: UsageSource,
        provider: String,
        /// The result to cache for replay: status, body, whether it is an SSE transcript.
        result: Option<(u16, Vec<u8>, bool)>,
        latency_ms: i64,
        /// For a stream: how it ended and how many events were relayed.
        stream: Option<(&'static str, u64)>,
    },
    /// Nothing billable happened: give the hold back.
    Release {
        reason: String,
        /// `Released` for provider errors and timeouts, `Failed` when the outcome is unknown.
        state: ExecutionState,
        upstream_status: Option<u16>,
    },
}

/// What settlement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleResult {
    Committed {
        actual_micro_usd: i64,
        remaining_micro_usd: i64,
    },
    Released {
        remaining_micro_usd: i64,
    },
    /// The reservation was settled before (by an earlier attempt or the reconciler).
    AlreadySettled,
}

/// Settles, retrying for as long as the database is unreachable: the money is real and must be
/// booked, and while this replica lives nobody else will book it (the reconciler only settles
/// the executions of lost replicas). Only a shutdown past its drain timeout stops the retries;
/// the replica then deregisters and another one reconciles. The compare-and-set makes a retry
/// after an unacknowledged commit harmless.
pub async fn settle(
    gw: &Gateway,
    r: &Reservation,
    priced: Priced<'_>,
    outcome: &Outcome,
) -> Result<SettleResult, sqlx::Error> {
    let started = std::time::Instant::now();
    let result = settle_retrying(gw, r, priced, outcome).await;
    crate::telemetry::record_ms("settlement_ms", started);
    crate::telemetry::record_outcome(match outcome {
        Outcome::Commit { .. } => "committed",
        Outcome::Release { reason, .. } => reason,
    });
    result
}

async fn settle_retrying(
    gw: &Gateway,
    r: &Reservation,
    priced: Priced<'_>,
    outcome: &Outcome,
) -> Result<SettleResult, sqlx::Error> {
    let mut delay = Duration::from_millis(50);
    loop {
        match settle_once(gw, r, priced, outcome).await {
            Err(e) if is_unavailable(&e) && !gw.drain_expired.is_cancelled() => {
                tracing::warn!(execution_id = %r.execution_key, error = %e, "settlement retrying: database unavailable");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = gw.drain_expired.cancelled() => {}
                }
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

async fn settle_once(
    gw: &Gateway,
    r: &Reservation,
    priced: Priced<'_>,
    outcome: &Outcome,
) -> Result<SettleResult, sqlx::Error> {
    let mut tx = gw.pool.begin().await?;
    let result = match outcome {
        Outcome::Commit {
            usage,
            source,
            provider,
            result,
            latency_ms,
            stream,
        } => {
            let facts = CommitFacts {
                usage: *usage,
                source: *source,
                provider,
                latency_ms: *latency_ms,
                stream: *stream,
            };
            commit(&mut tx, r, priced, &facts, result.as_ref()).await?
        }
        Outcome::Release {
            reason,
            state,
            upstream_status,
        } => release(&mut tx, r, reason, *state, *upstream_status).await?,
    };
    match result {
        SettleResult::AlreadySettled => tx.rollback().await?,
        _ => tx.commit().await?,
    }
    Ok(result)
}

/// What a commit records besides the result.
struct CommitFacts<'a> {
    usage: Usage,
    source: UsageSource,
    provider: &'a str,
    latency_ms: i64,
    stream: Option<(&'static str, u64)>,
}

async fn commit(
    conn: &mut PgConnection,
    r: &Reservation,
    priced: Priced<'_>,
    facts: &CommitFacts<'_>,
    result: Option<&(u16, Vec<u8>, bool)>,
) -> Result<SettleResult, sqlx::Error> {
    let (usage, source, provider, latency_ms) =
        (facts.usage, facts.source, facts.provider, facts.latency_ms);
    let actual = priced.cost(usage);
    let Some(held) =
        reservations::settle_reservation(conn, r.execution_id, r.attempt, Some(actual), None)
            .await?
    else {
        return Ok(SettleResult::AlreadySettled);
    };
    let prompt = i64::try_from(usage.prompt_tokens).unwrap_or(i64::MAX);
    let completion = i64::try_from(usage.completion_tokens).unwrap_or(i64::MAX);
    if held.holds_tenant {
        tenants::add_to_books(conn, r.tenant_id, -held.estimate_micro_usd, actual).await?;
    }
    let remaining = agents::settle(
        conn,
        r.agent_id,
        held.estimate_micro_usd,
        actual,
        prompt,
        completion,
    )
    .await?;
    correct_rate_windows(conn, r, &held, prompt.saturating_add(completion)).await?;
    executions::mark_settled(
        conn,
        r.execution_id,
        &Settled {
            state: ExecutionState::Committed.as_str(),
            actual_micro_usd: Some(actual),
            prompt_tokens: Some(prompt),
            completion_tokens: Some(completion),
            usage_source: Some(source.as_str()),
            reason: None,
            result: result.map(|(status, body, is_stream)| (*status, body.as_slice(), *is_stream)),
        },
    )
    .await?;
    // The real money was spent: an overrun is recorded and flagged, never dropped.
    let overrun = (actual - held.estimate_micro_usd).max(0);
    ledger::append(
        conn,
        NewEvent::for_agent(
            r.tenant_id,
            r.agent_id,
            types::COMMITTED,
            Some(&r.execution_key),
            json!({
                "attempt": r.attempt,
                "model": priced.label(),
                "provider": provider,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "usage": source.as_str(),
                "estimate_micro_usd": held.estimate_micro_usd,
                "actual_micro_usd": actual,
                "overrun_micro_usd": overrun,
                "budget_overrun": remaining < 0,
                "holds_tenant": held.holds_tenant,
                "stream_end": facts.stream.map(|s| s.0),
                "stream_events": facts.stream.map(|s| s.1),
            }),
        ),
    )
    .await?;
    projection::record(
        conn,
        &projection::Fact {
            tenant_id: Some(r.tenant_id),
            agent_id: Some(r.agent_id),
            execution_id: Some(&r.execution_key),
            kind: "usage.commit",
            model_alias: Some(priced.label()),
            cost_micro_usd: Some(actual),
            prompt_tokens: Some(prompt),
            completion_tokens: Some(completion),
            latency_ms: Some(latency_ms),
            ..projection::Fact::default()
        },
    )
    .await?;
    crate::metrics::settled("committed", actual, overrun > 0);
    Ok(SettleResult::Committed {
        actual_micro_usd: actual,
        remaining_micro_usd: remaining,
    })
}

async fn release(
    conn: &mut PgConnection,
    r: &Reservation,
    reason: &str,
    state: ExecutionState,
    upstream_status: Option<u16>,
) -> Result<SettleResult, sqlx::Error> {
    let Some(held) =
        reservations::settle_reservation(conn, r.execution_id, r.attempt, None, Some(reason))
            .await?
    else {
        return Ok(SettleResult::AlreadySettled);
    };
    if held.holds_tenant {
        tenants::add_to_books(conn, r.tenant_id, -held.estimate_micro_usd, 0).await?;
    }
    let remaining = agents::settle(conn, r.agent_id, held.estimate_micro_usd, 0, 0, 0).await?;
    correct_rate_windows(conn, r, &held, 0).await?;
    executions::mark_settled(
        conn,
        r.execution_id,
        &Settled {
            state: state.as_str(),
            actual_micro_usd: None,
            prompt_tokens: None,
            completion_tokens: None,
            usage_source: None,
            reason: Some(reason),
            result: None,
        },
    )
    .await?;
    ledger::append(
        conn,
        NewEvent::for_agent(
            r.tenant_id,
            r.agent_id,
            types::RELEASED,
            Some(&r.execution_key),
            json!({
                "attempt": r.attempt,
                "estimate_micro_usd": held.estimate_micro_usd,
                "reason": reason,
                "execution_state": state.as_str(),
                "upstream_status": upstream_status,
                "holds_tenant": held.holds_tenant,
            }),
        ),
    )
    .await?;
    projection::record(
        conn,
        &projection::Fact {
            tenant_id: Some(r.tenant_id),
            agent_id: Some(r.agent_id),
            execution_id: Some(&r.execution_key),
            kind: "reservation.released",
            reason: Some(reason),
            model_alias: Some(&r.model_alias),
            ..projection::Fact::default()
        },
    )
    .await?;
    crate::metrics::settled("released", 0, false);
    Ok(SettleResult::Released {
        remaining_micro_usd: remaining,
    })
}

/// TPM windows were charged the estimate at admission; now the actual tokens are known.
async fn correct_rate_windows(
    conn: &mut PgConnection,
    r: &Reservation,
    held: &reservations::SettledHold,
    actual_tokens: i64,
) -> Result<(), sqlx::Error> {
    if held.rate_tokens == 0 {
        return Ok(());
    }
    let delta = actual_tokens - held.rate_tokens;
    for subject in [
        rate_limit::agent_subject(r.agent_id),
        rate_limit::tenant_subject(r.tenant_id),
    ] {
        rate_windows::correct_tokens(conn, &subject, held.created_at, delta).await?;
    }
    Ok(())
}
