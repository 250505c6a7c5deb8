//! The types every step of a governed call shares, below all of them: the call as the HTTP layer
//! hands it over and the answer it gets back, the money an admitted attempt holds and the
//! attempt it names. `prepare → admit → dispatch → relay/complete → settle` each import these
//! from here, never from one another.

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::error::openai_error_body;
use super::estimate::Estimate;
use super::rate_limit::Quota;
use crate::config::Secret;
use crate::domain::{AgentId, CallRoute, TenantId};
use crate::ledger::link::ChainTail;
use crate::money::MicroUsd;

/// A northbound call as the HTTP layer hands it over.
pub struct CallInput {
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub route: CallRoute,
    pub body: Map<String, Value>,
    pub idempotency_key: Option<String>,
    pub passthrough_key: Option<Secret>,
}

impl CallInput {
    /// Records who calls on the request span, and returns the span.
    pub fn record_on_span(&self) -> tracing::Span {
        let span = tracing::Span::current();
        span.record("tenant", tracing::field::display(self.tenant_id));
        span.record("agent", tracing::field::display(self.agent_id));
        span
    }
}

/// A response body: complete, or server-sent events as they are relayed.
pub enum CallBody {
    Full(Bytes),
    Stream(mpsc::Receiver<Bytes>),
}

/// What to send back: a body with its status, and the AEX headers.
pub struct CallOutput {
    pub status: u16,
    pub body: CallBody,
    pub content_type: String,
    pub execution_id: String,
    pub cost_micro_usd: Option<i64>,
    pub remaining_micro_usd: Option<i64>,
    pub replayed: bool,
    /// The agent's rate-limit quota (`x-ratelimit-*` headers) and, on a 429, `Retry-After`.
    pub quota: Quota,
    pub retry_after_seconds: Option<i64>,
}

/// The reason of an execution whose settlement could not be written and was replaced by the
/// fallback (the hold charged). Whether the provider's answer reached the client is not known
/// then, so its key never starts another attempt: that could run and charge the work twice.
pub const SETTLEMENT_FAILED: &str = "settlement_failed";

pub const JSON: &str = "application/json";
pub const SSE: &str = "text/event-stream";

impl CallOutput {
    pub fn full(
        execution_id: &str,
        status: u16,
        content_type: &str,
        body: impl Into<Bytes>,
    ) -> Self {
        CallOutput {
            status,
            body: CallBody::Full(body.into()),
            content_type: content_type.to_owned(),
            execution_id: execution_id.to_owned(),
            cost_micro_usd: None,
            remaining_micro_usd: None,
            replayed: false,
            quota: Quota::default(),
            retry_after_seconds: None,
        }
    }

    pub fn error(execution_id: &str, status: u16, kind: &str, code: &str, message: &str) -> Self {
        Self::full(
            execution_id,
            status,
            JSON,
            openai_error_body(message, kind, code, None),
        )
    }
}

/// The money one admitted attempt holds: what settlement needs, and nothing the client is told.
/// Settled exactly once: only [`super::settlement::finish`] consumes it (the reconciler releases a
/// lost replica's holds through `settlement::release_orphan`, from the execution's row, without a
/// `Hold`).
/// Its fields are read, and it is made, only inside the gateway.
#[must_use = "a hold must be settled (settlement::finish), else its money stays reserved until the reconciler finds it"]
#[derive(Debug)]
pub struct Hold {
    pub(in crate::gateway) execution_id: Uuid,
    pub(in crate::gateway) execution_key: String,
    pub(in crate::gateway) attempt: i32,
    pub(in crate::gateway) tenant_id: TenantId,
    pub(in crate::gateway) agent_id: AgentId,
    /// The model alias (or tool name) the execution is recorded under.
    pub(in crate::gateway) model_alias: String,
    /// The money held (the estimate's cost).
    pub(in crate::gateway) held: MicroUsd,
    /// Whether the hold also counts against the tenant's budget.
    pub(in crate::gateway) holds_tenant: bool,
    /// The agent chain's tail right after the hold (its `execution.dispatched`): what its
    /// settlement predicts it still is (`store::settlements`: one round trip when it is).
    pub(in crate::gateway) chain_tail: ChainTail,
}

impl Hold {
    /// The execution's key, the `X-AEX-Execution-Id` of every answer.
    pub fn execution_key(&self) -> &str {
        &self.execution_key
    }
}

/// What the client is told about its admission (never read by settlement).
#[derive(Debug, Clone, Copy)]
pub struct Granted {
    /// The output cap was lowered to fit the budget (`clamp_max_tokens`).
    pub clamped: bool,
    /// The agent's budget left after the hold.
    pub remaining_after: i64,
    /// The agent's rate-limit quota after this admission, for the response headers.
    pub quota: Quota,
}

/// An admitted attempt: the hold to settle, the estimate it holds (the caps to send), and what
/// the client is told.
#[derive(Debug)]
pub struct Reservation {
    pub hold: Hold,
    pub estimate: Estimate,
    pub granted: Granted,
}

/// One attempt of one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptRef {
    pub execution_id: Uuid,
    pub attempt: i32,
}
