//! The set of revoked token ids, kept in memory on every replica. It is filled from Postgres at
//! start, updated by LISTEN/NOTIFY within a second of a revocation, and resynced periodically and
//! whenever the listener reconnects (a notification sent while disconnected is otherwise lost).

use std::collections::HashSet;
use std::sync::RwLock;

use uuid::Uuid;

#[derive(Debug, Default)]
pub struct RevocationSet {
    revoked: RwLock<HashSet<Uuid>>,
}

impl RevocationSet {
    pub fn contains(&self, jti: &Uuid) -> bool {
        self.revoked.read().map(|s| s.contains(jti)).unwrap_or(true)
    }

    pub fn insert(&self, jti: Uuid) {
        if let Ok(mut s) = self.revoked.write() {
            s.insert(jti);
        }
    }

    /// Replaces the whole set with a fresh read of the database.
    pub fn replace(&self, all: impl IntoIterator<Item = Uuid>) {
        if let Ok(mut s) = self.revoked.write() {
            *s = all.into_iter().collect();
        }
    }
}
