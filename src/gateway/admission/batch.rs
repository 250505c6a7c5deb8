//! The common admissions of one replica, batched (issue 17, item 1): the calls that arrive while
//! this replica's admission writers are busy are locked, decided and held in ONE transaction
//! (`store::hold_batch`): BEGIN and every distinct agent's row, chain lock and tail in the first
//! round trip, all the holds (one statement per table) and COMMIT in the second.
//!
//! Each member is decided in arrival order with the single way's code (`pipelined::grant`:
//! lifecycle, policy, the agent's rate limits, budget) against its agent's row and rate windows
//! as the members before it left them (their estimates reserved, their requests and tokens
//! counted, the chain's tail at their last event, linked here), so two holds of one batch can
//! never together overspend or pass a limit, and one agent's events chain one after another.
//!
//! A member the batch cannot decide — its tenant has limits of its own, its budget period ended,
//! or it would be refused — is answered [`Batched::General`] once the batch
//! has committed (its agent's locks released), and takes the general way, which decides it afresh
//! and records it. When the batch fails (any error: a deadlock, a constraint, the database), it
//! is rolled back and every member is answered [`Batched::Alone`] and admitted on its own the way
//! it was before batching, so one bad member never loses its neighbours' holds. When the
//! connection fails in the round trip that carried COMMIT, the batch may have committed: its
//! holds are looked up (`admission::unacked`), the committed ones answered Reserved, and only
//! the others Alone.
//!
//! A caller that goes away (its client disconnected) once its member was sent cannot take back a
//! hold that the batch commits: its [`Answer`], unclaimed, releases the hold when dropped.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use serde_json::{Map, Value};
use uuid::Uuid;

use super::super::bound::Candidate;
use super::super::budget_period;
use super::super::call_types::{AttemptRef, Reservation};
use super::super::policy::RequestFacts;
use super::super::pricing::Pricing;
use super::super::rate_limit::{self, Limits, Subjects};
use super::super::reservation::{self, HoldRows, Locked};
use super::super::settlement::{self, Outcome, Release};
use super::super::ticket::{Target, Ticket};
use super::super::Books;
use super::pipelined::grant;
use super::unacked;
use crate::domain::{AgentId, CallRoute, ExecutionState, ReplicaId, TenantId};
use crate::ledger::{self, link::ChainTail, ChainId};
use crate::money::MicroUsd;
use crate::store::group_commit::GroupCommit;
use crate::store::hold_batch::{self, AgentToLock, HoldBatch};
use crate::store::holds::{self, HotLocked};
use crate::store::rate_windows::{Charges, WindowUse};

/// This replica's admission queue.
pub type Admissions = GroupCommit<Member, Answer>;

/// Writers: batches in flight at once. One: the calls that arrive while its batch is in the
/// database make the next batch, so batches start forming at moderate load, not only at
/// saturation. A second writer mostly found the first busy and took each call alone, at the full
/// cost of a transaction (see `gateway::books::SETTLEMENT_WRITERS` for the figures).
const WRITERS: usize = 1;
/// The most admissions one batch carries.
const MAX_BATCH: usize = 32;

/// The queue, writing with `books` (weak: a queued job must not keep them alive).
pub fn admissions(books: Weak<Books>) -> Admissions {
    GroupCommit::new(
        "admission",
        WRITERS,
        MAX_BATCH,
        move |members: Vec<Member>| run(books.clone(), members),
    )
}

/// One call to admit, owned (the batch is written by a task of its own): what its ticket says,
/// with the request's policy facts read beforehand.
pub struct Member {
    tenant_id: TenantId,
    agent_id: AgentId,
    route: CallRoute,
    key: String,
    fingerprint: String,
    pricing: Priced,
    facts: RequestFacts,
    prompt_tokens: u64,
    choices: u64,
    requested_cap: Option<u64>,
    default_cap: Option<u64>,
    stream: bool,
    passthrough: bool,
    provider: String,
    details: Value,
    clamp_min_output_tokens: u64,
    /// The ticket's body is only read for `facts`: the batch's tickets lend an empty one.
    no_body: Map<String, Value>,
}

