//! Why a saga could not be defined, started, resumed or run.

/// A saga error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SagaError {
    /// The definition is refused before anything runs.
    #[error("saga `{saga}` is not valid: {problem}")]
    Definition {
        /// The saga's name.
        saga: String,
        /// What is wrong.
        problem: String,
    },
    /// Two sagas of one orchestrator have one name.
    #[error("two sagas are called `{0}`")]
    DuplicateSaga(String),
    /// No saga of this name is registered.
    #[error("no saga is called `{0}`")]
    UnknownSaga(String),
    /// An instance id must be 1 to 128 printable ASCII characters without `:`.
    #[error("`{0}` cannot be a saga instance id (1 to 128 printable ASCII characters, no `:`)")]
    InvalidId(String),
    /// An instance with this id was started before (whatever its state): nothing was written.
    #[error("saga `{saga}` already has an instance `{id}`")]
    AlreadyStarted {
        /// The saga.
        saga: String,
        /// The id.
        id: String,
    },
    /// No such instance.
    #[error("saga `{saga}` has no instance `{id}`")]
    NotFound {
        /// The saga.
        saga: String,
        /// The id.
        id: String,
    },
    /// Only a stuck instance can be resumed.
    #[error("instance `{id}` of saga `{saga}` is {state}, not stuck")]
    NotStuck {
        /// The saga.
        saga: String,
        /// The id.
        id: String,
        /// Its state.
        state: &'static str,
    },
    /// This orchestrator, or another in this process, already runs these sagas on this store.
    #[error("saga `{0}` already has a runner on this store in this process")]
    AlreadyRunning(String),
    /// An instance's stream holds something that is not a saga record.
    #[error("the stream `{stream}` holds an unreadable saga record at version {version}: {reason}")]
    Corrupt {
        /// The stream.
        stream: String,
        /// The event's version.
        version: u64,
        /// What is wrong.
        reason: String,
    },
    /// The instance did not finish in the time waited.
    #[error("instance `{id}` of saga `{saga}` did not finish in time (it is {state})")]
    Timeout {
        /// The saga.
        saga: String,
        /// The id.
        id: String,
        /// Its state then.
        state: &'static str,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] allframe_cqrs_core::Error),
}
