//! The routing table in force on this replica: replaced whole when a newer version arrives
//! (reload, LISTEN/NOTIFY, resync), read as a snapshot that a request keeps from start to end.

use std::sync::{Arc, RwLock};

use super::routing::RoutingTable;

/// One replica's current routing table; cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct LiveRouting(RwLock<Arc<RoutingTable>>);

impl LiveRouting {
    pub fn new(table: RoutingTable) -> Self {
        LiveRouting(RwLock::new(Arc::new(table)))
    }

    /// The routing table in force; a request keeps the snapshot it started with.
    pub fn current(&self) -> Arc<RoutingTable> {
        self.0.read().map(|r| Arc::clone(&r)).unwrap_or_default()
    }

    /// Installs a newer routing table (an older or equal version is ignored); true if it did.
    pub fn install(&self, table: RoutingTable) -> bool {
        match self.0.write() {
            Ok(mut current) if table.version > current.version => {
                *current = Arc::new(table);
                true
            }
            _ => false,
        }
    }
}