/// `Pricing`, owned: the calls priced by tokens or by a tool's declared cost (a media call's
/// metered units are admitted on their own).
enum Priced {
    Tokens(Vec<Candidate>),
    Fixed(String, MicroUsd),
}

impl Member {
    /// The member for an unkeyed ticket, `None` for one the batch does not take.
    pub fn of(t: &Ticket<'_>, facts: RequestFacts, clamp_min_output_tokens: u64) -> Option<Self> {
        let pricing = match t.pricing {
            Pricing::Tokens { candidates } => Priced::Tokens(candidates.to_vec()),
            Pricing::Fixed { tool, cost } => Priced::Fixed(tool.to_owned(), cost),
            Pricing::Metered(_) => return None,
        };
        (!t.keyed).then(|| Member {
            tenant_id: t.tenant_id,
            agent_id: t.agent_id,
            route: t.route,
            key: t.key.to_owned(),
            fingerprint: t.fingerprint.to_owned(),
            pricing,
            facts,
            prompt_tokens: t.prompt_tokens,
            choices: t.choices,
            requested_cap: t.requested_cap,
            default_cap: t.default_cap,
            stream: t.stream,
            passthrough: t.passthrough,
            provider: t.target.provider.to_owned(),
            details: t.target.details.clone(),
            clamp_min_output_tokens,
            no_body: Map::new(),
        })
    }

    /// The member's ticket, as its caller built it (the body aside: see `facts`).
    fn ticket(&self) -> Ticket<'_> {
        Ticket {
            tenant_id: self.tenant_id,
            agent_id: self.agent_id,
            route: self.route,
            key: &self.key,
            keyed: false,
            fingerprint: &self.fingerprint,
            pricing: match &self.pricing {
                Priced::Tokens(candidates) => Pricing::Tokens { candidates },
                Priced::Fixed(tool, cost) => Pricing::Fixed { tool, cost: *cost },
            },
            body: &self.no_body,
            prompt_tokens: self.prompt_tokens,
            choices: self.choices,
            requested_cap: self.requested_cap,
            default_cap: self.default_cap,
            stream: self.stream,
            passthrough: self.passthrough,
            target: Target {
                provider: &self.provider,
                details: self.details.clone(),
            },
        }
    }

    fn to_lock(&self) -> AgentToLock {
        let chain_id = ChainId::Agent(self.agent_id).to_string();
        AgentToLock {
            tenant_id: self.tenant_id,
            agent_id: self.agent_id,
            lock_key: ledger::chain_lock_key(&chain_id),
            chain_id,
            subject: rate_limit::agent_subject(self.agent_id),
        }
    }
}

/// What the batch did with a member.
#[derive(Debug)]
pub enum Batched {
    /// Held and committed, DISPATCHED: dispatch it.
    Reserved(Box<Reservation>),
    /// Not decided by the batch (its agent's locks are released now): take the general way.
    General,
    /// The batch failed and wrote nothing: admit it on its own.
    Alone,
}

/// A member's answer. Dropped while it still carries a committed hold — its caller went away
/// before taking it — it releases that hold (nobody will dispatch it, and the reconciler only
/// settles lost replicas' executions).
pub struct Answer {
    batched: Option<Batched>,
    books: Option<Arc<Books>>,
}

impl Answer {
    pub(super) fn new(batched: Batched, books: Option<Arc<Books>>) -> Self {
        Answer {
            batched: Some(batched),
            books,
        }
    }

    /// What the batch did; the caller now owns the hold, if any.
    pub fn take(mut self) -> Batched {
        self.batched.take().unwrap_or(Batched::Alone)
    }
}

/// The reason an unclaimed hold is released with (as a stream whose client left is settled).
const CLIENT_GONE: &str = "client_disconnected";

