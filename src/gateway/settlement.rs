//! Exactly-once settlement (SPEC §5.3). One transaction per outcome, in one round trip (the
//! `aex_settle` function, `store::settlements`): compare-and-set the reservation out of RESERVED
//! (a second attempt finds no row and changes nothing), move the money on the tenant and agent
//! counters, correct the TPM windows, finish the execution with its cached result, append the
//! ledger event and the projection. This module decides what is written: the cost, the state,
//! the payload.

use std::time::Duration;

use serde_json::json;

use super::call_types::{Hold, SETTLEMENT_FAILED};
use super::error::is_unavailable;
use super::rate_limit;
use super::Books;
use crate::config::{InputTokens, ModelRoute};
use crate::domain::ExecutionState;
use crate::ledger::fold::types;
use crate::ledger::{self, ChainId};
use crate::money::MicroUsd;
use crate::providers::Usage;
use crate::store::executions::ExecutionRow;
use crate::store::settlements::{self, Charge, Settlement};

/// The most one settlement charges: 10^15 micro-USD (one billion USD). A cost above it (an absurd
/// reported usage, such as 10^18 tokens) is charged at this ceiling and flagged `cost_saturated`
/// in the ledger event: the books stay far from the `bigint` range, so no sum over them can
/// overflow, and the settlement still ends (`aex_settle` also saturates every counter).
pub const MAX_CHARGE_MICRO_USD: i64 = 1_000_000_000_000_000;

/// How an execution is priced at commit.
#[derive(Debug, Clone, Copy)]
pub enum Priced<'a> {
    /// By tokens, at a model's prices.
    Tokens(&'a ModelRoute),
    /// A fixed price (a tool plugin's declared cost), named by `label`.
    Fixed { label: &'a str, cost: MicroUsd },
    /// Units other than tokens (images, seconds of audio, characters), costed by the route.
    Metered(Metered<'a>),
}

/// What a media call bills: `units` of `unit` (at most `units_bound` were held; more that the
/// provider reported is its overrun), costing `cost`, at the price entry `price` when the unit
/// has several.
#[derive(Debug, Clone, Copy)]
pub struct Metered<'a> {
    pub label: &'a str,
    pub unit: &'static str,
    pub units: u64,
    pub units_bound: u64,
    pub price: Option<&'a str>,
    pub cost: MicroUsd,
}

impl<'a> Priced<'a> {
    /// The cost of `usage`, at most [`MAX_CHARGE_MICRO_USD`], and whether it was cut to it.
    fn cost(&self, usage: Usage) -> (i64, bool) {
        let exact = match self {
            Priced::Tokens(model) => {
                let fees: i128 = usage
                    .hosted_calls
                    .iter()
                    .map(|(tool, calls)| {
                        i128::from(model.hosted_tool_fee(tool).0) * i128::from(calls)
                    })
                    .sum();
                i128::from(model.input_cost(input_tokens(usage)).0)
                    + i128::from(model.output_price.cost(usage.completion_tokens).0)
                    + fees
            }
            Priced::Fixed { cost, .. } => i128::from(cost.0),
            Priced::Metered(m) => i128::from(m.cost.0),
        };
        match i64::try_from(exact) {
            Ok(cost) if cost <= MAX_CHARGE_MICRO_USD => (cost, false),
            _ => (MAX_CHARGE_MICRO_USD, true),
        }
    }

    fn label(self) -> &'a str {
        match self {
            Priced::Tokens(model) => &model.alias,
            Priced::Fixed { label, .. } => label,
            Priced::Metered(m) => m.label,
        }
    }
}

fn input_tokens(usage: Usage) -> InputTokens {
    InputTokens {
        prompt: usage.prompt_tokens,
        cached: usage.cached_tokens,
        cache_write: usage.cache_write_tokens,
    }
}

