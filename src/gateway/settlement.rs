//! Exactly-once settlement (SPEC §5.3). One transaction per outcome, in one round trip (the
//! `aex_settle` function, `store::settlements`): compare-and-set the reservation out of RESERVED
//! (a second attempt finds no row and changes nothing), move the money on the tenant and agent
//! counters, correct the TPM windows, finish the execution with its cached result, append the
//! ledger event and the projection. This module decides what is written: the cost, the state,
//! the payload.

use std::time::Duration;

use serde_json::json;

use super::admission::Reservation;
use super::error::is_unavailable;
use super::rate_limit;
use super::Gateway;
use crate::config::ModelRoute;
use crate::domain::ExecutionState;
use crate::ledger::fold::types;
use crate::ledger::{self, ChainId};
use crate::money::MicroUsd;
use crate::providers::Usage;
use crate::store::settlements::{self, Charge, Settlement};

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
        /// The answer the caller gets (status, body, whether SSE), kept for the requests that
        /// waited for this attempt; `None` when no caller is answered (the reconciler).
        result: Option<(u16, Vec<u8>, bool)>,
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
    let (state, reason, charge, result, event_type, payload, model_alias) = match outcome {
        Outcome::Commit {
            usage,
            source,
            provider,
            result,
            latency_ms,
            stream,
        } => {
            let actual = priced.cost(*usage);
            let charge = Charge {
                actual_micro_usd: actual,
                prompt_tokens: i64::try_from(usage.prompt_tokens).unwrap_or(i64::MAX),
                completion_tokens: i64::try_from(usage.completion_tokens).unwrap_or(i64::MAX),
                usage_source: source.as_str(),
                latency_ms: *latency_ms,
            };
            let payload = json!({
                "attempt": r.attempt,
                "model": priced.label(),
                "provider": provider,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "usage": source.as_str(),
                "actual_micro_usd": actual,
                "stream_end": stream.map(|s| s.0),
                "stream_events": stream.map(|s| s.1),
            });
            let state = ExecutionState::Committed.as_str();
            (
                state,
                None,
                Some(charge),
                result,
                types::COMMITTED,
                payload,
                priced.label(),
            )
        }
        Outcome::Release {
            reason,
            state,
            upstream_status,
            result,
        } => {
            let payload = json!({
                "attempt": r.attempt,
                "reason": reason,
                "execution_state": state.as_str(),
                "upstream_status": upstream_status,
            });
            let reason = Some(reason.as_str());
            (
                state.as_str(),
                reason,
                None,
                result,
                types::RELEASED,
                payload,
                r.model_alias.as_str(),
            )
        }
    };
    let actual = charge.as_ref().map(|c| c.actual_micro_usd);
    let chain_id = ChainId::Agent(r.agent_id).to_string();
    let s = Settlement {
        execution_id: r.execution_id,
        attempt: r.attempt,
        tenant_id: r.tenant_id,
        agent_id: r.agent_id,
        execution_key: &r.execution_key,
        chain_id: &chain_id,
        chain_lock_key: ledger::chain_lock_key(&chain_id),
        state,
        reason,
        charge,
        result: result
            .as_ref()
            .map(|(st, body, sse)| (*st, body.as_slice(), *sse)),
        event_type,
        payload,
        model_alias,
        rate_subjects: [
            rate_limit::agent_subject(r.agent_id),
            rate_limit::tenant_subject(r.tenant_id),
        ],
    };
    let _slot = gw.agent_gates.enter(r.agent_id).await;
    let mut conn = gw.pool.acquire().await?;
    let Some(held) = settlements::settle(&mut conn, &s).await? else {
        return Ok(SettleResult::AlreadySettled);
    };
    Ok(match actual {
        Some(actual) => {
            crate::metrics::settled("committed", actual, actual > held.estimate_micro_usd);
            SettleResult::Committed {
                actual_micro_usd: actual,
                remaining_micro_usd: held.remaining_micro_usd,
            }
        }
        None => {
            crate::metrics::settled("released", 0, false);
            SettleResult::Released {
                remaining_micro_usd: held.remaining_micro_usd,
            }
        }
    })
}
