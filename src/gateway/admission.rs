//! Admission (SPEC §5.1–§5.2): one short transaction that locks the tenant (only when it has
//! limits of its own) and then the agent, decides idempotency under that lock, checks
//! lifecycle, policy, rate limits and budget, and either holds the estimate or records the
//! refusal — with its ledger events in the same transaction either way. [`admit`] reads as those
//! steps; each has its home:
//!
//! - what a call asks: `gateway::ticket`; what it is priced by: `gateway::pricing`;
//! - the budget period rolled over at admission: `gateway::budget_period`;
//! - replay, wait or next attempt: `gateway::idempotency`;
//! - rate limits checked and consumed: `gateway::rate_limit`;
//! - the hold decided and written: `gateway::reservation`; a refusal written:
//!   `gateway::refusal`.
//!
//! An admitted call is sent at once, so the same transaction also moves it `RESERVED ->
//! DISPATCHED` (both ledger events): DISPATCHED is durable before the provider is called, as
//! recovery needs, without a commit of its own. A durable commit is the dearest step of a call,
//! and under one busy agent every commit serialises on the agent's row and chain; the window this
//! gives up (a replica lost between this commit and sending the request is settled as "provider
//! may have done work") is one the reconciler already treats conservatively.
//!
//! The common call (no Idempotency-Key, no tenant limits of its own, a grant within the agent's
//! budget and rate limits) is admitted in this replica's next admission batch instead
//! (`admission::batch`: the calls that arrive together share two pipelined round trips and one
//! statement per table), or on its own in two pipelined round trips when a batch fails
//! (`admission::pipelined`); the rest, refusals included, takes the steps below.

pub mod batch;
mod pipelined;
mod unacked;

use batch::Batched;

use sqlx::PgConnection;

use super::budget_period;
use super::call_types::{AttemptRef, Reservation};
use super::idempotency::{self, Decision, StoredResult};
use super::policy::{self, EffectivePolicy, Policy, RequestFacts};
use super::rate_limit::{self, Subjects};
use super::refusal::{self, Refusal, Refuse};
use super::reservation::{self, Grant, Locked};
use super::ticket::Ticket;
use super::{Gateway, GatewayError};
use crate::auth::AuthError;
use crate::domain::AgentState;
use crate::ledger::{self, link::ChainTail, ChainId};
use crate::store::agents::{self, AgentRow};
use crate::store::tenants;
use crate::store::StoreError;

pub enum Admission {
    Reserved(Reservation),
    Refused(Refusal),
    Replay(StoredResult),
    /// An attempt of the same key is in flight: wait for it and answer with its outcome.
    InFlight(AttemptRef),
}

/// Runs the admission transaction: the common call in this replica's next admission batch
/// (`admission::batch`), or on its own, pipelined; the rest the general way.
pub async fn admit(gw: &Gateway, t: &Ticket<'_>) -> Result<Admission, GatewayError> {
    // The batch takes no agent gate: however many of an agent's calls they carry, at most the
    // writers' transactions (`admission::batch`) wait on its row in Postgres, the queue the gate
    // bounds; the gate would only keep a busy agent's calls out of a shared batch. The ways a
    // call takes on its own do take it.
    let batched = pipelined::batched(gw, t).await;
    if let Batched::Reserved(reservation) = batched {
        return Ok(Admission::Reserved(*reservation));
    }
    let _slot = gw.books.agent_gates.enter(t.agent_id).await;
    admit_after_batch(gw, t, batched).await
}

/// What follows the batch: its hold, or the call admitted on its own (pipelined when it can be,
/// else the general way).
async fn admit_after_batch(
    gw: &Gateway,
    t: &Ticket<'_>,
    batched: Batched,
) -> Result<Admission, GatewayError> {
    match batched {
        Batched::Reserved(reservation) => return Ok(Admission::Reserved(*reservation)),
        Batched::Alone => {
            if let Some(admitted) = pipelined::alone(gw, t).await {
                return Ok(admitted);
            }
        }
        Batched::General => {}
    }
    general(gw, t).await
}

