//! Alerts (issue 19): what the server itself notices ([`watch`]: a ledger that fails
//! verification, a lost replica, a stale reservation), and the delivery of every alert to the
//! webhooks subscribed to it ([`delivery`], signed per Standard Webhooks by [`signing`]). Alerts
//! about money and lifecycle are raised by triggers in the transactions of their facts
//! (migrations/20261207120002_alert_triggers.sql); this module never sits on a request's path.

pub mod delivery;
pub mod signing;
pub mod watch;

/// The alert kinds, which are also the names of the per-tenant rules.
pub const KINDS: &[&str] = &[
    "agent_budget",
    "tenant_budget",
    "budget_refusal",
    "lifecycle",
    "overrun",
    "ledger_verification",
    "replica_lost",
    "stale_reservation",
];

/// The kinds whose rule carries thresholds (percent of a budget).
pub const THRESHOLD_KINDS: &[&str] = &["agent_budget", "tenant_budget"];

/// The thresholds a budget rule uses until a tenant sets its own.
pub const DEFAULT_THRESHOLDS: &[i32] = &[50, 80, 100];

/// The NOTIFY channel that wakes the delivery workers when deliveries are queued.
pub const WEBHOOK_CHANNEL: &str = "aex_webhooks";
