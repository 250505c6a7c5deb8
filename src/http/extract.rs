//! Extractors: bearer authentication (on by default for every route but the listed open ones)
//! and JSON bodies that fail in our own error shapes.

use axum::body::Body;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::{AdminApiError, OpenAiError};
use crate::admin::AdminError;
use crate::app_state::AppState;
use crate::auth::{AuthError, Principal};
use crate::config::Settings;
use crate::domain::{AgentId, Scope, TenantId};
use crate::gateway::GatewayError;

/// Verifies the bearer token in memory and checks the revocation set.
fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, AuthError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::Invalid)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or(AuthError::Invalid)?
        .trim();
    let principal = state.signer.verify(token)?;
    if state.revocations.contains(&principal.jti) {
        return Err(AuthError::Revoked);
    }
    Ok(principal)
}

/// `X-AEX-Tenant-Id`, when present, must name the token's own tenant.
fn check_tenant_header(parts: &Parts, principal: &Principal) -> Result<(), String> {
    let Some(value) = parts.headers.get("x-aex-tenant-id") else {
        return Ok(());
    };
    let claimed = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<TenantId>().ok());
    match (claimed, principal.tenant_id) {
        (Some(c), Some(own)) if c == own => Ok(()),
        (Some(_), None) if principal.scope == Scope::Operator => Ok(()),
        _ => Err("X-AEX-Tenant-Id does not match the token's tenant".into()),
    }
}

/// An agent acting on the northbound API.
#[derive(Debug, Clone)]
pub struct AgentCaller {
    pub principal: Principal,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
}

impl AgentCaller {
    /// Refuses a `read-only` token on a route that spends money.
    pub fn require_execution(&self) -> Result<(), OpenAiError> {
        if self.principal.scope == Scope::Execution {
            Ok(())
        } else {
            Err(GatewayError::PermissionDenied(
                "this token's scope does not allow executions".into(),
            )
            .into())
        }
    }
}

impl<S> FromRequestParts<S> for AgentCaller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = OpenAiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let principal = authenticate(parts, &state)?;
        check_tenant_header(parts, &principal).map_err(GatewayError::PermissionDenied)?;
        match (principal.tenant_id, principal.agent_id) {
            (Some(tenant_id), Some(agent_id)) if principal.scope.is_agent_scope() => {
                Ok(AgentCaller {
                    principal,
                    tenant_id,
                    agent_id,
                })
            }
            _ => Err(GatewayError::PermissionDenied(
                "an agent token is required for this route".into(),
            )
            .into()),
        }
    }
}

/// An administrator: `admin` of one tenant or `operator` of all.
#[derive(Debug, Clone)]
pub struct AdminCaller {
    pub principal: Principal,
    /// `X-AEX-Tenant-Id`, already checked against the token: for an operator it names the
    /// tenant to act on when the query does not.
    pub tenant_header: Option<TenantId>,
}

impl AdminCaller {
    /// The one tenant a request acts on (see [`crate::admin::acting_tenant`]).
    pub fn tenant(&self, requested: Option<TenantId>) -> Result<TenantId, AdminError> {
        crate::admin::acting_tenant(&self.principal, requested.or(self.tenant_header))
    }

    /// The tenants a listing covers (see [`crate::admin::visible_tenant`]).
    pub fn visible(&self, requested: Option<TenantId>) -> Result<Option<TenantId>, AdminError> {
        crate::admin::visible_tenant(&self.principal, requested.or(self.tenant_header))
    }
}

impl<S> FromRequestParts<S> for AdminCaller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AdminApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let principal = authenticate(parts, &state).map_err(|e| {
            AdminApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
        })?;
        check_tenant_header(parts, &principal)
            .map_err(|m| AdminApiError::new(StatusCode::FORBIDDEN, "forbidden", m))?;
        let tenant_header = parts
            .headers
            .get("x-aex-tenant-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<TenantId>().ok());
        match principal.scope {
            Scope::Admin | Scope::Operator => Ok(AdminCaller {
                principal,
                tenant_header,
            }),
            _ => Err(AdminApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "an admin or operator token is required",
            )),
        }
    }
}

/// Why a body could not be read.
enum BodyError {
    TooLarge(usize),
    Unreadable,
    /// Not all of it arrived within `server.body_read_timeout_seconds`.
    TooSlow(u64),
}

