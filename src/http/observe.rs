//! The request middleware: one `request` span per request, which the governed call fills in
//! (see `telemetry`), the request metrics by matched route template (bounded cardinality) and
//! status, and one access-log line when the response is ready.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use tracing::field::Empty;
use tracing::Instrument;

/// Routes that are polled or scraped: their access-log line is at debug level.
fn is_polled(method: &Method, route: &str) -> bool {
    method == Method::GET
        && (matches!(route, "/health" | "/ready" | "/metrics" | "/admin/metrics")
            || route.starts_with("/dashboard"))
}

pub async fn observe_request(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        method = %method,
        route = %route,
        status = Empty,
        latency_ms = Empty,
        execution_id = Empty,
        tenant = Empty,
        agent = Empty,
        model = Empty,
        outcome = Empty,
        admission_ms = Empty,
        upstream_ms = Empty,
        settlement_ms = Empty,
    );
    let started = Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    crate::metrics::observe_http(&route, status, elapsed);
    span.record("status", status);
    span.record(
        "latency_ms",
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
    );
    if let Some(id) = response
        .headers()
        .get("x-aex-execution-id")
        .and_then(|v| v.to_str().ok())
    {
        span.record("execution_id", id);
    }
    let _in_span = span.enter();
    if is_polled(&method, &route) {
        tracing::debug!("request finished");
    } else {
        tracing::info!("request finished");
    }
    response
}
