//! `[alerts]`: how alerts reach webhooks (issue 19). Which alerts fire is per tenant, in the
//! database (`/admin/alert_rules`); this is how every replica delivers them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSettings {
    /// Run the webhook delivery worker on this replica (every replica may; they share the work).
    pub deliver: bool,
    /// How long a delivery is retried before it is marked failed.
    pub retry_for_seconds: u64,
    /// The first retry's delay; each next one doubles, up to `backoff_max_seconds` (±20% jitter).
    pub backoff_initial_ms: u64,
    pub backoff_max_seconds: u64,
    /// One attempt's limit (connect and answer).
    pub delivery_timeout_seconds: u64,
    /// Deliveries in flight per replica at most.
    pub max_in_flight: usize,
    /// How often the worker looks for due deliveries without being woken by a new alert.
    pub poll_interval_ms: u64,
    /// After a webhook's secret is rotated, deliveries are also signed with the old one for this
    /// long, so receivers can switch without losing a delivery.
    pub secret_rotation_grace_seconds: u64,
}

impl Default for AlertsSettings {
    fn default() -> Self {
        AlertsSettings {
            deliver: true,
            retry_for_seconds: 24 * 3600,
            backoff_initial_ms: 1000,
            backoff_max_seconds: 300,
            delivery_timeout_seconds: 10,
            max_in_flight: 16,
            poll_interval_ms: 1000,
            secret_rotation_grace_seconds: 24 * 3600,
        }
    }
}
