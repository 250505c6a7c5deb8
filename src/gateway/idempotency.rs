//! Idempotency (SPEC §5.1), in one place: the execution key (the caller's, validated, or a minted
//! UUIDv7) and the request fingerprint that tells a true retry from a different request under
//! the same key; the decision, under the agent's row lock in the admission transaction, whether a
//! key replays its stored answer, waits for its attempt in flight or starts the next attempt
//! ([`decide`]); and the wait of a duplicate for that attempt, answered with its outcome.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use super::call_types::{AttemptRef, CallOutput, JSON, SETTLEMENT_FAILED, SSE};
use super::{Gateway, GatewayError};
use crate::domain::{AgentId, CallRoute, ExecutionState, TenantId};
use crate::store::attempts::{self, AttemptStatus, EndedAttempt};
use crate::store::executions;

/// The longest key accepted (SPEC §3).
pub const MAX_KEY_LEN: usize = 255;

/// The execution key of a request: `(key, keyed)`.
pub fn execution_key(header: Option<&str>) -> Result<(String, bool), GatewayError> {
    match header {
        None => Ok((uuid::Uuid::now_v7().to_string(), false)),
        Some(key) => {
            let printable = key.bytes().all(|b| (0x20..=0x7e).contains(&b)) && key.trim() == key;
            if key.is_empty() || key.len() > MAX_KEY_LEN || !printable {
                return Err(GatewayError::invalid(
                    format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters without surrounding spaces"),
                    None,
                ));
            }
            Ok((key.to_owned(), true))
        }
    }
}

/// SHA-256 over the normalised route and the canonical JSON of the body (keys sorted).
pub fn fingerprint(route: CallRoute, body: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(route.as_str().as_bytes());
    hasher.update(b"\n");
    // serde_json's map is ordered by key, so this serialisation is canonical.
    hasher.update(serde_json::to_vec(body).unwrap_or_default());
    hex::encode(hasher.finalize())
}

/// Who asks under which key, and the fingerprint of what they ask.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub key: &'a str,
    /// The caller gave the key (a minted key never matches an earlier execution).
    pub keyed: bool,
    pub fingerprint: &'a str,
}

/// A stored terminal result to replay.
#[derive(Debug, Clone)]
pub struct StoredResult {
    pub status: u16,
    pub body: Vec<u8>,
    pub is_stream: bool,
    pub execution_key: String,
    pub remaining: i64,
}

/// What a request's key decides.
#[derive(Debug)]
pub enum Decision {
    /// Run this attempt: the first of a new execution, or the next after an ended one.
    Start(AttemptRef),
    /// Answer with the stored result of the ended execution.
    Replay(StoredResult),
    /// An attempt of the same key is in flight: wait for it and answer with its outcome.
    InFlight(AttemptRef),
}

/// Decides what the request's key means, in the admission transaction under the agent's row
/// lock (one admission of a key at a time, on any replica). `remaining` is the agent's budget
/// left, for a replay's headers. A key reused for a different request, or whose answer is no
/// longer kept, or whose settlement could not be recorded, is a conflict.
pub async fn decide(
    conn: &mut PgConnection,
    id: &Identity<'_>,
    remaining: i64,
) -> Result<Decision, GatewayError> {
    let fresh = Decision::Start(AttemptRef {
        execution_id: Uuid::now_v7(),
        attempt: 1,
    });
    if !id.keyed {
        return Ok(fresh);
    }
    let Some(existing) = executions::find_by_key(conn, id.tenant_id, id.agent_id, id.key).await?
    else {
        return Ok(fresh);
    };
    if existing.fingerprint != id.fingerprint {
        return Err(GatewayError::IdempotencyConflict(
            "this Idempotency-Key was used with a different request".into(),
        ));
    }
    match existing.state {
        ExecutionState::Committed | ExecutionState::Denied => {
            let stored = executions::get_result(conn, existing.id).await?;
            let Some((status, body, is_stream)) = stored else {
                return Err(GatewayError::IdempotencyConflict(
                    "the result of this execution is no longer retained".into(),
                ));
            };
            Ok(Decision::Replay(StoredResult {
                status: u16::try_from(status).unwrap_or(500),
                body,
                is_stream,
                execution_key: existing.execution_key,
                remaining,
            }))
        }
        ExecutionState::Reserving | ExecutionState::Reserved | ExecutionState::Dispatched => {
            Ok(Decision::InFlight(AttemptRef {
                execution_id: existing.id,
                attempt: existing.attempt,
            }))
        }
        ExecutionState::Failed if existing.reason.as_deref() == Some(SETTLEMENT_FAILED) => {
            Err(GatewayError::IdempotencyConflict(
                "this execution's outcome could not be recorded, so it is not run again".into(),
            ))
        }
        ExecutionState::Released | ExecutionState::Failed => {
            // This request found the attempt ended, so it starts the next one (under the
            // agent's row lock: one admission of the key at a time, on any replica).
            // Requests that waited for the ended attempt answer from its outcome, which
            // the next attempt's row would overwrite: keep it.
            attempts::archive_outcome(conn, existing.id).await?;
            Ok(Decision::Start(AttemptRef {
                execution_id: existing.id,
                attempt: existing.attempt + 1,
            }))
        }
    }
}