/// Writes `tickets` as ONE admission batch, as if they had arrived together, and then admits
/// each the way its answer says. Which calls share a batch is otherwise up to their timing: the
/// tests use this to choose a batch's members.
#[doc(hidden)]
pub async fn admit_as_one_batch(
    gw: &Gateway,
    tickets: &[Ticket<'_>],
) -> Option<Vec<Result<Admission, GatewayError>>> {
    let answers = write_one_batch(gw, tickets).await?;
    let mut admitted = Vec::with_capacity(tickets.len());
    for (t, answer) in tickets.iter().zip(answers) {
        admitted.push(admit_after_batch(gw, t, answer.take()).await);
    }
    Some(admitted)
}

/// Writes `tickets` (unkeyed, priced by tokens or a declared cost) as ONE admission batch and
/// returns its answers, unclaimed (tests: a dropped answer releases its hold); `None` (nothing
/// written) when one of them cannot be a member.
#[doc(hidden)]
pub async fn write_one_batch(gw: &Gateway, tickets: &[Ticket<'_>]) -> Option<Vec<batch::Answer>> {
    let clamp_min = u64::from(gw.settings.gateway.clamp_min_output_tokens);
    let members = tickets
        .iter()
        .map(|t| batch::Member::of(t, t.request_facts(), clamp_min))
        .collect::<Option<_>>()?;
    Some(batch::run(std::sync::Arc::downgrade(&gw.books), members).await)
}

/// The general way: any call, decided under the tenant's (when it has limits of its own) and
/// the agent's locks, a refusal recorded.
async fn general(gw: &Gateway, t: &Ticket<'_>) -> Result<Admission, GatewayError> {
    let mut tx = gw.pool.begin().await?;
    let mut books = lock_books(&mut tx, t).await?;
    if let Some(reset) = budget_period::roll(&mut tx, &mut books.agent).await? {
        books.tail = ChainTail {
            seq: reset.seq,
            hash: reset.event_hash,
        };
    }
    let remaining = books.agent.remaining_micro_usd();
    let next = match idempotency::decide(&mut tx, &t.identity(), remaining).await? {
        Decision::Start(next) => next,
        Decision::Replay(stored) => return Ok(Admission::Replay(stored)),
        Decision::InFlight(attempt) => return Ok(Admission::InFlight(attempt)),
    };
    let clamp_min = u64::from(gw.settings.gateway.clamp_min_output_tokens);
    let grant = match check(&mut tx, t, &books, clamp_min).await? {
        Ok(grant) => grant,
        Err(refuse) => {
            let refusal = refusal::record(&mut tx, t, &books.agent, next, refuse).await?;
            tx.commit().await?;
            return Ok(Admission::Refused(refusal));
        }
    };
    // Only admitted requests consume quota, charged with the estimate and corrected at settlement.
    let subjects = Subjects::of(&books.agent, books.tenant.as_ref());
    let tokens = i64::try_from(grant.estimate.tokens()).unwrap_or(i64::MAX);
    let rate_tokens = rate_limit::consume(&mut tx, &subjects, tokens).await?;
    let replica = gw.books.replica_id;
    let reservation =
        reservation::hold(&mut tx, replica, t, &mut books, next, grant, rate_tokens).await?;
    let reservation = match tx.commit().await {
        Ok(()) => reservation,
        Err(e) => unacked::one(&gw.books, reservation, e).await?,
    };
    crate::metrics::admission("admitted", "ok");
    Ok(Admission::Reserved(reservation))
}

/// Locks the tenant (when it has limits of its own), then the agent's row and chain.
async fn lock_books(conn: &mut PgConnection, t: &Ticket<'_>) -> Result<Locked, GatewayError> {
    // Lock order is always tenant, then agent. The tenant row is only locked when the tenant
    // has a budget or rate limits of its own: otherwise a busy tenant would serialise all of its
    // agents for nothing.
    let (tenant_limited, tenant_policy) = tenants::admission_view(conn, t.tenant_id)
        .await?
        .ok_or(GatewayError::Unauthorized(AuthError::Revoked))?;
    let tenant = match tenant_limited {
        true => Some(tenants::lock_tenant(conn, t.tenant_id).await?),
        false => None,
    };
    // The agent's chain is locked with its row and its tail read: the hold's events are hashed
    // here, after it, not by Postgres.
    let chain_id = ChainId::Agent(t.agent_id).to_string();
    let chain = (chain_id.as_str(), ledger::chain_lock_key(&chain_id));
    let locked = match agents::lock_agent_chain(conn, t.tenant_id, t.agent_id, chain).await {
        Ok(l) => l,
        Err(StoreError::NotFound) => return Err(GatewayError::Unauthorized(AuthError::Revoked)),
        Err(e) => return Err(e.into()),
    };
    Ok(Locked {
        tenant,
        tenant_policy,
        agent: locked.agent,
        chain_id,
        tail: ChainTail {
            seq: locked.tail_seq,
            hash: locked.tail_hash,
        },
    })
}

/// Lifecycle, policy, rate limits, then budget: what to hold, or why not.
async fn check(
    conn: &mut PgConnection,
    t: &Ticket<'_>,
    books: &Locked,
    clamp_min_output_tokens: u64,
) -> Result<Result<Grant, Box<Refuse>>, sqlx::Error> {
    let (effective, cap) = match policy_cap(t, books, &t.request_facts()) {
        Ok(allowed) => allowed,
        Err(refuse) => return Ok(Err(refuse)),
    };
    let subjects = Subjects::of(&books.agent, books.tenant.as_ref());
    let quota = match rate_limit::check_admission(conn, &subjects, t.rate_tokens(cap)).await? {
        Ok(quota) => quota,
        Err(limited) => return Ok(Err(Refuse::rate_limited(limited))),
    };
    Ok(
        reservation::decide_budget(t, books, &effective, cap, clamp_min_output_tokens).map(
            |(estimate, clamped)| Grant {
                estimate,
                clamped,
                quota,
            },
        ),
    )
}

/// The effective policy, then lifecycle and policy: the output cap the request may use, on the
/// request's `facts` (`Ticket::request_facts`).
fn policy_cap(
    t: &Ticket<'_>,
    books: &Locked,
    facts: &RequestFacts,
) -> Result<(EffectivePolicy, Option<u64>), Box<Refuse>> {
    // The locked row is authoritative when there is one; otherwise the unlocked read will do.
    let tenant_policy = books
        .tenant
        .as_ref()
        .map_or(&books.tenant_policy.0, |tn| &tn.default_policy.0);
    let agent = &books.agent;
    let Ok(effective) = Policy::effective(&agent.policy, tenant_policy).map_err(|e| {
        tracing::error!(agent = %agent.id, error = %e, "stored policy does not parse: call refused");
    }) else {
        // Fails closed: a policy that cannot be read allows nothing.
        return Err(Refuse::policy_unreadable());
    };
    let cap = allowed_cap(t, agent, &effective, facts)?;
    Ok((effective, cap))
}

/// Lifecycle, then policy: the output cap the request may use (`None` for routes without output).
fn allowed_cap(
    t: &Ticket<'_>,
    agent: &AgentRow,
    effective: &EffectivePolicy,
    facts: &RequestFacts,
) -> Result<Option<u64>, Box<Refuse>> {
    if agent.state != AgentState::Ready {
        return Err(Refuse::not_ready(agent.state));
    }
    let cap =
        policy::evaluate(effective, facts, t.default_cap.unwrap_or(0)).map_err(Refuse::policy)?;
    // Routes without output (embeddings) hold no output tokens.
    Ok(t.default_cap.map(|_| cap))
}
