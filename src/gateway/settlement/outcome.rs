//! How an attempt ended, as its dispatch tells settlement, and what settlement did with it.

use std::time::Instant;

use bytes::Bytes;

use crate::domain::ExecutionState;
use crate::gateway::call_types::CallOutput;
use crate::providers::Usage;

/// An answer as it is cached on the execution: status, body, whether it is an SSE transcript.
/// The body is the one the client gets, shared, not copied.
pub type Answer = (u16, Bytes, bool);

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

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome<'a> {
    /// The provider did work: charge it.
    Commit(Commit<'a>),
    /// The provider may have done billable work, or not: the hold is charged (`usage:
    /// ambiguous`) and the execution ends FAILED with `reason`, so the key may be tried again.
    Ambiguous(Ambiguous<'a>),
    /// Nothing billable happened: give the hold back.
    Release(Release<'a>),
}

/// The provider did work: what it used and what it was allowed.
#[derive(Debug, Clone)]
pub struct Commit<'a> {
    pub usage: Usage,
    pub source: UsageSource,
    pub provider: &'a str,
    /// The result to cache for replay.
    pub result: Option<Answer>,
    pub latency_ms: i64,
    /// For a stream: how it ended and how many events were relayed.
    pub stream: Option<(&'static str, u64)>,
    /// The completion tokens the caps sent allow (cap × choices); `None` without an output.
    pub completion_cap: Option<u64>,
    /// The prompt tokens the hold was estimated at: usage beyond it (or beyond
    /// `completion_cap`) that the provider reported is the provider's overrun.
    pub prompt_bound: u64,
    /// The hosted-tool calls the hold covers (`max_tool_calls` sent); more reported calls are
    /// the provider's overrun.
    pub hosted_calls_bound: Option<u64>,
}

/// The provider may have done the work: the hold is charged.
#[derive(Debug, Clone)]
pub struct Ambiguous<'a> {
    pub reason: &'a str,
    pub provider: &'a str,
    pub latency_ms: i64,
    pub stream: Option<(&'static str, u64)>,
    /// The answer the caller got, kept for the requests that waited for this attempt.
    pub result: Option<Answer>,
}

/// Nothing billable happened: the hold is given back.
#[derive(Debug, Clone)]
pub struct Release<'a> {
    pub reason: &'a str,
    /// `Released` for provider errors and timeouts, `Failed` when the outcome is unknown.
    pub state: ExecutionState,
    pub upstream_status: Option<u16>,
    /// The answer the caller gets, kept for the requests that waited for this attempt; `None`
    /// when no caller is answered (the reconciler).
    pub result: Option<Answer>,
}

impl<'a> Outcome<'a> {
    /// What is written when this outcome's settlement cannot be (`reason`): no cached answer, no
    /// usage; a charge charges the hold, a release gives it back, the execution FAILED.
    pub(super) fn fallback(&self, reason: &'a str) -> Outcome<'a> {
        let (provider, latency_ms, stream) = match self {
            Outcome::Commit(c) => (c.provider, c.latency_ms, c.stream),
            Outcome::Ambiguous(a) => (a.provider, a.latency_ms, a.stream),
            Outcome::Release(_) => {
                return Outcome::Release(Release {
                    reason,
                    state: ExecutionState::Failed,
                    upstream_status: None,
                    result: None,
                })
            }
        };
        Outcome::Ambiguous(Ambiguous {
            reason,
            provider,
            latency_ms,
            stream,
            result: None,
        })
    }
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

impl SettleResult {
    /// `out` carrying what was charged (`X-AEX-Cost-Micro-USD` and the budget left), when
    /// something was.
    pub fn charged(self, mut out: CallOutput) -> CallOutput {
        if let SettleResult::Committed {
            actual_micro_usd,
            remaining_micro_usd,
        } = self
        {
            out.cost_micro_usd = Some(actual_micro_usd);
            out.remaining_micro_usd = Some(remaining_micro_usd);
        }
        out
    }
}

/// The milliseconds since `started`: an outcome's latency.
pub fn elapsed_ms(started: Instant) -> i64 {
    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// Whose an excess over the hold is: the provider's when it reported usage beyond the caps AEX
/// sent (the one excess SPEC §15 invariant 6 allows), else AEX's own (a pricing or counting bug,
/// which the audit fails on).
pub(super) fn overrun_kind(c: &Commit<'_>) -> &'static str {
    let usage = &c.usage;
    let beyond_caps = usage.prompt_tokens > c.prompt_bound
        || c.completion_cap
            .is_some_and(|cap| usage.completion_tokens > cap)
        || usage.hosted_calls.total() > c.hosted_calls_bound.unwrap_or(0);
    if c.source == UsageSource::Reported && beyond_caps {
        "provider"
    } else {
        "aex"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(source: UsageSource, usage: Usage) -> Commit<'static> {
        Commit {
            usage,
            source,
            provider: "p",
            result: None,
            latency_ms: 0,
            stream: None,
            completion_cap: Some(7),
            prompt_bound: 10,
            hosted_calls_bound: Some(1),
        }
    }

    #[test]
    fn only_reported_usage_beyond_the_caps_is_the_providers_overrun() {
        let kind = |source, u| overrun_kind(&commit(source, u));
        let usage = Usage::tokens;
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
}