/// The units a commit bills, each at its own price, as flat `billed_*` fields of the ledger
/// event (`aex_settle` writes flat payloads): input tokens at the input price, cached input and
/// cache writes at theirs, output tokens, and `billed_<tool>_calls` for each hosted tool called.
fn billed_units(usage: Usage) -> serde_json::Map<String, serde_json::Value> {
    let (input, cached, cache_write) = input_tokens(usage).split();
    let mut units = serde_json::Map::new();
    for (unit, n) in [
        ("input_tokens", input),
        ("cached_input_tokens", cached),
        ("cache_write_tokens", cache_write),
        ("output_tokens", usage.completion_tokens),
    ] {
        units.insert(format!("billed_{unit}"), json!(n));
    }
    for (tool, n) in usage.hosted_calls.iter() {
        units.insert(format!("billed_{tool}_calls"), json!(n));
    }
    units
}

/// Where the usage of a commit comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageSource {
    /// Reported by the provider.
    Reported,
    /// Counted by AEX (capped at the caps it sent).
    Estimated,
    /// Unknown: the provider may have done the whole work (a timeout or a lost connection after
    /// the request was sent), so the hold is charged.
    Ambiguous,
}

impl UsageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Reported => "reported",
            UsageSource::Estimated => "estimated",
            UsageSource::Ambiguous => "ambiguous",
        }
    }
}

/// Whose an excess over the hold is: the provider's when it reported usage beyond the caps AEX
/// sent (the one excess SPEC §15 invariant 6 allows), else AEX's own (a pricing or counting bug,
/// which the audit fails on).
fn overrun_kind(
    source: UsageSource,
    usage: Usage,
    prompt_estimate: u64,
    completion_cap: Option<u64>,
    hosted_calls_bound: Option<u64>,
) -> &'static str {
    let beyond_caps = usage.prompt_tokens > prompt_estimate
        || completion_cap.is_some_and(|cap| usage.completion_tokens > cap)
        || usage.hosted_calls.total() > hosted_calls_bound.unwrap_or(0);
    if source == UsageSource::Reported && beyond_caps {
        "provider"
    } else {
        "aex"
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
        /// The completion tokens the caps sent allow (cap × choices); `None` without an output.
        completion_cap: Option<u64>,
        /// The prompt tokens the hold was estimated at: usage beyond it (or beyond
        /// `completion_cap`) that the provider reported is the provider's overrun.
        prompt_bound: u64,
        /// The hosted-tool calls the hold covers (`max_tool_calls` sent); more reported calls
        /// are the provider's overrun.
        hosted_calls_bound: Option<u64>,
    },
    /// The provider may have done billable work, or not: the hold is charged (`usage:
    /// ambiguous`) and the execution ends FAILED with `reason`, so the key may be tried again.
    Ambiguous {
        reason: String,
        provider: String,
        latency_ms: i64,
        stream: Option<(&'static str, u64)>,
        /// The answer the caller got (status, body, whether SSE), kept for the requests that
        /// waited for this attempt.
        result: Option<(u16, Vec<u8>, bool)>,
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
    /// Charged (a commit, or an ambiguous outcome charged at the hold).
    Committed {
        actual_micro_usd: i64,
        remaining_micro_usd: i64,
    },
    Released {
        remaining_micro_usd: i64,
    },
    /// The reservation was settled before (by an earlier attempt or the reconciler).
    AlreadySettled,
    /// Nothing could be written, not even the fallback (logged); only a shutdown past its drain
    /// timeout or a broken database gets here, and the reconciler settles it once this replica
    /// is gone.
    Unsettled,
}

/// Settles an attempt this replica dispatched, and makes sure it ends: when the outcome's
/// settlement cannot be written (after its retries), a simpler one is written instead (no cached
/// answer, no usage) — for a charge, the hold is committed (`usage: ambiguous`), for a release
/// the hold is given back — with the execution FAILED and reason `settlement_failed`, and the
/// answer still carries what was charged. Never an execution left DISPATCHED with money reserved while its replica lives.
pub async fn finish(
    books: &Books,
    hold: Hold,
    priced: Priced<'_>,
    outcome: &Outcome,
) -> SettleResult {
    let r = &hold;
    let id = r.execution_key.as_str();
    let e = match settle(books, r, priced, outcome).await {
        Ok(done) => return done,
        Err(e) => e,
    };
    tracing::error!(execution_id = id, error = %e, "settlement failed after retries; writing the fallback");
    let reason = SETTLEMENT_FAILED.to_owned();
    let fallback = match outcome {
        Outcome::Commit {
            provider,
            latency_ms,
            stream,
            ..
        }
        | Outcome::Ambiguous {
            provider,
            latency_ms,
            stream,
            ..
        } => Outcome::Ambiguous {
            reason,
            provider: provider.clone(),
            latency_ms: *latency_ms,
            stream: *stream,
            result: None,
        },
        Outcome::Release { .. } => Outcome::Release {
            reason,
            result: None,
            state: ExecutionState::Failed,
            upstream_status: None,
        },
    };
    match settle(books, r, priced, &fallback).await {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(execution_id = id, error = %e, "the fallback settlement failed too");
            SettleResult::Unsettled
        }
    }
}

