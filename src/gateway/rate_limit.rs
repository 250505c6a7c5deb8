//! Rate limits (SPEC §7): requests and tokens per sliding minute, per agent and optionally per
//! tenant, kept in Postgres and checked inside the admission transaction under the agent's (and,
//! for tenant limits, the tenant's) row lock, so N replicas enforce one limit. Only admitted
//! requests consume quota; tokens are charged with the estimate and corrected at settlement.

use sqlx::PgConnection;

use crate::domain::{AgentId, TenantId};
use crate::store::rate_windows::{self, WindowUse};

/// The limits of one subject.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
}

impl Limits {
    pub fn any(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some()
    }
}

/// What the response headers say about the agent's quota (OpenAI's `x-ratelimit-*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    pub limit_requests: Option<i64>,
    pub remaining_requests: Option<i64>,
    pub limit_tokens: Option<i64>,
    pub remaining_tokens: Option<i64>,
}

pub fn agent_subject(id: AgentId) -> String {
    format!("agent:{id}")
}

pub fn tenant_subject(id: TenantId) -> String {
    format!("tenant:{id}")
}

/// The verdict for one subject, before anything is consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed(Quota),
    Limited {
        quota: Quota,
        retry_after_seconds: i64,
        which: &'static str,
    },
}

/// Decides whether one more request of `tokens` fits `limits`, given what the window holds.
pub fn decide(limits: Limits, used: WindowUse, tokens: i64) -> Verdict {
    let quota = Quota {
        limit_requests: limits.rpm,
        remaining_requests: limits.rpm.map(|l| (l - used.requests - 1).max(0)),
        limit_tokens: limits.tpm,
        remaining_tokens: limits.tpm.map(|l| (l - used.tokens - tokens).max(0)),
    };
    let retry_after_seconds = used.frees_in_seconds.clamp(1, 60);
    if limits.rpm.is_some_and(|l| used.requests + 1 > l) {
        let quota = Quota {
            remaining_requests: Some(0),
            ..quota
        };
        return Verdict::Limited {
            quota,
            retry_after_seconds,
            which: "requests per minute",
        };
    }
    if limits.tpm.is_some_and(|l| used.tokens + tokens > l) {
        let quota = Quota {
            remaining_tokens: Some(0),
            ..quota
        };
        return Verdict::Limited {
            quota,
            retry_after_seconds,
            which: "tokens per minute",
        };
    }
    Verdict::Allowed(quota)
}

/// Checks a subject in the caller's transaction.
pub async fn check(
    conn: &mut PgConnection,
    subject: &str,
    limits: Limits,
    tokens: i64,
) -> Result<Verdict, sqlx::Error> {
    if !limits.any() {
        return Ok(Verdict::Allowed(Quota::default()));
    }
    let used = rate_windows::window_use(conn, subject).await?;
    Ok(decide(limits, used, tokens))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(requests: i64, tokens: i64) -> WindowUse {
        WindowUse {
            requests,
            tokens,
            frees_in_seconds: 17,
        }
    }

    #[test]
    fn requests_are_limited_at_the_rpm() {
        let limits = Limits {
            rpm: Some(3),
            tpm: None,
        };
        assert!(
            matches!(decide(limits, used(2, 0), 10), Verdict::Allowed(q) if q.remaining_requests == Some(0))
        );
        assert_eq!(
            decide(limits, used(3, 0), 10),
            Verdict::Limited {
                quota: Quota {
                    limit_requests: Some(3),
                    remaining_requests: Some(0),
                    limit_tokens: None,
                    remaining_tokens: None
                },
                retry_after_seconds: 17,
                which: "requests per minute"
            }
        );
    }

    #[test]
    fn tokens_are_limited_with_the_estimate_of_this_request() {
        let limits = Limits {
            rpm: None,
            tpm: Some(1_000),
        };
        assert!(
            matches!(decide(limits, used(5, 900), 100), Verdict::Allowed(q) if q.remaining_tokens == Some(0))
        );
        assert!(matches!(
            decide(limits, used(5, 900), 101),
            Verdict::Limited {
                which: "tokens per minute",
                ..
            }
        ));
    }

    #[test]
    fn no_limits_means_no_verdict_to_give() {
        assert!(!Limits::default().any());
        assert!(matches!(
            decide(Limits::default(), used(1_000_000, 1 << 40), 1),
            Verdict::Allowed(_)
        ));
    }
}
