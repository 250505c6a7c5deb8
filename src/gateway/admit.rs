//! The admit step of a governed call: admission's decision turned into the reservation to
//! dispatch under, or the answer to give without one (a recorded refusal, a replay, or, for a
//! duplicate of an attempt in flight, that attempt's outcome once it ends).

use super::admission::{self, Admission};
use super::call_types::{CallOutput, Reservation, JSON, SSE};
use super::idempotency::{answer_of_attempt, replayed, wait_for_attempt};
use super::ticket::Ticket;
use super::{Gateway, GatewayError};

/// Admits the ticket: the reservation, or the answer to give without one (a recorded refusal, a
/// replay, or the outcome of the attempt of the same key that was in flight when it arrived).
pub async fn admit_until_decided(
    gw: &Gateway,
    ticket: &Ticket<'_>,
) -> Result<Result<Reservation, CallOutput>, GatewayError> {
    let span = tracing::Span::current();
    let admission_started = std::time::Instant::now();
    let admitted = admission::admit(gw, ticket).await?;
    crate::telemetry::record_ms("admission_ms", admission_started);
    match admitted {
        Admission::Reserved(r) => Ok(Ok(r)),
        Admission::Refused(f) => {
            span.record("outcome", f.code);
            let mut out = CallOutput::full(&f.execution_key, f.status, JSON, f.body);
            out.remaining_micro_usd = Some(f.remaining);
            out.quota = f.quota;
            out.retry_after_seconds = f.retry_after_seconds;
            Ok(Err(out))
        }
        Admission::Replay(s) => {
            span.record("outcome", "replayed");
            let content_type = if s.is_stream { SSE } else { JSON };
            let out = CallOutput::full(&s.execution_key, s.status, content_type, s.body);
            Ok(Err(replayed(out, s.remaining)))
        }
        // Never a new attempt from here: this request arrived while that attempt was in flight,
        // so it gets that attempt's outcome, failure included (SPEC §5.1). Only a request that
        // arrives after an attempt ended starts the next one.
        Admission::InFlight(attempt) => {
            let ended = wait_for_attempt(gw, attempt).await?;
            span.record("outcome", "replayed");
            Ok(Err(answer_of_attempt(ticket.key, ended)?))
        }
    }
}
