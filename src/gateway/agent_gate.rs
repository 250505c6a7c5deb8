//! How many of one agent's money transactions a replica runs at once, for the ways that are not
//! batched (the general admission, a keyed or limited call's). Batched admissions and
//! settlements take no gate: their writers (`store::group_commit`) already bound what waits on a
//! row.
//!
//! Each of them locks the agent's row until it commits, so one busy agent's transactions run one
//! at a time in Postgres whatever happens here. Left alone, every waiting request also holds a
//! pool connection and a backend queued on that row lock, and Postgres's lock queue degrades as
//! it grows: pgbench running the governed statements against one agent measured ~560 tps with 4
//! clients but ~260 with 16 and ~160 with 64 (bench/README.md). Past a few slots the extra
//! requests wait here instead, in a fair FIFO queue that costs nothing while they wait.
//!
//! The gate is taken before a connection is acquired and held until the transaction ends; no
//! request ever holds two, so it cannot deadlock. Other agents are not affected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::domain::AgentId;

/// One semaphore per agent with work in flight on this replica.
pub struct AgentGates {
    slots: usize,
    gates: Mutex<HashMap<AgentId, Weak<Semaphore>>>,
}

impl AgentGates {
    pub fn new(slots: usize) -> Self {
        AgentGates {
            slots: slots.max(1),
            gates: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for one of the agent's slots; the slot is given back when the permit is dropped.
    pub async fn enter(&self, agent: AgentId) -> OwnedSemaphorePermit {
        let gate = self.gate(agent);
        // The semaphore is never closed, so acquiring can only wait, not fail.
        gate.acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("agent gates are never closed"))
    }

    fn gate(&self, agent: AgentId) -> Arc<Semaphore> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(gate) = gates.get(&agent).and_then(Weak::upgrade) {
            return gate;
        }
        // Agents whose last permit is gone leave dead entries; sweep them as the map doubles so
        // it stays proportional to the agents with work in flight.
        if gates.len() >= 64 && gates.len().is_power_of_two() {
            gates.retain(|_, g| g.strong_count() > 0);
        }
        let gate = Arc::new(Semaphore::new(self.slots));
        gates.insert(agent, Arc::downgrade(&gate));
        gate
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.gates.lock().map(|g| g.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn agent(n: u128) -> AgentId {
        AgentId(uuid::Uuid::from_u128(n))
    }

    #[tokio::test]
    async fn an_agent_gets_at_most_its_slots_and_others_are_not_held_up() {
        let gates = AgentGates::new(2);
        let a = gates.enter(agent(1)).await;
        let _b = gates.enter(agent(1)).await;
        let third = tokio::time::timeout(Duration::from_millis(50), gates.enter(agent(1))).await;
        assert!(third.is_err(), "a third transaction of the agent waits");
        let other = tokio::time::timeout(Duration::from_millis(50), gates.enter(agent(2))).await;
        assert!(other.is_ok(), "another agent does not wait");
        drop(a);
        let third = tokio::time::timeout(Duration::from_secs(5), gates.enter(agent(1))).await;
        assert!(third.is_ok(), "a slot given back admits the next");
    }

    #[tokio::test]
    async fn idle_agents_are_forgotten() {
        let gates = AgentGates::new(1);
        for n in 0..1_000 {
            drop(gates.enter(agent(n)).await);
        }
        assert!(gates.tracked() <= 128, "{} entries kept", gates.tracked());
    }
}
