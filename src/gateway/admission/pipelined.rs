//! The common admission, pipelined on the money transactions' pool (issue 17, `store::hot`):
//! BEGIN, the tenant's view and the agent's row, chain lock, tail and rate windows in one round
//! trip (`store::holds::lock_hot`), the hold and COMMIT in the next — two round trips where the
//! general way takes five. It takes the calls that need nothing more: no Idempotency-Key, a
//! tenant without limits of its own, an agent whose budget period has not ended, and a grant
//! (within the agent's own rate limits, if it has any). Anything else — a refusal included — is
//! rolled back untouched and goes the general way ([`super::admit`]), which decides it afresh
//! under the same locks: the same decisions, the same writes, the same ledger events.
//!
//! Such a call first goes in this replica's next admission batch ([`batched`], `admission::batch`,
//! which decides it with the same [`grant`]); it is admitted here on its own ([`alone`]) when the
//! batch failed.

use super::super::policy::RequestFacts;
use super::super::rate_limit::{self, Quota};
use super::super::reservation::{self, Grant, Locked};
use super::super::ticket::Ticket;
use super::super::Gateway;
use super::batch::{self, Answer, Batched, Window};
use super::{policy_cap, Admission};

/// An unkeyed call (priced by tokens or a declared cost) in this replica's next admission batch
/// (`admission::batch`): what the batch did with it. A keyed call needs the general way; a media
/// call is admitted on its own.
pub(super) async fn batched(gw: &Gateway, t: &Ticket<'_>) -> Batched {
    if t.keyed {
        return Batched::General;
    }
    let clamp_min = u64::from(gw.settings.gateway.clamp_min_output_tokens);
    let Some(member) = batch::Member::of(t, t.request_facts(), clamp_min) else {
        return Batched::Alone;
    };
    // Unanswered (its writer panicked) reads as Alone: nothing of it was committed.
    let batched = gw.admissions.submit(member).await.map(Answer::take);
    let batched = batched.unwrap_or(Batched::Alone);
    if matches!(batched, Batched::Reserved(_)) {
        crate::metrics::admission("admitted", "ok");
    }
    batched
}

/// Admits `t` in a transaction of its own, pipelined (a batch of one); `None` when it needs the
/// general way (nothing was written).
pub(super) async fn alone(gw: &Gateway, t: &Ticket<'_>) -> Option<Admission> {
    let clamp_min = u64::from(gw.settings.gateway.clamp_min_output_tokens);
    let member = batch::Member::of(t, t.request_facts(), clamp_min)?;
    // A batch of one, answered as any batch is (a commit whose answer was lost looked up,
    // `admission::unacked`); a failure leaves the call to the general way.
    let books = std::sync::Arc::downgrade(&gw.books);
    match batch::run(books, vec![member])
        .await
        .pop()
        .map(Answer::take)
    {
        Some(Batched::Reserved(reservation)) => {
            crate::metrics::admission("admitted", "ok");
            Some(Admission::Reserved(*reservation))
        }
        _ => None,
    }
}

/// Lifecycle, policy (on the request's `facts`), the agent's own rate limits (its `window`, when
/// it has any) and budget: the grant and the tokens it charges to the window — which is moved
/// past it — or `None` for a refusal (which the general way decides again and records).
pub(super) fn grant(
    t: &Ticket<'_>,
    books: &Locked,
    clamp_min_output_tokens: u64,
    facts: &RequestFacts,
    window: Option<&mut Window>,
) -> Option<(Grant, i64)> {
    let (effective, cap) = policy_cap(t, books, facts).ok()?;
    let quota = match &window {
        Some(w) => rate_limit::decide(w.limits, w.used, t.rate_tokens(cap)).ok()?,
        None => Quota::default(),
    };
    let (estimate, clamped) =
        reservation::decide_budget(t, books, &effective, cap, clamp_min_output_tokens).ok()?;
    // As the general way: checked with the request's tokens at its cap, charged with the hold's
    // estimate of them (corrected to the tokens used at settlement).
    let rate_tokens = match window {
        Some(w) => {
            let charged = i64::try_from(estimate.tokens()).unwrap_or(i64::MAX);
            w.used.requests += 1;
            w.used.tokens = w.used.tokens.saturating_add(charged);
            charged
        }
        None => 0,
    };
    let grant = Grant {
        estimate,
        clamped,
        quota,
    };
    Some((grant, rate_tokens))
}
