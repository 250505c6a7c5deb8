//! Exactly-once settlement (SPEC §5.3). One transaction per outcome, in two pipelined round trips
//! (`store::settlements`, the `aex_settle_books` function; its ledger event hashed here by
//! `ledger::link::settlement_event`): compare-and-set the reservation out of RESERVED
//! (a second attempt finds no row and changes nothing), move the money on the tenant and agent
//! counters, correct the TPM windows, finish the execution with its cached result, append the
//! ledger event and the projection. [`written`] decides what is written (the cost, the state,
//! the payload); this module writes it, retrying, and makes sure every hold ends.

use std::time::Duration;

use super::call_types::{Hold, SETTLEMENT_FAILED};
use super::error::is_unavailable;
use super::pricing::Pricing;
use super::Books;
use crate::domain::ExecutionState;
use crate::store::executions::ExecutionRow;
use crate::store::settle_batch::SettlementJob;
use crate::store::settlements;

pub mod outcome;
mod written;

pub use outcome::{
    elapsed_ms, Ambiguous, Answer, Commit, Outcome, Release, SettleResult, UsageSource,
};
use written::{Booking, Written};

/// Settles an attempt this replica dispatched, and makes sure it ends: when the outcome's
/// settlement cannot be written (after its retries), a simpler one is written instead (no cached
/// answer, no usage) — for a charge, the hold is committed (`usage: ambiguous`), for a release
/// the hold is given back — with the execution FAILED and reason `settlement_failed`, and the
/// answer still carries what was charged. Never an execution left DISPATCHED with money reserved
/// while its replica lives. A model call's `pricing` is the candidate that answered
/// ([`Pricing::served_by`]).
pub async fn finish(
    books: &Books,
    hold: Hold,
    pricing: Pricing<'_>,
    outcome: &Outcome<'_>,
) -> SettleResult {
    let booking = Booking::of_hold(&hold);
    let held = hold.held.0;
    let e = match settle(books, written::written(&booking, held, pricing, outcome)).await {
        Ok(done) => return done,
        Err(e) => e,
    };
    let id = hold.execution_key();
    tracing::error!(execution_id = id, error = %e, "settlement failed after retries; writing the fallback");
    let fallback = outcome.fallback(SETTLEMENT_FAILED);
    match settle(books, written::written(&booking, held, pricing, &fallback)).await {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(execution_id = id, error = %e, "the fallback settlement failed too");
            SettleResult::Unsettled
        }
    }
}

/// Releases the hold of an execution whose replica was lost (the reconciler's entry point),
/// from what its row records; `state` and `reason` say why. Nobody was answered: a request that
/// waited for this attempt answers from the reason. A release prices nothing and charges
/// nothing, so it needs neither the hold nor a price. [`SettleResult::AlreadySettled`] when the
/// row holds nothing.
pub async fn release_orphan(
    books: &Books,
    e: &ExecutionRow,
    state: ExecutionState,
    reason: &str,
) -> Result<SettleResult, sqlx::Error> {
    let booking = Booking::of_row(e);
    let release = Release {
        reason,
        state,
        upstream_status: None,
        result: None,
    };
    settle(books, written::released(&booking, &release)).await
}

/// Settles, retrying for as long as the database is unreachable: the money is real and must be
/// booked, and while this replica lives nobody else will book it (the reconciler only settles
/// the executions of lost replicas). Only a shutdown past its drain timeout stops the retries;
/// the replica then deregisters and another one reconciles. The compare-and-set makes a retry
/// after an unacknowledged commit harmless.
async fn settle(books: &Books, w: Written<'_>) -> Result<SettleResult, sqlx::Error> {
    let started = std::time::Instant::now();
    let result = settle_retrying(books, &w).await;
    crate::telemetry::record_ms("settlement_ms", started);
    crate::telemetry::record_outcome(w.outcome);
    result
}

/// Attempts for an error other than an unreachable database (a deadlock, a serialization
/// failure), before the caller falls back.
const OTHER_ERROR_ATTEMPTS: u32 = 3;

async fn settle_retrying(books: &Books, w: &Written<'_>) -> Result<SettleResult, sqlx::Error> {
    let mut delay = Duration::from_millis(50);
    let mut other_errors = 0;
    let mut unanswered = false;
    let id = w.settlement.execution_key;
    loop {
        let e = match settle_once(books, w).await {
            Ok(SettleResult::AlreadySettled) if unanswered => {
                return Ok(settled_by_us(books, w).await)
            }
            Ok(done) => return Ok(done),
            Err(e) => e,
        };
        // The connection failed rather than the server refusing: the attempt may have committed.
        unanswered |= !matches!(e, sqlx::Error::Database(_));
        if books.drain_expired.is_cancelled() {
            return Err(e);
        }
        if is_unavailable(&e) {
            tracing::warn!(execution_id = %id, error = %e, "settlement retrying: database unavailable");
        } else {
            other_errors += 1;
            if other_errors >= OTHER_ERROR_ATTEMPTS {
                return Err(e);
            }
            tracing::warn!(execution_id = %id, error = %e, "settlement retrying");
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = books.drain_expired.cancelled() => {}
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// A retry found its reservation settled after an attempt whose answer was lost: when that
/// attempt is what settled it (the same charge, or a release for a release), the caller is told
/// what it charged, with the budget left now, as if the answer had arrived. Anything else (the
/// reconciler got there first) stays [`SettleResult::AlreadySettled`].
async fn settled_by_us(books: &Books, w: &Written<'_>) -> SettleResult {
    let s = &w.settlement;
    let ours = s.charge.as_ref().map(|c| c.actual_micro_usd);
    match settlements::settled_as(&books.pool, s.execution_id, s.attempt).await {
        Ok(Some((actual, remaining))) if actual == ours => {
            crate::metrics::settled(w.label, ours.unwrap_or(0), w.over_hold);
            match ours {
                Some(actual_micro_usd) => SettleResult::Committed {
                    actual_micro_usd,
                    remaining_micro_usd: remaining,
                },
                None => SettleResult::Released {
                    remaining_micro_usd: remaining,
                },
            }
        }
        Ok(_) => SettleResult::AlreadySettled,
        Err(e) => {
            tracing::warn!(execution_id = %s.execution_key, error = %e, "settled, but what it charged could not be read back");
            SettleResult::AlreadySettled
        }
    }
}

async fn settle_once(books: &Books, w: &Written<'_>) -> Result<SettleResult, sqlx::Error> {
    let s = &w.settlement;
    let actual = s.charge.as_ref().map(|c| c.actual_micro_usd);
    // Written with the other settlements queued meanwhile (`store::settle_batch`); a failing
    // neighbour makes the batch settle each member alone, so this answer is this member's own.
    let settled = books.settlements.submit(SettlementJob::of(s)).await;
    let settled = settled.map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let Some(held) = settled? else {
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
