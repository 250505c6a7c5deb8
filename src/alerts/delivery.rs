//! The webhook delivery worker, one per replica (`alerts.deliver`): it claims due deliveries
//! from the outbox (`store::webhook_outbox`), sends each through the egress guard (the same
//! rules as `http` tool plugins: `net_guard`), records the attempt, and retries with exponential
//! backoff until `alerts.retry_for_seconds` have passed since the alert. It is woken by NOTIFY
//! on [`WEBHOOK_CHANNEL`] when an alert commits, and polls besides; it holds no database
//! connection while a receiver answers, so a slow or dead receiver costs governed calls nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{signing, WEBHOOK_CHANNEL};
use crate::config::AlertsSettings;
use crate::domain::ReplicaId;
use crate::net_guard::GuardedClient;
use crate::store::webhook_outbox::{self as outbox, AttemptResult, Claimed, Next};

/// What a worker needs; cheap to clone into each delivery.
#[derive(Clone)]
pub struct Deliverer {
    pub pool: PgPool,
    pub client: GuardedClient,
    pub settings: AlertsSettings,
    pub replica: ReplicaId,
}

/// Delivers until `stop`.
pub async fn deliver_loop(d: Deliverer, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(d.settings.max_in_flight.max(1)));
    // Rung when a delivery ends: the next one of its line may now be claimed.
    let finished = Arc::new(Notify::new());
    let mut listener = listen(&d.pool).await;
    let poll = Duration::from_millis(d.settings.poll_interval_ms.max(10));
    loop {
        let free = slots.available_permits();
        let claimed = match free {
            0 => Vec::new(),
            n => claim(&d, n).await,
        };
        let full = !claimed.is_empty() && claimed.len() == free;
        for c in claimed {
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let (d, finished) = (d.clone(), Arc::clone(&finished));
            tokio::spawn(async move {
                deliver(&d, &c).await;
                drop(slot);
                finished.notify_one();
            });
        }
        if full {
            continue;
        }
        let wake = async {
            match listener.as_mut() {
                Some(l) => {
                    if l.recv().await.is_err() {
                        tokio::time::sleep(poll).await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = wake => {}
            () = finished.notified() => {}
            () = tokio::time::sleep(poll) => {}
        }
        if listener.is_none() {
            listener = listen(&d.pool).await;
        }
    }
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let mut l = PgListener::connect_with(pool).await.ok()?;
    l.listen(WEBHOOK_CHANNEL).await.ok()?;
    Some(l)
}

async fn claim(d: &Deliverer, n: usize) -> Vec<Claimed> {
    // A claim outlives the longest attempt, so a live worker's delivery is not taken over.
    let lease = (d.settings.delivery_timeout_seconds * 2 + 5) as f64;
    let claimed = match d.pool.acquire().await {
        Ok(mut conn) => outbox::claim_due(&mut conn, n as i64, lease).await,
        Err(e) => Err(e),
    };
    claimed.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "claiming webhook deliveries failed");
        Vec::new()
    })
}

/// One attempt, recorded; the delivery is then delivered, due again later, or failed.
pub async fn deliver(d: &Deliverer, c: &Claimed) {
    let started_at = Utc::now();
    let clock = std::time::Instant::now();
    let outcome = send(d, c).await;
    let result = AttemptResult {
        started_at,
        duration_ms: i64::try_from(clock.elapsed().as_millis()).unwrap_or(i64::MAX),
        status_code: outcome.as_ref().ok().map(|s| i32::from(*s)),
        error: match &outcome {
            Ok(s) if (200..300).contains(s) => None,
            Ok(s) => Some(format!("the receiver answered {s}")),
            Err(e) => Some(e.clone()),
        },
    };
    let next = match result.error {
        None => Next::Delivered,
        Some(_) => retry_or_give_up(&d.settings, c),
    };
    if let Err(e) = record(d, c, &result, next).await {
        // The lease expires and another attempt follows: at least once, never lost.
        tracing::warn!(delivery = %c.id, error = %e, "recording a webhook attempt failed");
    }
    if let (Some(error), Next::Failed) = (&result.error, next) {
        tracing::warn!(delivery = %c.id, webhook = %c.webhook_id, %error, "webhook delivery gave up");
    }
}

async fn record(
    d: &Deliverer,
    c: &Claimed,
    r: &AttemptResult,
    next: Next,
) -> Result<(), sqlx::Error> {
    let mut tx = d.pool.begin().await?;
    outbox::finish_attempt(&mut tx, c, d.replica, r, next).await?;
    tx.commit().await
}

/// Posts the stored body, signed; the receiver's status, or why there was none.
async fn send(d: &Deliverer, c: &Claimed) -> Result<u16, String> {
    let id = c.id.to_string();
    let timestamp = Utc::now().timestamp();
    let body = c.payload.as_bytes();
    let mut secrets = vec![c.secret.as_str()];
    secrets.extend(c.previous_secret.as_deref());
    let signature = signing::signature_header(&secrets, &id, timestamp, body)
        .ok_or("the webhook's secret cannot sign")?;
    let request = d
        .client
        .post(&c.url)
        .map_err(|e| e.to_string())?
        .timeout(Duration::from_secs(
            d.settings.delivery_timeout_seconds.max(1),
        ))
        .header("content-type", "application/json")
        .header("user-agent", concat!("aex/", env!("CARGO_PKG_VERSION")))
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(c.payload.clone());
    match request.send().await {
        Ok(response) => Ok(response.status().as_u16()),
        Err(e) => Err(match GuardedClient::refusal(&e) {
            Some(refused) => refused.to_string(),
            None if e.is_timeout() => "the receiver did not answer in time".into(),
            None if e.is_connect() => "the receiver could not be reached".into(),
            None => format!("the request failed: {e}"),
        }),
    }
}

/// The next attempt after `c.attempts` failed ones, or failure past the retry window.
fn retry_or_give_up(s: &AlertsSettings, c: &Claimed) -> Next {
    let delay = backoff(s, c.attempts, rand::thread_rng().gen_range(0.8..1.2));
    let at = Utc::now() + delay;
    let window = chrono::Duration::seconds(i64::try_from(s.retry_for_seconds).unwrap_or(i64::MAX));
    if at - c.created_at > window {
        Next::Failed
    } else {
        Next::RetryAt(at)
    }
}

/// `backoff_initial_ms` doubled per failed attempt, at most `backoff_max_seconds`, times `jitter`.
fn backoff(s: &AlertsSettings, failed: i32, jitter: f64) -> chrono::Duration {
    let doublings = u32::try_from(failed.saturating_sub(1)).unwrap_or(0).min(30);
    let ms = s
        .backoff_initial_ms
        .saturating_mul(1u64 << doublings)
        .min(s.backoff_max_seconds.saturating_mul(1000));
    chrono::Duration::milliseconds((ms as f64 * jitter) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let s = AlertsSettings {
            backoff_initial_ms: 1000,
            backoff_max_seconds: 5,
            ..AlertsSettings::default()
        };
        let ms = |n| backoff(&s, n, 1.0).num_milliseconds();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(4), ms(40)],
            [1000, 2000, 4000, 5000, 5000]
        );
        assert_eq!(backoff(&s, 1, 1.2).num_milliseconds(), 1200);
    }
}
