//! What can go wrong on the control path, and the OpenAI error shape it is told in.

use serde_json::json;

use crate::auth::AuthError;

/// Errors of the control path. Expected refusals that are *recorded* (budget, policy, lifecycle,
/// rate limit) are not errors: they are [`super::call_types::CallOutput`]s with a stored result.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    ModelNotFound(String),
    #[error("{0}")]
    ToolNotFound(String),
    #[error("{0}")]
    IdempotencyConflict(String),
    #[error("an execution with this key is still in flight; retry later")]
    InProgress,
    #[error("the service is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl GatewayError {
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        GatewayError::InvalidRequest {
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }

    /// HTTP status, OpenAI error `type` and `code`.
    pub fn status_type_code(&self) -> (u16, &'static str, &'static str) {
        match self {
            GatewayError::InvalidRequest { .. } => {
                (400, "invalid_request_error", "invalid_request")
            }
            GatewayError::Unauthorized(_) => (401, "invalid_request_error", "invalid_api_key"),
            GatewayError::PermissionDenied(_) => (403, "permission_error", "permission_denied"),
            GatewayError::ModelNotFound(_) => (404, "invalid_request_error", "model_not_found"),
            GatewayError::ToolNotFound(_) => (404, "invalid_request_error", "tool_not_found"),
            GatewayError::IdempotencyConflict(_) => {
                (409, "invalid_request_error", "idempotency_conflict")
            }
            GatewayError::InProgress => (409, "invalid_request_error", "execution_in_progress"),
            GatewayError::Unavailable(_) => (503, "server_error", "unavailable"),
            GatewayError::Internal(_) => (500, "server_error", "internal_error"),
        }
    }

    /// The message shown to the client: 5xx bodies stay opaque.
    pub fn public_message(&self) -> String {
        match self {
            GatewayError::Internal(_) => "internal error".to_owned(),
            GatewayError::Unavailable(_) => {
                "the gateway cannot reach its database; nothing was charged".to_owned()
            }
            GatewayError::Unauthorized(e) => format!("Invalid API key: {e}"),
            other => other.to_string(),
        }
    }

    pub fn param(&self) -> Option<&str> {
        match self {
            GatewayError::InvalidRequest { param, .. } => param.as_deref(),
            GatewayError::ModelNotFound(_) => Some("model"),
            GatewayError::ToolNotFound(_) => Some("tool_name"),
            _ => None,
        }
    }
}

impl From<sqlx::Error> for GatewayError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            GatewayError::Unavailable(e.to_string())
        } else {
            GatewayError::Internal(e.into())
        }
    }
}

impl From<crate::store::StoreError> for GatewayError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Db(db) => db.into(),
            other => GatewayError::Internal(other.into()),
        }
    }
}

/// Whether a database error means "cannot reach the database" (→ 503) rather than a bug.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            // admin_shutdown, crash_shutdown, cannot_connect_now, connection failures
            matches!(
                db.code().as_deref(),
                Some("57P01" | "57P02" | "57P03" | "08000" | "08003" | "08006")
            )
        }
        _ => false,
    }
}

/// OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.
pub fn openai_error_body(message: &str, kind: &str, code: &str, param: Option<&str>) -> Vec<u8> {
    let body = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    body.to_string().into_bytes()
}
