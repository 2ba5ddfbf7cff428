//! What a runner does with an event it cannot apply.

use std::time::Duration;

/// A projection's failure policy: how often to try an event again, and what to do when it
/// still fails. An event that does not decode, or that a handler refuses or panics on, is a
/// failure; it never disappears without a trace.
///
/// ```
/// use std::time::Duration;
/// use allframe_cqrs_projections::FailurePolicy;
///
/// // Three more tries, 100 ms, 200 ms, 400 ms apart, then a dead letter and on to the next event.
/// let policy = FailurePolicy::dead_letter().with_retries(3, Duration::from_millis(100));
/// assert_eq!(policy.retries, 3);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailurePolicy {
    /// How many more times a failed apply is tried (a decoding failure is never retried: it
    /// cannot change).
    pub retries: u32,
    /// The wait before the first retry; it doubles after each one, up to [`Self::max_backoff`].
    pub backoff: Duration,
    /// The longest wait between two retries.
    pub max_backoff: Duration,
    /// What happens once the retries are spent.
    pub give_up: GiveUp,
}

/// The end of a failure policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// The projection stops at the event (state `Failed`); its checkpoint stays before it.
    Stop,
    /// The event is recorded as a dead letter (durably, in the store) and the projection goes
    /// on; an operator lists and retries dead letters.
    DeadLetter,
}

impl FailurePolicy {
    /// Stop at the first failure (the default).
    pub const fn stop() -> Self {
        FailurePolicy {
            retries: 0,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            give_up: GiveUp::Stop,
        }
    }

    /// Record a failing event as a dead letter and go on.
    pub const fn dead_letter() -> Self {
        FailurePolicy { give_up: GiveUp::DeadLetter, ..Self::stop() }
    }

    /// Tries a failed event `retries` more times, `backoff` apart at first, doubling.
    pub const fn with_retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.retries = retries;
        self.backoff = backoff;
        self
    }

    /// The wait before retry number `attempt` (1 for the first).
    pub fn backoff_before(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

impl Default for FailurePolicy {
    fn default() -> Self {
        Self::stop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = FailurePolicy::stop().with_retries(40, Duration::from_millis(100));
        assert_eq!(policy.backoff_before(1), Duration::from_millis(100));
        assert_eq!(policy.backoff_before(2), Duration::from_millis(200));
        assert_eq!(policy.backoff_before(4), Duration::from_millis(800));
        assert_eq!(policy.backoff_before(40), Duration::from_secs(30));
    }
}