impl Drop for Answer {
    fn drop(&mut self) {
        let Some(Batched::Reserved(r)) = self.batched.take() else {
            return;
        };
        let (Some(books), Ok(runtime)) = (self.books.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let key = r.hold.execution_key().to_owned();
        tracing::info!(execution_id = %key, "the client went away before its call was dispatched: releasing the hold");
        runtime.spawn(async move {
            let outcome = Outcome::Release(Release {
                reason: CLIENT_GONE,
                state: ExecutionState::Released,
                upstream_status: None,
                result: None,
            });
            // A release prices nothing and charges nothing.
            let nothing = Pricing::Fixed {
                tool: "",
                cost: MicroUsd(0),
            };
            settlement::finish(&books, r.hold, nothing, &outcome).await;
        });
    }
}

/// Writes one batch; every member gets an answer, in order.
pub(super) async fn run(books: Weak<Books>, members: Vec<Member>) -> Vec<Answer> {
    let Some(books) = books.upgrade() else {
        return members
            .iter()
            .map(|_| Answer::new(Batched::Alone, None))
            .collect();
    };
    crate::metrics::observe_admission_batch(members.len());
    match write(&books, &members).await {
        Ok(decided) => decided
            .into_iter()
            .map(|d| Answer::new(d, Some(books.clone())))
            .collect(),
        Err(Failed {
            decided: Some(decided),
            error,
        }) if unacked::outcome_unknown(&error) => {
            // The connection failed with COMMIT sent: the holds may be committed. Those that are
            // are dispatched as decided, only the others admitted again (`admission::unacked`).
            tracing::warn!(error = %error, members = members.len(), "admission batch's commit went unanswered: looking its holds up");
            unacked::resolve(&books, decided).await
        }
        Err(Failed { error, .. }) => {
            // Rolled back (its connection closed): nothing of it was written. Each member is
            // admitted on its own, so a failing one cannot take its neighbours down with it.
            tracing::warn!(error = %error, members = members.len(), "admission batch failed: admitting its members one by one");
            members
                .iter()
                .map(|_| Answer::new(Batched::Alone, None))
                .collect()
        }
    }
}

/// A batch that failed, and how far it got: `decided`, its members' answers, when it failed in
/// the round trip that carried its COMMIT (which may have committed); `None` before.
struct Failed {
    decided: Option<Vec<Batched>>,
    error: sqlx::Error,
}

impl From<sqlx::Error> for Failed {
    fn from(error: sqlx::Error) -> Self {
        Failed {
            decided: None,
            error,
        }
    }
}

/// One agent of a batch: its locked books as the members decided so far left them, and whether
/// the batch may decide its members at all.
pub(super) struct Agent {
    pub(super) books: Locked,
    pub(super) plain: bool,
    pub(super) window: Option<Window>,
}

/// Locks, decides every member in arrival order, writes the holds and commits. A batch of one is
/// written as a call admitted alone is (`store::holds`): one row's statements cost Postgres less
/// than the set-based ones, and a quiet replica's calls are all alone.
async fn write(books: &Books, members: &[Member]) -> Result<Vec<Batched>, Failed> {
    if let [member] = members {
        return write_one(books, member).await;
    }
    let agents = hold_batch::distinct_agents(members.iter().map(Member::to_lock).collect());
    let (lock, rows) = hold_batch::lock_batch(&books.hot, &agents).await?;
    let mut agents: HashMap<AgentId, Agent> = rows.into_iter().map(agent).collect();
    let mut batch = HoldBatch::new(books.replica_id);
    let decided: Vec<Batched> = members
        .iter()
        .map(|m| {
            let Some(agent) = agents.get_mut(&m.agent_id) else {
                return Batched::General;
            };
            let Some((rows, reservation)) = decide(m, agent, books.replica_id) else {
                return Batched::General;
            };
            match batch.push(&rows.execution, &rows.reservation, &rows.events()) {
                Ok(()) => {
                    if let Some(w) = &agent.window {
                        batch.charge(&w.subject, rows.reservation.rate_tokens);
                    }
                    Batched::Reserved(Box::new(reservation))
                }
                // Not reachable for a member (unkeyed, first attempt, no tenant hold); should it
                // be, its agent's books have moved on: its later members go the general way too.
                Err(_) => {
                    agent.plain = false;
                    Batched::General
                }
            }
        })
        .collect();
    after_commit(decided, lock.hold(&batch).await)
}

/// A batch of one: the agent locked, the member decided and held, in two pipelined round trips
/// (the single way, `pipelined::alone`, is a batch of one too).
async fn write_one(books: &Books, m: &Member) -> Result<Vec<Batched>, Failed> {
    let l = m.to_lock();
    let chain = (l.chain_id.as_str(), l.lock_key);
    let locked = holds::lock_hot(&books.hot, m.tenant_id, m.agent_id, chain, &l.subject).await?;
    let Some((lock, locked)) = locked else {
        return Ok(vec![Batched::General]);
    };
    let (_, mut agent) = agent(locked);
    let Some((rows, reservation)) = decide(m, &mut agent, books.replica_id) else {
        lock.abandon().await?;
        return Ok(vec![Batched::General]);
    };
    let mut charges = Charges::default();
    if let Some(w) = &agent.window {
        charges.add(&w.subject, rows.reservation.rate_tokens);
    }
    let held = lock
        .hold(&rows.execution, &rows.reservation, &rows.events(), &charges)
        .await;
    after_commit(vec![Batched::Reserved(Box::new(reservation))], held)
}

/// `decided`, once the round trip that carried the holds and COMMIT answered `held`.
fn after_commit(
    decided: Vec<Batched>,
    held: Result<(), sqlx::Error>,
) -> Result<Vec<Batched>, Failed> {
    match held {
        Ok(()) => Ok(decided),
        Err(error) => Err(Failed {
            decided: Some(decided),
            error,
        }),
    }
}

/// An agent's own rate limits, its subject, and what its window holds — read under its lock, then
/// moved by each member the batch admits.
pub(super) struct Window {
    pub(super) limits: Limits,
    pub(super) subject: String,
    pub(super) used: WindowUse,
}

/// A locked agent, and whether the batch may decide for it: a tenant without limits of its own
/// and a budget period not ended; with its rate window when it has limits of its own.
pub(super) fn agent(locked: HotLocked) -> (AgentId, Agent) {
    let plain = !locked.tenant_limited && budget_period::ended(&locked.agent).is_none();
    let (id, limits) = Subjects::of(&locked.agent, None).agent;
    let window = limits.any().then(|| Window {
        limits,
        subject: rate_limit::agent_subject(id),
        used: locked.window,
    });
    let books = Locked {
        tenant: None,
        tenant_policy: locked.tenant_policy,
        chain_id: ChainId::Agent(id).to_string(),
        agent: locked.agent,
        tail: ChainTail {
            seq: locked.tail_seq,
            hash: locked.tail_hash,
        },
    };
    (
        id,
        Agent {
            books,
            plain,
            window,
        },
    )
}

/// Decides `m` against its agent's books as the members before it left them: the hold's rows
/// (the books moved on past it), or `None` for the general way.
fn decide<'m>(
    m: &'m Member,
    agent: &mut Agent,
    replica: ReplicaId,
) -> Option<(HoldRows<'m>, Reservation)> {
    if !agent.plain {
        return None;
    }
    let t = m.ticket();
    let window = agent.window.as_mut();
    let (grant, rate_tokens) = grant(
        &t,
        &agent.books,
        m.clamp_min_output_tokens,
        &m.facts,
        window,
    )?;
    let next = AttemptRef {
        execution_id: Uuid::now_v7(),
        attempt: 1,
    };
    Some(reservation::held(
        replica,
        &t,
        &mut agent.books,
        next,
        grant,
        rate_tokens,
    ))
}
