//! The registry's one error type.

use std::time::Duration;

/// Why a registry call failed. Nothing stored is changed by a call that returns one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// Two projections were registered under one name.
    #[error("a projection named `{name}` is already registered")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// No projection of that name is registered.
    #[error("no projection named `{name}` is registered")]
    UnknownProjection {
        /// The name asked for.
        name: String,
    },
    /// The projection's checkpoint is beyond the log's head: the store was probably restored
    /// from an older backup than the read model. Its runner is not started, so nothing changes;
    /// rebuild it or restore a matching read model.
    #[error(
        "the checkpoint of projection `{name}` is at {checkpoint}, beyond the log's head at {head} \
         (was the store restored from an older backup?)"
    )]
    CheckpointAhead {
        /// The projection.
        name: String,
        /// Its stored checkpoint.
        checkpoint: u64,
        /// The log's head position.
        head: u64,
    },
    /// Another runner holds the projection (in this process, or in another one on the same
    /// store): a projection runs once.
    #[error("projection `{name}` already has a runner")]
    AlreadyRunning {
        /// The projection.
        name: String,
    },
    /// The projection stopped on an event it could not apply (failure policy `Stop`).
    #[error("projection `{name}` failed at position {position}: {reason}")]
    Failed {
        /// The projection.
        name: String,
        /// The event it could not apply.
        position: u64,
        /// Why.
        reason: String,
    },
    /// A read-your-writes wait ran out of time.
    #[error("projection `{name}` reached position {position}, not {wanted}, within {waited:?}")]
    Timeout {
        /// The projection.
        name: String,
        /// Where it was when the wait ended.
        position: u64,
        /// The position asked for.
        wanted: u64,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The projection cannot do this.
    #[error("projection `{name}` does not support {what}")]
    Unsupported {
        /// The projection.
        name: String,
        /// What was asked.
        what: &'static str,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] allframe_cqrs_core::Error),
}
