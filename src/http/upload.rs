//! The body of the audio upload routes: `multipart/form-data` of at most
//! `gateway.max_audio_upload_bytes` (plus room for the text fields), read into its text fields
//! and its file; anything else is a 400 (another content type, a malformed form) or a 413 in the
//! OpenAI shape, before anything is held.

use axum::extract::{FromRef, FromRequest, Request};
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Map, Value};

use super::error::OpenAiError;
use super::extract::read_openai_body;
use crate::app_state::AppState;
use crate::gateway::media::{multipart, UploadFile};
use crate::gateway::GatewayError;

/// Room for the form's text fields and part headers beyond the file itself.
const FORM_OVERHEAD_BYTES: usize = 64 * 1024;

/// An audio upload: its text fields and its file.
pub struct AudioForm(pub Map<String, Value>, pub Option<UploadFile>);

fn refuse(message: String) -> axum::response::Response {
    OpenAiError(GatewayError::invalid(message, Some("file"))).into_response()
}

impl<S> FromRequest<S> for AudioForm
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = axum::response::Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let gateway = AppState::from_ref(state).gateway;
        let boundary = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(multipart::boundary);
        let limit = gateway
            .settings
            .gateway
            .max_audio_upload_bytes
            .saturating_add(FORM_OVERHEAD_BYTES);
        // Read (and size-checked) first, so an oversized body is a 413 whatever its type.
        let bytes = read_openai_body(req, &gateway.settings, limit).await?;
        let Some(boundary) = boundary else {
            return Err(refuse(
                "the request body must be `multipart/form-data` with a boundary: the audio as a `file` part and the other fields as text parts".to_owned(),
            ));
        };
        let (fields, file) = multipart::parse(&boundary, &bytes)
            .map_err(|e| refuse(format!("malformed form: {e}")))?;
        if let Some(f) = &file {
            let max = gateway.settings.gateway.max_audio_upload_bytes;
            if f.bytes.len() > max {
                let message = format!("the uploaded file exceeds the limit of {max} bytes");
                let body = crate::gateway::error::openai_error_body(
                    &message,
                    "invalid_request_error",
                    "request_too_large",
                    Some("file"),
                );
                return Err((
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    [(header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response());
            }
        }
        Ok(AudioForm(fields, file))
    }
}
