//! Rate limits (SPEC §7): requests and tokens per sliding minute, per agent and optionally per
//! tenant, kept in Postgres and checked inside the admission transaction under the agent's (and,
//! for tenant limits, the tenant's) row lock, so N replicas enforce one limit. Every admission
//! counts for at least 60 s (`store::rate_windows`), so no 60-second span admits more than the
//! limit; a refusal says when the next request would be admitted.
//!
//! Where each part lives: checking ([`check_admission`]) and consuming ([`consume`]) are here,
//! both called by admission; only admitted requests consume quota, charged with the estimate.
//! The correction to the tokens actually used is made by settlement, in SQL (`aex_settle_books`,
//! migrations/20261207900001_settle_hashed_in_replica.sql; the reservation keeps the tokens
//! charged, `rate_tokens`, and settlement passes the subjects named by [`agent_subject`] and
//! [`tenant_subject`]). Buckets older than every window are pruned by housekeeping
//! (`cluster::housekeeping`, `store::rate_windows::delete_expired`).

use sqlx::PgConnection;

use crate::domain::{AgentId, TenantId};
use crate::store::agents::AgentRow;
use crate::store::rate_windows::{self, WindowUse};
use crate::store::tenants::TenantRow;

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

/// Whose limits one admission is checked against and counted in: the agent's, and the tenant's
/// when its row is locked (it has a budget or limits of its own).
#[derive(Debug, Clone, Copy)]
pub struct Subjects {
    pub agent: (AgentId, Limits),
    pub tenant: Option<(TenantId, Limits)>,
}

impl Subjects {
    /// The limits of the locked agent row and, if it is locked, the tenant row.
    pub fn of(agent: &AgentRow, tenant: Option<&TenantRow>) -> Self {
        Subjects {
            agent: (
                agent.id,
                Limits {
                    rpm: agent.rpm_limit.map(i64::from),
                    tpm: agent.tpm_limit,
                },
            ),
            tenant: tenant.map(|tn| {
                (
                    tn.id,
                    Limits {
                        rpm: tn.rpm_limit.map(i64::from),
                        tpm: tn.tpm_limit,
                    },
                )
            }),
        }
    }

    fn tenant_limited(&self) -> bool {
        self.tenant.is_some_and(|(_, l)| l.any())
    }
}

/// A limit that is used up, for the 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// `agent` or `tenant`.
    pub whose: &'static str,
    /// Which limit (`requests per minute`, `tokens per minute`).
    pub which: &'static str,
    /// The agent's quota (for the headers), whosever limit it is.
    pub quota: Quota,
    pub retry_after_seconds: i64,
}

/// Checks the agent's limits, then the tenant's, against the windows (read under the row locks)
/// for one more request of `tokens`: the agent's quota after it, or the limit used up.
pub async fn check_admission(
    conn: &mut PgConnection,
    s: &Subjects,
    tokens: i64,
) -> Result<Result<Quota, Limited>, sqlx::Error> {
    let (agent_id, agent_limits) = s.agent;
    let agent_quota = match check(conn, &agent_subject(agent_id), agent_limits, tokens).await? {
        Verdict::Allowed(q) => q,
        Verdict::Limited {
            quota,
            retry_after_seconds,
            which,
        } => {
            return Ok(Err(Limited {
                whose: "agent",
                which,
                quota,
                retry_after_seconds,
            }))
        }
    };
    if let Some((tenant_id, limits)) = s.tenant {
        let subject = tenant_subject(tenant_id);
        if let Verdict::Limited {
            retry_after_seconds,
            which,
            ..
        } = check(conn, &subject, limits, tokens).await?
        {
            return Ok(Err(Limited {
                whose: "tenant",
                which,
                quota: agent_quota,
                retry_after_seconds,
            }));
        }
    }
    Ok(Ok(agent_quota))
}

/// Counts an admitted request and its estimated `tokens` in the windows, in the admission
/// transaction: the agent's whenever any limit applies, the tenant's when it has limits. Returns
/// the tokens charged (0 when no limit applies), which settlement corrects to the actual use.
pub async fn consume(
    conn: &mut PgConnection,
    s: &Subjects,
    tokens: i64,
) -> Result<i64, sqlx::Error> {
    if !(s.agent.1.any() || s.tenant_limited()) {
        return Ok(0);
    }
    rate_windows::consume(conn, &agent_subject(s.agent.0), tokens).await?;
    if let (true, Some((tenant_id, _))) = (s.tenant_limited(), s.tenant) {
        rate_windows::consume(conn, &tenant_subject(tenant_id), tokens).await?;
    }
    Ok(tokens)
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