/// The body, up to the size limit and within the body read timeout (SPEC §3).
async fn read_body(req: Request, settings: &Settings) -> Result<bytes::Bytes, BodyError> {
    let seconds = settings.server.body_read_timeout_seconds;
    tokio::time::timeout(
        std::time::Duration::from_secs(seconds),
        read_body_within(req, settings.max_body_bytes),
    )
    .await
    .unwrap_or(Err(BodyError::TooSlow(seconds)))
}

async fn read_body_within(req: Request, limit: usize) -> Result<bytes::Bytes, BodyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge(limit));
    }
    let body: Body = req.into_body();
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            BodyError::TooLarge(limit)
        } else {
            BodyError::Unreadable
        }
    })
}

/// Whether the request says its body is JSON (`application/json`, any parameters, any case).
/// OpenAI's SDKs always say so; a form or text body is a client mistake, not JSON to guess at.
fn declares_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// A body that could not be read, in the OpenAI shape.
fn openai_body_error(status: StatusCode, code: &str, message: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body =
        crate::gateway::error::openai_error_body(message, "invalid_request_error", code, None);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A northbound request body: a JSON object sent as JSON, or a 400/413 in the OpenAI shape.
pub struct OpenAiBody(pub Map<String, Value>);

impl<S> FromRequest<S> for OpenAiBody
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = axum::response::Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::response::IntoResponse;
        let gateway = AppState::from_ref(state).gateway;
        let json_declared = declares_json(req.headers());
        let bytes = match read_body(req, &gateway.settings).await {
            Ok(b) => b,
            Err(BodyError::TooLarge(limit)) => {
                return Err(openai_body_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request_too_large",
                    &format!("request body exceeds the limit of {limit} bytes"),
                ))
            }
            Err(BodyError::TooSlow(seconds)) => {
                return Err(openai_body_error(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    &format!("the request body did not arrive within {seconds} s"),
                ))
            }
            Err(BodyError::Unreadable) => {
                return Err(OpenAiError(GatewayError::invalid(
                    "could not read the request body",
                    None,
                ))
                .into_response())
            }
        };
        // Checked after the size limit, so an oversized body is a 413 whatever its type.
        if !json_declared {
            return Err(OpenAiError(GatewayError::invalid(
                "the request body must be JSON sent with `Content-Type: application/json`",
                None,
            ))
            .into_response());
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(OpenAiBody(map)),
            Ok(_) => Err(OpenAiError(GatewayError::invalid(
                "the request body must be a JSON object",
                None,
            ))
            .into_response()),
            Err(e) => Err(OpenAiError(GatewayError::invalid(
                format!("the request body is not valid JSON: {e}"),
                None,
            ))
            .into_response()),
        }
    }
}

/// An admin request body, deserialised strictly; errors name the offending field.
pub struct AdminJson<T>(pub T);

impl<S, T> FromRequest<S> for AdminJson<T>
where
    AppState: FromRef<S>,
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AdminApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let gateway = AppState::from_ref(state).gateway;
        let bytes = read_body(req, &gateway.settings)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge(limit) => AdminApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("request body exceeds the limit of {limit} bytes"),
                ),
                BodyError::TooSlow(seconds) => AdminApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!("the request body did not arrive within {seconds} s"),
                ),
                BodyError::Unreadable => AdminApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "could not read the request body",
                ),
            })?;
        // An empty body reads as `null`: an optional body (`AdminJson<Option<T>>`) is absent.
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return serde_json::from_slice(b"null").map(AdminJson).map_err(|_| {
                AdminApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "a JSON request body is required",
                )
            });
        }
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(&mut de)
            .map(AdminJson)
            .map_err(invalid_at)
    }
}

/// A deserialisation error in the admin shape, naming the field it is about.
fn invalid_at<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> AdminApiError {
    let path = e.path().to_string();
    let mut err = AdminApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        e.inner().to_string(),
    );
    err.field = (path != ".").then_some(path);
    err
}

/// Admin query parameters, deserialised strictly; errors name the parameter.
pub struct AdminQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for AdminQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AdminApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(AdminQuery)
            .map_err(invalid_at)
    }
}

/// An admin path parameter; a malformed one is a 400 in the admin shape.
pub struct AdminPath<T>(pub T);

impl<S, T> FromRequestParts<S> for AdminPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = AdminApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| AdminPath(p.0))
            .map_err(|e| {
                AdminApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.body_text())
            })
    }
}