/// Settles, retrying for as long as the database is unreachable: the money is real and must be
/// booked, and while this replica lives nobody else will book it (the reconciler only settles
/// the executions of lost replicas). Only a shutdown past its drain timeout stops the retries;
/// the replica then deregisters and another one reconciles. The compare-and-set makes a retry
/// after an unacknowledged commit harmless.
async fn settle(
    books: &Books,
    r: &Hold,
    priced: Priced<'_>,
    outcome: &Outcome,
) -> Result<SettleResult, sqlx::Error> {
    let started = std::time::Instant::now();
    let result = settle_retrying(books, r, priced, outcome).await;
    crate::telemetry::record_ms("settlement_ms", started);
    crate::telemetry::record_outcome(match outcome {
        Outcome::Commit { .. } => "committed",
        Outcome::Ambiguous { reason, .. } | Outcome::Release { reason, .. } => reason,
    });
    result
}

/// Releases the hold of an execution whose replica was lost (the reconciler's entry point),
/// from what its row records; `state` and `reason` say why. Nobody was answered: a request that
/// waited for this attempt answers from the reason. A release prices nothing, so it needs no
/// route for the model. [`SettleResult::AlreadySettled`] when the row holds nothing.
pub async fn release_orphan(
    books: &Books,
    e: &ExecutionRow,
    state: ExecutionState,
    reason: &str,
) -> Result<SettleResult, sqlx::Error> {
    let hold = Hold {
        execution_id: e.id,
        execution_key: e.execution_key.clone(),
        attempt: e.attempt,
        tenant_id: e.tenant_id,
        agent_id: e.agent_id,
        model_alias: e.model_alias.clone().unwrap_or_default(),
        held: MicroUsd(e.estimate_micro_usd),
    };
    let outcome = Outcome::Release {
        reason: reason.to_owned(),
        state,
        upstream_status: None,
        result: None,
    };
    let priced = Priced::Fixed {
        label: &hold.model_alias,
        cost: MicroUsd::ZERO,
    };
    settle(books, &hold, priced, &outcome).await
}

/// Attempts for an error other than an unreachable database (a deadlock, a serialization
/// failure), before the caller falls back.
const OTHER_ERROR_ATTEMPTS: u32 = 3;