/// A stored answer given again: no charge, `Idempotent-Replayed: true`.
pub(super) fn replayed(mut out: CallOutput, remaining_micro_usd: i64) -> CallOutput {
    out.cost_micro_usd = Some(0);
    out.remaining_micro_usd = Some(remaining_micro_usd);
    out.replayed = true;
    out
}

/// Polls (without locks) until the attempt has ended, up to the idempotency wait.
pub(super) async fn wait_for_attempt(
    gw: &Gateway,
    attempt: AttemptRef,
) -> Result<EndedAttempt, GatewayError> {
    let _waiting = gw.waiting_for_duplicate();
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs(gw.settings.gateway.idempotency_wait_seconds);
    let mut delay = Duration::from_millis(20);
    loop {
        if tokio::time::Instant::now() >= deadline {
            return Err(GatewayError::InProgress);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
        let mut conn = gw.pool.acquire().await?;
        match attempts::attempt_status(&mut conn, attempt.execution_id, attempt.attempt).await? {
            Some(AttemptStatus::InFlight) => {}
            Some(AttemptStatus::Ended(ended)) => return Ok(ended),
            None => {
                return Err(GatewayError::Internal(anyhow::anyhow!(
                    "the execution a request waited for is gone"
                )))
            }
        }
    }
}

/// The answer an ended attempt gave its own caller, for a request that waited for it; when none
/// was recorded (its replica was lost), the failure in the OpenAI shape from its reason.
pub(super) fn answer_of_attempt(
    key: &str,
    ended: EndedAttempt,
) -> Result<CallOutput, GatewayError> {
    let out = match ended.result {
        Some((status, body, is_stream)) => {
            let content_type = if is_stream { SSE } else { JSON };
            let status = u16::try_from(status).unwrap_or(500);
            CallOutput::full(key, status, content_type, body)
        }
        None if matches!(
            ended.state,
            ExecutionState::Committed | ExecutionState::Denied
        ) =>
        {
            return Err(GatewayError::IdempotencyConflict(
                "the result of this execution is no longer retained".into(),
            ))
        }
        None => {
            let reason = ended.reason.as_deref().unwrap_or("failed");
            let (status, code) = if reason.contains("timeout") {
                (504, "upstream_timeout")
            } else {
                (502, "upstream_error")
            };
            let message = format!("the attempt in flight under this key failed: {reason}");
            CallOutput::error(key, status, "server_error", code, &message)
        }
    };
    Ok(replayed(out, ended.remaining_micro_usd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_bounded_and_printable() {
        assert!(execution_key(Some("abc-123")).is_ok());
        assert!(execution_key(Some("")).is_err());
        assert!(execution_key(Some("has space")).is_ok());
        assert!(execution_key(Some(" leading")).is_err());
        assert!(execution_key(Some("tab\there")).is_err());
        assert!(execution_key(Some(&"x".repeat(256))).is_err());
        assert!(execution_key(Some(&"x".repeat(255))).is_ok());
        let (minted, keyed) = execution_key(None).unwrap();
        assert!(!keyed && minted.len() == 36);
    }

    #[test]
    fn fingerprint_ignores_key_order_but_not_content() {
        let a = json!({"model": "m", "messages": [1]});
        let b = json!({"messages": [1], "model": "m"});
        let c = json!({"messages": [2], "model": "m"});
        let fp =
            |v: &serde_json::Value| fingerprint(CallRoute::ChatCompletions, v.as_object().unwrap());
        assert_eq!(fp(&a), fp(&b));
        assert_ne!(fp(&a), fp(&c));
        assert_ne!(
            fp(&a),
            fingerprint(CallRoute::Responses, a.as_object().unwrap())
        );
    }
}
