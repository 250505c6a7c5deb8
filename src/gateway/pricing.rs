//! What a call is priced by, from the hold to the commit: one [`Pricing`] per call. Admission
//! holds its worst case ([`Pricing::estimate`]); settlement charges what was served
//! ([`Pricing::cost`]), at most [`MAX_CHARGE_MICRO_USD`].
//!
//! A model call is priced over every candidate (the model asked for, then its fallbacks) while it
//! is held, and at the one candidate that answered once it is settled ([`Pricing::served_by`]);
//! a media call's units are its bound while held and its bill once answered
//! ([`Metered::billed`]).

use super::bound::{self, Candidate};
use super::estimate::Estimate;
use crate::config::InputTokens;
use crate::money::MicroUsd;
use crate::providers::Usage;

/// The most one settlement charges: 10^15 micro-USD (one billion USD). A cost above it (an absurd
/// reported usage, such as 10^18 tokens) is charged at this ceiling and flagged `cost_saturated`
/// in the ledger event: the books stay far from the `bigint` range, so no sum over them can
/// overflow, and the settlement still ends (`aex_settle_books` also saturates every counter).
pub const MAX_CHARGE_MICRO_USD: i64 = 1_000_000_000_000_000;

/// What a call is priced by.
#[derive(Debug, Clone, Copy)]
pub enum Pricing<'a> {
    /// Tokens at the model's prices; the hold covers the most expensive of the model and its
    /// fallbacks (`candidates`, the model first), each bounded at its own settings. Settled, it
    /// holds the one candidate that answered ([`Pricing::served_by`]).
    Tokens { candidates: &'a [Candidate] },
    /// A tool plugin's declared cost.
    Fixed { tool: &'a str, cost: MicroUsd },
    /// A media call's units at the model's unit prices (`gateway::media`), see [`Metered`].
    Metered(Metered<'a>),
}

/// A media call's units (images, seconds of audio, characters): `units` of `unit` costing `cost`,
/// at the price entry `price` when the unit has several. Held, `units` is the bound and `cost`
/// the most it can cost, which `covers` says in words; `prompt_tokens` count in the TPM window.
/// Billed ([`Metered::billed`]), they are what the provider's answer says: units beyond
/// `units_bound` that the provider reported are its overrun.
#[derive(Debug, Clone, Copy)]
pub struct Metered<'a> {
    pub alias: &'a str,
    pub unit: &'static str,
    pub units: u64,
    pub units_bound: u64,
    pub price: Option<&'a str>,
    pub cost: MicroUsd,
    pub prompt_tokens: u64,
    pub covers: &'a str,
}

impl<'a> Metered<'a> {
    /// The same call, billed `units` at `price` for `cost`.
    pub fn billed(self, units: u64, price: Option<&'a str>, cost: MicroUsd) -> Self {
        Metered {
            units,
            price,
            cost,
            ..self
        }
    }
}

impl<'a> Pricing<'a> {
    /// A model call settled at the prices of `served`, the candidate that answered.
    pub fn served_by(served: &'a Candidate) -> Self {
        Pricing::Tokens {
            candidates: std::slice::from_ref(served),
        }
    }

    /// The model alias or tool name the execution is recorded under (for a model call: the
    /// first candidate, which is the one that answered once settled).
    pub fn label(&self) -> &'a str {
        match *self {
            Pricing::Tokens { candidates } => {
                candidates.first().map_or("", |c| c.model.alias.as_str())
            }
            Pricing::Fixed { tool, .. } => tool,
            Pricing::Metered(m) => m.alias,
        }
    }

    /// The model alias, for a call to a model (not a tool).
    pub fn model_alias(&self) -> Option<&'a str> {
        (!matches!(self, Pricing::Fixed { .. })).then(|| self.label())
    }

    /// The most the call can cost with `output_cap` per choice: what admission holds.
    pub fn estimate(&self, output_cap: Option<u64>) -> Estimate {
        match self {
            Pricing::Tokens { candidates } => bound::worst_estimate(candidates, output_cap),
            Pricing::Fixed { cost, .. } => Estimate {
                prompt_tokens: 0,
                output_cap: None,
                output_tokens: 0,
                cost: *cost,
            },
            Pricing::Metered(m) => Estimate {
                prompt_tokens: m.prompt_tokens,
                output_cap: None,
                output_tokens: 0,
                cost: m.cost,
            },
        }
    }

    /// The cost of `usage` (tokens at the first candidate's prices, which is the one that
    /// answered once settled), at most [`MAX_CHARGE_MICRO_USD`], and whether it was cut to it.
    pub fn cost(&self, usage: Usage) -> (i64, bool) {
        let exact = match self {
            Pricing::Tokens { candidates } => candidates
                .first()
                .map_or(0, |c| token_cost(&c.model, usage)),
            Pricing::Fixed { cost, .. } => i128::from(cost.0),
            Pricing::Metered(m) => i128::from(m.cost.0),
        };
        match i64::try_from(exact) {
            Ok(cost) if cost <= MAX_CHARGE_MICRO_USD => (cost, false),
            _ => (MAX_CHARGE_MICRO_USD, true),
        }
    }
}

/// `usage` at `model`'s prices, exactly: input (cached and cache writes at their prices), output
/// and each hosted-tool call.
fn token_cost(model: &crate::config::ModelRoute, usage: Usage) -> i128 {
    let fees: i128 = usage
        .hosted_calls
        .iter()
        .map(|(tool, calls)| i128::from(model.hosted_tool_fee(tool).0) * i128::from(calls))
        .sum();
    i128::from(model.input_cost(input_tokens(usage)).0)
        + i128::from(model.output_price.cost(usage.completion_tokens).0)
        + fees
}

/// The input tokens of `usage`, as the prices split them.
pub fn input_tokens(usage: Usage) -> InputTokens {
    InputTokens {
        prompt: usage.prompt_tokens,
        cached: usage.cached_tokens,
        cache_write: usage.cache_write_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absurd_usage_is_charged_at_the_ceiling_and_says_so() {
        let priced = Pricing::Fixed {
            tool: "t",
            cost: MicroUsd(5),
        };
        assert_eq!(priced.cost(Usage::tokens(1, 1)), (5, false));
        let huge = Pricing::Fixed {
            tool: "t",
            cost: MicroUsd(i64::MAX),
        };
        assert_eq!(huge.cost(Usage::tokens(0, 0)), (MAX_CHARGE_MICRO_USD, true));
    }
}