async fn settle_retrying(
    books: &Books,
    r: &Hold,
    priced: Priced<'_>,
    outcome: &Outcome,
) -> Result<SettleResult, sqlx::Error> {
    let mut delay = Duration::from_millis(50);
    let mut other_errors = 0;
    loop {
        let e = match settle_once(books, r, priced, outcome).await {
            Ok(done) => return Ok(done),
            Err(e) => e,
        };
        if books.drain_expired.is_cancelled() {
            return Err(e);
        }
        if is_unavailable(&e) {
            tracing::warn!(execution_id = %r.execution_key, error = %e, "settlement retrying: database unavailable");
        } else {
            other_errors += 1;
            if other_errors >= OTHER_ERROR_ATTEMPTS {
                return Err(e);
            }
            tracing::warn!(execution_id = %r.execution_key, error = %e, "settlement retrying");
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = books.drain_expired.cancelled() => {}
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// What one outcome writes, before the facts common to every settlement are added.
struct Written<'a> {
    state: &'static str,
    reason: Option<&'a str>,
    charge: Option<Charge<'a>>,
    /// The answer cached on the execution: status, body, whether it is an SSE transcript.
    answer: Option<(u16, &'a [u8], bool)>,
    event_type: &'static str,
    payload: serde_json::Value,
    model_alias: &'a str,
    /// For the metrics: the result label and whether the cost went over the hold.
    label: &'static str,
    over_hold: bool,
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn borrowed(answer: &Option<(u16, Vec<u8>, bool)>) -> Option<(u16, &[u8], bool)> {
    answer
        .as_ref()
        .map(|(status, body, sse)| (*status, body.as_slice(), *sse))
}

fn written<'a>(r: &'a Hold, priced: Priced<'a>, outcome: &'a Outcome) -> Written<'a> {
    let hold = r.held.0;
    match outcome {
        Outcome::Commit {
            usage,
            source,
            provider,
            result,
            latency_ms,
            stream,
            completion_cap,
            prompt_bound,
            hosted_calls_bound,
        } => {
            let (actual, saturated) = priced.cost(*usage);
            let overrun = (actual > hold).then(|| match priced {
                // More units than held, as the provider reported them, is the provider's.
                Priced::Metered(m)
                    if *source == UsageSource::Reported && m.units > m.units_bound =>
                {
                    "provider"
                }
                _ => {
                    let caps = (*prompt_bound, *completion_cap, *hosted_calls_bound);
                    overrun_kind(*source, *usage, caps.0, caps.1, caps.2)
                }
            });
            let charge = Charge {
                actual_micro_usd: actual,
                prompt_tokens: Some(to_i64(usage.prompt_tokens)),
                completion_tokens: Some(to_i64(usage.completion_tokens)),
                usage_source: source.as_str(),
                latency_ms: *latency_ms,
            };
            let mut payload = json!({
                "attempt": r.attempt,
                "model": priced.label(),
                "provider": provider,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "completion_cap": completion_cap,
                "cached_tokens": usage.cached_tokens,
                "cache_write_tokens": usage.cache_write_tokens,
                "hosted_tool_calls": usage.hosted_calls.total(),
                "hosted_tool_calls_bound": hosted_calls_bound,
                "usage": source.as_str(),
                "actual_micro_usd": actual,
                "overrun": overrun,
                "cost_saturated": saturated,
                "stream_end": stream.map(|s| s.0),
                "stream_events": stream.map(|s| s.1),
            });
            match (payload.as_object_mut(), priced) {
                (Some(p), Priced::Tokens(_)) => p.extend(billed_units(*usage)),
                (Some(p), Priced::Metered(m)) => {
                    p.insert("unit".into(), json!(m.unit));
                    p.insert("billed_units".into(), json!(m.units));
                    p.insert("units_bound".into(), json!(m.units_bound));
                    p.insert("unit_price".into(), json!(m.price));
                }
                _ => {}
            }
            Written {
                state: ExecutionState::Committed.as_str(),
                reason: None,
                charge: Some(charge),
                answer: borrowed(result),
                event_type: types::COMMITTED,
                payload,
                model_alias: priced.label(),
                label: "committed",
                over_hold: overrun.is_some(),
            }
        }
        Outcome::Ambiguous {
            reason,
            provider,
            latency_ms,
            stream,
            result,
        } => {
            let charge = Charge {
                actual_micro_usd: hold,
                prompt_tokens: None,
                completion_tokens: None,
                usage_source: UsageSource::Ambiguous.as_str(),
                latency_ms: *latency_ms,
            };
            let payload = json!({
                "attempt": r.attempt,
                "model": priced.label(),
                "provider": provider,
                "usage": UsageSource::Ambiguous.as_str(),
                "actual_micro_usd": hold,
                "reason": reason,
                "execution_state": ExecutionState::Failed.as_str(),
                "stream_end": stream.map(|s| s.0),
                "stream_events": stream.map(|s| s.1),
            });
            Written {
                state: ExecutionState::Failed.as_str(),
                reason: Some(reason),
                charge: Some(charge),
                answer: borrowed(result),
                event_type: types::COMMITTED,
                payload,
                model_alias: priced.label(),
                label: "ambiguous",
                over_hold: false,
            }
        }
        Outcome::Release {
            reason,
            state,
            upstream_status,
            result,
        } => Written {
            state: state.as_str(),
            reason: Some(reason),
            charge: None,
            answer: borrowed(result),
            event_type: types::RELEASED,
            payload: json!({
                "attempt": r.attempt,
                "reason": reason,
                "execution_state": state.as_str(),
                "upstream_status": upstream_status,
            }),
            model_alias: r.model_alias.as_str(),
            label: "released",
            over_hold: false,
        },
    }
}

async fn settle_once(
    books: &Books,
    r: &Hold,
    priced: Priced<'_>,
    outcome: &Outcome,
) -> Result<SettleResult, sqlx::Error> {
    let w = written(r, priced, outcome);
    let actual = w.charge.as_ref().map(|c| c.actual_micro_usd);
    let chain_id = ChainId::Agent(r.agent_id).to_string();
    let s = Settlement {
        execution_id: r.execution_id,
        attempt: r.attempt,
        tenant_id: r.tenant_id,
        agent_id: r.agent_id,
        execution_key: &r.execution_key,
        chain_id: &chain_id,
        chain_lock_key: ledger::chain_lock_key(&chain_id),
        state: w.state,
        reason: w.reason,
        charge: w.charge,
        result: w.answer,
        event_type: w.event_type,
        payload: w.payload,
        model_alias: w.model_alias,
        rate_subjects: [
            rate_limit::agent_subject(r.agent_id),
            rate_limit::tenant_subject(r.tenant_id),
        ],
    };
    let _slot = books.agent_gates.enter(r.agent_id).await;
    let Some(held) = settlements::settle(&books.hot, &s, ledger::link::settlement_event).await?
    else {
        return Ok(SettleResult::AlreadySettled);
    };
    crate::metrics::settled(w.label, actual.unwrap_or(0), w.over_hold);
    Ok(match actual {
        Some(actual) => SettleResult::Committed {
            actual_micro_usd: actual,
            remaining_micro_usd: held.remaining_micro_usd,
        },
        None => SettleResult::Released {
            remaining_micro_usd: held.remaining_micro_usd,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt_tokens: u64, completion_tokens: u64) -> Usage {
        Usage::tokens(prompt_tokens, completion_tokens)
    }

    #[test]
    fn only_reported_usage_beyond_the_caps_is_the_providers_overrun() {
        let kind = |source, u| overrun_kind(source, u, 10, Some(7), Some(1));
        assert_eq!(kind(UsageSource::Reported, usage(10, 8)), "provider");
        assert_eq!(kind(UsageSource::Reported, usage(11, 7)), "provider");
        assert_eq!(kind(UsageSource::Reported, usage(10, 7)), "aex");
        assert_eq!(kind(UsageSource::Estimated, usage(10, 900)), "aex");
        assert_eq!(kind(UsageSource::Ambiguous, usage(99, 99)), "aex");
        let mut calls = usage(10, 7);
        calls.hosted_calls.add("web_search", 1);
        assert_eq!(kind(UsageSource::Reported, calls), "aex");
        calls.hosted_calls.add("file_search", 1);
        assert_eq!(kind(UsageSource::Reported, calls), "provider");
    }

    #[test]
    fn an_absurd_usage_is_charged_at_the_ceiling_and_says_so() {
        let priced = Priced::Fixed {
            label: "t",
            cost: MicroUsd(5),
        };
        assert_eq!(priced.cost(usage(1, 1)), (5, false));
        let huge = Priced::Fixed {
            label: "t",
            cost: MicroUsd(i64::MAX),
        };
        assert_eq!(huge.cost(usage(0, 0)), (MAX_CHARGE_MICRO_USD, true));
    }
}
