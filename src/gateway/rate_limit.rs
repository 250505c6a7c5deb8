//! Rate limits (SPEC §7): requests and tokens per sliding minute, per agent and optionally per
//! tenant, kept in Postgres and checked inside the admission transaction under the agent's (and,
//! for tenant limits, the tenant's) row lock, so N replicas enforce one limit. Only admitted
//! requests consume quota; tokens are charged with the estimate and corrected at settlement.
//! Every admission counts for at least 60 s (`store::rate_windows`), so no 60-second span admits
//! more than the limit; a refusal says when the next request would be admitted.

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
        /// When one more such request would be admitted, in whole seconds (1 to 60).
        retry_after_seconds: i64,
        which: &'static str,
    },
}

/// What must leave the window before one more request fits (a non-positive amount: nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortfall {
    pub requests: i64,
    pub tokens: i64,
}

/// Decides whether one more request of `tokens` fits `limits`, given what the window holds:
/// the quota left after it, or the quota, the limit that is used up, and what must leave the
/// window first.
pub fn decide(
    limits: Limits,
    used: WindowUse,
    tokens: i64,
) -> Result<Quota, (Quota, &'static str, Shortfall)> {
    let quota = Quota {
        limit_requests: limits.rpm,
        remaining_requests: limits.rpm.map(|l| (l - used.requests - 1).max(0)),
        limit_tokens: limits.tpm,
        remaining_tokens: limits.tpm.map(|l| (l - used.tokens - tokens).max(0)),
    };
    let shortfall = Shortfall {
        requests: limits.rpm.map_or(0, |l| used.requests + 1 - l),
        tokens: limits
            .tpm
            .map_or(0, |l| used.tokens.saturating_add(tokens) - l),
    };
    if shortfall.requests > 0 {
        let quota = Quota {
            remaining_requests: Some(0),
            ..quota
        };
        return Err((quota, "requests per minute", shortfall));
    }
    if shortfall.tokens > 0 {
        let quota = Quota {
            remaining_tokens: Some(0),
            ..quota
        };
        return Err((quota, "tokens per minute", shortfall));
    }
    Ok(quota)
}

/// Checks a subject in the caller's transaction; a refusal says when to retry.
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
    match decide(limits, used, tokens) {
        Ok(quota) => Ok(Verdict::Allowed(quota)),
        Err((quota, which, short)) => {
            // A request larger than the limit itself never fits: the longest honest wait is
            // the window.
            let frees =
                rate_windows::frees_in_seconds(conn, subject, short.requests, short.tokens).await?;
            Ok(Verdict::Limited {
                quota,
                retry_after_seconds: frees.unwrap_or(60).clamp(1, 60),
                which,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(requests: i64, tokens: i64) -> WindowUse {
        WindowUse { requests, tokens }
    }

    #[test]
    fn requests_are_limited_at_the_rpm() {
        let limits = Limits {
            rpm: Some(3),
            tpm: None,
        };
        assert!(matches!(decide(limits, used(2, 0), 10), Ok(q) if q.remaining_requests == Some(0)));
        assert_eq!(
            decide(limits, used(3, 0), 10),
            Err((
                Quota {
                    limit_requests: Some(3),
                    remaining_requests: Some(0),
                    limit_tokens: None,
                    remaining_tokens: None
                },
                "requests per minute",
                Shortfall {
                    requests: 1,
                    tokens: 0
                }
            ))
        );
    }

    #[test]
    fn tokens_are_limited_with_the_estimate_of_this_request() {
        let limits = Limits {
            rpm: None,
            tpm: Some(1_000),
        };
        assert!(
            matches!(decide(limits, used(5, 900), 100), Ok(q) if q.remaining_tokens == Some(0))
        );
        assert!(matches!(
            decide(limits, used(5, 900), 101),
            Err((
                _,
                "tokens per minute",
                Shortfall {
                    requests: 0,
                    tokens: 1
                }
            ))
        ));
    }

    #[test]
    fn no_limits_means_no_verdict_to_give() {
        assert!(!Limits::default().any());
        assert!(decide(Limits::default(), used(1_000_000, 1 << 40), 1).is_ok());
    }
}
