//! The routing table's validation error: it names the offending key.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    #[error("invalid routing table: {0}")]
    Syntax(String),
    #[error("invalid routing table: {key}: {message}")]
    Invalid { key: String, message: String },
}

pub(super) fn invalid(key: impl Into<String>, message: impl Into<String>) -> RoutingError {
    RoutingError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}
