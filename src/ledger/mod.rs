//! The tamper-evident ledger (SPEC §10): canonical encoding and hashing, appending under the
//! chain's advisory lock in the caller's transaction, streaming verification (in full, or of what
//! was appended since the last pass), signed checkpoints and heads archived outside the database,
//! and the fold that rebuilds every agent's books from the events.

pub mod anchor;
pub mod append;
mod chain_check;
pub mod checkpoint;
pub mod encoding;
pub mod export;
pub mod fold;
pub mod link;
pub mod verify;
pub mod watch;

pub use append::{append, chain_lock_key, AppendedEvent, ChainId, NewEvent};
pub use encoding::{event_hash, EventHeader, GENESIS_HASH};
