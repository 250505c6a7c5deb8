//! The common admission, pipelined on the money transactions' pool (issue 17, `store::hot`):
//! BEGIN, the tenant's view and the agent's row, chain lock and tail in one round trip
//! (`store::holds::lock_hot`), the hold and COMMIT in the next — two round trips where the general
//! way takes five. It takes the calls that need nothing more: no Idempotency-Key, a tenant without
//! limits of its own, an agent without rate limits whose budget period has not ended, and a
//! grant. Anything else — a refusal included — is rolled back untouched and goes the general way
//! ([`super::admit`]), which decides it afresh under the same locks: the same decisions, the same
//! writes, the same ledger events.
//!
//! Such a call first goes in this replica's next admission batch ([`batched`], `admission::batch`,
//! which decides it with the same [`grant`]); it is admitted here on its own ([`alone`]) when the
//! batch failed.

use uuid::Uuid;

use super::super::call_types::AttemptRef;
use super::super::policy::RequestFacts;
use super::super::rate_limit::Quota;
use super::super::reservation::{self, Grant, Locked};
use super::super::ticket::Ticket;
use super::super::{Gateway, GatewayError};
use super::batch::{self, Answer, Batched};
use super::unacked;
use super::{policy_cap, Admission};
use crate::auth::AuthError;
use crate::ledger::{self, ChainId};
use crate::store::holds::{self, HoldOn};

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

/// Admits `t` in a transaction of its own, pipelined; `None` when it needs the general way
/// (nothing was written).
pub(super) async fn alone(gw: &Gateway, t: &Ticket<'_>) -> Result<Option<Admission>, GatewayError> {
    if t.keyed {
        return Ok(None);
    }
    let clamp_min = u64::from(gw.settings.gateway.clamp_min_output_tokens);
    let chain_id = ChainId::Agent(t.agent_id).to_string();
    let chain = (chain_id.as_str(), ledger::chain_lock_key(&chain_id));
    let Some((lock, locked)) =
        holds::lock_hot(&gw.books.hot, t.tenant_id, t.agent_id, chain).await?
    else {
        return Err(GatewayError::Unauthorized(AuthError::Revoked));
    };
    let (_, batch::Agent { mut books, plain }) = batch::agent(locked);
    let facts = t.request_facts();
    let Some(grant) = plain.then(|| grant(t, &books, clamp_min, &facts)).flatten() else {
        lock.abandon().await?;
        return Ok(None);
    };
    let next = AttemptRef {
        execution_id: Uuid::now_v7(),
        attempt: 1,
    };
    let (rows, reservation) = reservation::held(gw.books.replica_id, t, &mut books, next, grant, 0);
    let held = HoldOn::Hot(lock)
        .hold(&rows.execution, &rows.reservation, &rows.events())
        .await;
    let reservation = match held {
        Ok(()) => reservation,
        // COMMIT went with the hold: when its answer was lost, the hold may be committed.
        Err(e) => unacked::one(&gw.books, reservation, e).await?,
    };
    crate::metrics::admission("admitted", "ok");
    Ok(Some(Admission::Reserved(reservation)))
}

/// Lifecycle, policy (on the request's `facts`) and budget, for an agent without rate limits: the
/// grant, or `None` for a refusal (which the general way decides again and records).
pub(super) fn grant(
    t: &Ticket<'_>,
    books: &Locked,
    clamp_min_output_tokens: u64,
    facts: &RequestFacts,
) -> Option<Grant> {
    let (effective, cap) = policy_cap(t, books, facts).ok()?;
    let (estimate, clamped) =
        reservation::decide_budget(t, books, &effective, cap, clamp_min_output_tokens).ok()?;
    Some(Grant {
        estimate,
        clamped,
        quota: Quota::default(),
    })
}
