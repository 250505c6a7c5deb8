//! Rebuilding the books from the ledger alone: fold every agent's money events into the `spent`
//! and `reserved` they imply, to compare with the live counters (`/admin/replay`, `aex audit`).

use std::collections::BTreeMap;

use futures::TryStreamExt;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::store::chain_events;

/// Event types that move money, and the payload fields they carry.
pub mod types {
    pub const RESERVED: &str = "reservation.reserved";
    pub const COMMITTED: &str = "usage.commit";
    pub const RELEASED: &str = "reservation.released";
    pub const PERIOD_RESET: &str = "budget.period_reset";
}

/// What the ledger says an agent (or tenant) has spent and holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FoldedBooks {
    pub spent_micro_usd: i64,
    pub reserved_micro_usd: i64,
}

#[derive(Debug, Default)]
pub struct Folded {
    pub agents: BTreeMap<Uuid, FoldedBooks>,
    pub tenants: BTreeMap<Uuid, FoldedBooks>,
}

fn field(payload: &serde_json::Value, name: &str) -> i64 {
    payload
        .get(name)
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0)
}

/// Applies one money event to an agent's books. Sums saturate: an absurd recorded amount must not
/// wrap around (it shows as a mismatch instead).
pub fn apply(books: &mut FoldedBooks, event_type: &str, payload: &serde_json::Value) {
    let estimate = field(payload, "estimate_micro_usd");
    match event_type {
        types::RESERVED => {
            books.reserved_micro_usd = books.reserved_micro_usd.saturating_add(estimate)
        }
        types::COMMITTED => {
            books.reserved_micro_usd = books.reserved_micro_usd.saturating_sub(estimate);
            books.spent_micro_usd = books
                .spent_micro_usd
                .saturating_add(field(payload, "actual_micro_usd"));
        }
        types::RELEASED => {
            books.reserved_micro_usd = books.reserved_micro_usd.saturating_sub(estimate)
        }
        types::PERIOD_RESET => books.spent_micro_usd = field(payload, "spent_after_micro_usd"),
        _ => {}
    }
}

/// Applies one of its agents' money events to a tenant's books (SPEC §5.4): `spent` counts every
/// commit, with or without a tenant budget, and never resets with an agent's period; `reserved`
/// counts the holds made against the tenant's budget (`holds_tenant`).
pub fn apply_tenant(books: &mut FoldedBooks, event_type: &str, payload: &serde_json::Value) {
    if event_type == types::COMMITTED {
        books.spent_micro_usd = books
            .spent_micro_usd
            .saturating_add(field(payload, "actual_micro_usd"));
    }
    let holds_tenant = payload
        .get("holds_tenant")
        .and_then(serde_json::Value::as_bool);
    if holds_tenant != Some(true) {
        return;
    }
    let estimate = field(payload, "estimate_micro_usd");
    match event_type {
        types::RESERVED => {
            books.reserved_micro_usd = books.reserved_micro_usd.saturating_add(estimate)
        }
        types::COMMITTED | types::RELEASED => {
            books.reserved_micro_usd = books.reserved_micro_usd.saturating_sub(estimate);
        }
        _ => {}
    }
}

/// Folds every money event, chain by chain in sequence order.
pub async fn fold_all(pool: &PgPool) -> Result<Folded, sqlx::Error> {
    let money = [
        types::RESERVED,
        types::COMMITTED,
        types::RELEASED,
        types::PERIOD_RESET,
    ];
    let mut rows = chain_events::of_types(pool, &money);
    let mut folded = Folded::default();
    while let Some((tenant_id, agent_id, event_type, payload)) = rows.try_next().await? {
        let payload: serde_json::Value =
            serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null);
        if let Some(agent) = agent_id {
            apply(
                folded.agents.entry(agent).or_default(),
                &event_type,
                &payload,
            );
        }
        if let (Some(tenant), Some(_)) = (tenant_id, agent_id) {
            apply_tenant(
                folded.tenants.entry(tenant).or_default(),
                &event_type,
                &payload,
            );
        }
    }
    Ok(folded)
}
