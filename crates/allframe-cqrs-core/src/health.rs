//! [`Health`]: the small typed answer to "is the store healthy?" that a load balancer, an
//! orchestrator or a person can act on.
//!
//! A backend says what it checks in [`EventStoreBackend::health`](crate::EventStoreBackend::health);
//! the projection registry and the saga orchestrator add their own checks; [`Health::merge`]
//! puts the answers together, the worst status winning.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How well a component works, from best to worst (so `max` is the worse of two).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Everything checked works.
    #[default]
    Ok,
    /// The store serves, but something needs a person: a stopped or lagging projection, a
    /// conversion backlog, a connection pool at its limit.
    Degraded,
    /// The store cannot serve: a poisoned writer, an unreachable server, a failed read.
    Failed,
}

impl HealthStatus {
    /// `ok`, `degraded` or `failed`: the word the command line, the JSON answer and the
    /// `allframe_health_status` metric use.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Ok => "ok",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Failed => "failed",
        }
    }

    /// The HTTP status a health endpoint answers with: 200 while the store serves (ok or
    /// degraded), 503 when it has failed, so that a load balancer takes it out of rotation.
    pub fn http_status(self) -> u16 {
        match self {
            HealthStatus::Ok | HealthStatus::Degraded => 200,
            HealthStatus::Failed => 503,
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding of a health check: which component, how bad, and why in words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReason {
    /// The component checked, such as `allsource.writer`, `postgres.pool` or `projection:balances`.
    pub component: String,
    /// How bad it is (never `Ok`: healthy components give no reason).
    pub status: HealthStatus,
    /// What is wrong, for a person.
    pub reason: String,
}

/// The answer of a health check: the overall status and one reason per finding.
///
/// ```
/// use allframe_cqrs_core::{Health, HealthStatus};
///
/// let health = Health::ok().merge(Health::degraded("projection:balances", "stopped"));
/// assert_eq!(health.status, HealthStatus::Degraded);
/// assert_eq!(health.reasons[0].component, "projection:balances");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// The worst status of all findings (`Ok` when there are none).
    pub status: HealthStatus,
    /// Every finding that is not ok.
    pub reasons: Vec<HealthReason>,
}

impl Health {
    /// Healthy: nothing found.
    pub fn ok() -> Self {
        Health::default()
    }

    /// One degraded finding.
    pub fn degraded(component: impl Into<String>, reason: impl Into<String>) -> Self {
        Health::finding(HealthStatus::Degraded, component, reason)
    }

    /// One failed finding.
    pub fn failed(component: impl Into<String>, reason: impl Into<String>) -> Self {
        Health::finding(HealthStatus::Failed, component, reason)
    }

    /// One finding of `status` (`Ok` gives a healthy answer without a reason).
    pub fn finding(status: HealthStatus, component: impl Into<String>, reason: impl Into<String>) -> Self {
        if status == HealthStatus::Ok {
            return Health::ok();
        }
        Health { status, reasons: vec![HealthReason { component: component.into(), status, reason: reason.into() }] }
    }

    /// Both answers together: the worse status, and the reasons of both.
    pub fn merge(mut self, other: Health) -> Self {
        self.status = self.status.max(other.status);
        self.reasons.extend(other.reasons);
        self
    }

    /// Whether nothing was found.
    pub fn is_ok(&self) -> bool {
        self.status == HealthStatus::Ok
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status)?;
        for reason in &self.reasons {
            write!(f, "\n  {} {}: {}", reason.status, reason.component, reason.reason)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_the_worst_status_and_every_reason() {
        let health = Health::degraded("a", "slow").merge(Health::failed("b", "down")).merge(Health::ok());
        assert_eq!(health.status, HealthStatus::Failed);
        assert_eq!(health.reasons.len(), 2);
        assert_eq!(health.status.http_status(), 503);
        assert!(Health::finding(HealthStatus::Ok, "c", "fine").is_ok());
        assert_eq!(Health::degraded("a", "slow").status.http_status(), 200);
    }
}
