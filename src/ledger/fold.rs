//! Rebuilding the books from the ledger alone: fold every agent's money events into the `spent`
//! and `reserved` they imply, to compare with the live counters (`/admin/replay`, `aex audit`).

use std::collections::BTreeMap;

use futures::TryStreamExt;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

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

/// Applies one money event to the books it touches.
pub fn apply(books: &mut FoldedBooks, event_type: &str, payload: &serde_json::Value) {
    match event_type {
        types::RESERVED => books.reserved_micro_usd += field(payload, "estimate_micro_usd"),
        types::COMMITTED => {
            books.reserved_micro_usd -= field(payload, "estimate_micro_usd");
            books.spent_micro_usd += field(payload, "actual_micro_usd");
        }
        types::RELEASED => books.reserved_micro_usd -= field(payload, "estimate_micro_usd"),
        types::PERIOD_RESET => books.spent_micro_usd = field(payload, "spent_after_micro_usd"),
        _ => {}
    }
}

/// Folds every money event, chain by chain in sequence order.
pub async fn fold_all(pool: &PgPool) -> Result<Folded, sqlx::Error> {
    let mut rows = sqlx::query_as::<_, (Option<Uuid>, Option<Uuid>, String, String)>(
        "SELECT tenant_id, agent_id, event_type, payload FROM event_log \
         WHERE event_type = ANY($1) ORDER BY chain_id, seq",
    )
    .bind([
        types::RESERVED,
        types::COMMITTED,
        types::RELEASED,
        types::PERIOD_RESET,
    ])
    .fetch(pool);
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
        let holds_tenant = payload
            .get("holds_tenant")
            .and_then(serde_json::Value::as_bool);
        if let (Some(tenant), Some(true)) = (tenant_id, holds_tenant) {
            apply(
                folded.tenants.entry(tenant).or_default(),
                &event_type,
                &payload,
            );
        }
    }
    Ok(folded)
}
