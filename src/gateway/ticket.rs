//! What a call asks of admission (SPEC §5.1): who calls, under which key, priced how, bounded
//! how, and where it goes once admitted.

use serde_json::Value;

use super::call_types::AttemptRef;
use super::idempotency::Identity;
use super::policy::RequestFacts;
use super::pricing::Pricing;
use crate::domain::{AgentId, CallRoute, ExecutionState, TenantId};
use crate::store::executions::NewExecution;

/// Everything admission decides on.
pub struct Ticket<'a> {
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub route: CallRoute,
    pub key: &'a str,
    pub keyed: bool,
    pub fingerprint: &'a str,
    pub pricing: Pricing<'a>,
    pub body: &'a serde_json::Map<String, Value>,
    /// The input bound (the largest over the candidates).
    pub prompt_tokens: u64,
    /// Choices generated (`n`): the output cap applies to each.
    pub choices: u64,
    /// The output cap per choice the request asked for.
    pub requested_cap: Option<u64>,
    /// The cap that applies when the request sets none; `None` for routes without output.
    pub default_cap: Option<u64>,
    pub stream: bool,
    pub passthrough: bool,
    /// Where the call goes once admitted.
    pub target: Target<'a>,
}

/// What an admitted call is dispatched to, for the execution row and the `execution.dispatched`
/// event.
pub struct Target<'a> {
    pub provider: &'a str,
    /// What is called (model or tool facts), merged into the event's payload.
    pub details: Value,
}

impl<'a> Ticket<'a> {
    /// The request's identity, for idempotency's decision.
    pub(super) fn identity(&self) -> Identity<'a> {
        Identity {
            tenant_id: self.tenant_id,
            agent_id: self.agent_id,
            key: self.key,
            keyed: self.keyed,
            fingerprint: self.fingerprint,
        }
    }

    /// The facts the policy's rules are evaluated on.
    pub(super) fn request_facts(&self) -> RequestFacts {
        RequestFacts::from_body(
            self.route,
            self.body,
            self.pricing.model_alias(),
            self.prompt_tokens,
            self.choices,
            self.requested_cap,
            self.passthrough,
        )
    }

    /// The tokens the rate windows are checked with: the input bound and every choice at `cap`.
    pub(super) fn rate_tokens(&self, cap: Option<u64>) -> i64 {
        let output = cap.map_or(0, |c| c.saturating_mul(self.choices));
        i64::try_from(self.prompt_tokens.saturating_add(output)).unwrap_or(i64::MAX)
    }

    /// The execution row of attempt `next` in `state`, as a refusal writes it: no replica, no
    /// estimate, no reason, no provider (a hold sets those).
    pub(super) fn execution(&self, next: AttemptRef, state: ExecutionState) -> NewExecution<'a> {
        NewExecution {
            id: next.execution_id,
            tenant_id: self.tenant_id,
            agent_id: self.agent_id,
            execution_key: self.key,
            keyed: self.keyed,
            route: self.route.as_str(),
            fingerprint: self.fingerprint,
            model_alias: self.pricing.model_alias(),
            state: state.as_str(),
            attempt: next.attempt,
            stream: self.stream,
            replica_id: None,
            estimate_micro_usd: 0,
            reason: None,
            provider: None,
        }
    }
}
