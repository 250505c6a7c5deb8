//! Error rendering: the OpenAI shape on `/v1`, the admin shape on `/admin`. 5xx bodies are
//! opaque; their cause is logged once, here.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::admin::AdminError;
use crate::gateway::error::openai_error_body;
use crate::gateway::GatewayError;

/// An error on a `/v1` route, rendered as `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct OpenAiError(pub GatewayError);

impl<E: Into<GatewayError>> From<E> for OpenAiError {
    fn from(e: E) -> Self {
        OpenAiError(e.into())
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let (status, kind, code) = self.0.status_type_code();
        if status >= 500 {
            tracing::error!(error = %crate::telemetry::error_chain(&self.0), code, "request failed");
        }
        let body = openai_error_body(&self.0.public_message(), kind, code, self.0.param());
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response =
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The admin error shape: `{"error": {"code", "message", "field"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminErrorBody {
    pub error: AdminErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminErrorDetail {
    /// `invalid_request`, `unauthorized`, `forbidden`, `permission_denied`, `not_found`,
    /// `conflict`, `agent_limit_reached`, `payload_too_large`, `unavailable` or
    /// `internal_error`.
    pub code: &'static str,
    pub message: String,
    /// The request field a validation error is about.
    pub field: Option<String>,
}

/// An error on an `/admin` route.
#[derive(Debug)]
pub struct AdminApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl AdminApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AdminApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }
}

impl From<AdminError> for AdminApiError {
    fn from(e: AdminError) -> Self {
        let (status, code) = match &e {
            AdminError::Invalid { .. } | AdminError::BadValue(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request")
            }
            AdminError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AdminError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            AdminError::AgentLimitReached(_) => (StatusCode::CONFLICT, "agent_limit_reached"),
            AdminError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            AdminError::PermissionDenied(_) => (StatusCode::FORBIDDEN, "permission_denied"),
            AdminError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            AdminError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        };
        let field = match &e {
            AdminError::Invalid { field, .. } => Some((*field).to_owned()),
            _ => None,
        };
        let message = match &e {
            AdminError::Internal(inner) => {
                tracing::error!(error = %format!("{inner:#}"), "admin request failed");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        AdminApiError {
            status,
            code,
            message,
            field,
        }
    }
}

impl From<sqlx::Error> for AdminApiError {
    fn from(e: sqlx::Error) -> Self {
        AdminError::from(e).into()
    }
}

impl IntoResponse for AdminApiError {
    fn into_response(self) -> Response {
        let body = AdminErrorBody {
            error: AdminErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
