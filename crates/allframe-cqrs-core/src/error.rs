//! The one error type of AllFrame CQRS.

use std::path::PathBuf;

use crate::types::{ExpectedVersion, StreamId};

/// A boxed error from a backend or a codec, kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with the AllFrame [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in an event store.
///
/// Variants are semantic so that callers (and the conformance suite) can match on them.
/// A backend's own error is kept as the `source`, never flattened into a string.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream was not at the expected version; nothing was written.
    #[error(
        "wrong expected version for stream `{stream}`: expected {expected}, actual version is {actual} (0 means the stream does not exist)"
    )]
    Conflict {
        /// The stream appended to.
        stream: StreamId,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was checked (0: no such stream).
        actual: u64,
    },
    /// An event id in the append is already stored, but not as part of this same append,
    /// so the append is neither new nor a retry; nothing was written. `stored_version` is 0
    /// when the append itself carries the id twice.
    #[error(
        "event id {event_id} is already stored in stream `{stored_stream}` at version {stored_version}, and this append is not a retry of the append that stored it"
    )]
    DuplicateEventId {
        /// The event id found twice.
        event_id: crate::types::EventId,
        /// Where that id is stored.
        stored_stream: StreamId,
        /// The version it is stored at.
        stored_version: u64,
    },
    /// A checkpoint did not hold the position the caller expected; nothing was written
    /// (contract point 14): another runner of the same name advanced it.
    #[error("checkpoint `{name}` holds {actual:?}, not the expected {expected:?} (None: never saved)")]
    CheckpointConflict {
        /// The checkpoint's name.
        name: String,
        /// What the caller expected it to hold (`None`: never saved).
        expected: Option<u64>,
        /// What it holds.
        actual: Option<u64>,
    },
    /// A checkpoint name is empty, too long or contains a NUL byte, or its position is beyond
    /// the log's head (a store restored from an older backup); nothing was written.
    #[error("invalid checkpoint `{name}`: {reason}")]
    InvalidCheckpoint {
        /// The checkpoint's name.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// A stream id is empty, too long or contains a NUL byte.
    #[error("invalid stream id: {reason}")]
    InvalidStreamId {
        /// Why it was refused.
        reason: String,
    },
    /// An event type name is empty, too long or contains a NUL byte.
    #[error("invalid event type name: {reason}")]
    InvalidEventType {
        /// Why it was refused.
        reason: String,
    },
    /// One event (payload plus metadata) is larger than the configured limit.
    #[error("event of {size} bytes is larger than the limit of {limit} bytes")]
    EventTooLarge {
        /// Encoded size of the event.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// One append carries more events than the configured limit.
    #[error("append of {count} events is more than the limit of {limit} events")]
    TooManyEvents {
        /// Events in the append.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A payload is not in the form the backend stores (for example not JSON for a `jsonb` store).
    #[error("invalid payload for event type `{event_type}`: {reason}")]
    InvalidPayload {
        /// The event's type name.
        event_type: String,
        /// Why it was refused.
        reason: String,
    },
    /// A snapshot was refused (for example: newer than the stream, or for a missing stream).
    #[error("invalid snapshot for stream `{stream}`: {reason}")]
    InvalidSnapshot {
        /// The stream the snapshot is for.
        stream: StreamId,
        /// Why it was refused.
        reason: String,
    },
    /// A typed event could not be encoded.
    #[error("could not encode event of type `{event_type}`")]
    Encode {
        /// The event's type name.
        event_type: String,
        /// The codec's error.
        #[source]
        source: BoxError,
    },
    /// A stored payload could not be decoded into the event type.
    #[error("could not decode event `{event_type}` at version {version} of stream `{stream}`")]
    Decode {
        /// The stream holding the event.
        stream: StreamId,
        /// The event's version.
        version: u64,
        /// The stored type name.
        event_type: String,
        /// The codec's error.
        #[source]
        source: BoxError,
    },
    /// A stored event has a type name that the event type does not know.
    #[error("unknown event type `{event_type}` at version {version} of stream `{stream}`")]
    UnknownEventType {
        /// The stream holding the event.
        stream: StreamId,
        /// The event's version.
        version: u64,
        /// The stored type name.
        event_type: String,
    },
    /// The backend cannot do this operation.
    #[error("backend `{backend}` does not support {operation}")]
    Unsupported {
        /// What was asked for.
        operation: &'static str,
        /// The backend's name.
        backend: &'static str,
    },
    /// The store is locked by another process (or another handle in this one).
    #[error("store at {path} is locked by another process; close it there first")]
    Locked {
        /// The store's path.
        path: PathBuf,
        /// The lock error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// A directory or file is not an AllFrame store of this backend.
    #[error("{path} is not a {backend} store: {reason}")]
    NotAStore {
        /// The backend's name.
        backend: &'static str,
        /// The path that was opened.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// Stored data failed a checksum or an invariant; nothing was skipped or repaired.
    #[error("corruption in {backend} store: {file} at offset {offset}: {reason}")]
    Corruption {
        /// The backend's name.
        backend: &'static str,
        /// The damaged file (or table).
        file: PathBuf,
        /// Byte offset (or row) of the damage.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An I/O error from the filesystem.
    #[error("{backend}: I/O error{}", path.as_ref().map(|p| format!(" on {}", p.display())).unwrap_or_default())]
    Io {
        /// The backend's name.
        backend: &'static str,
        /// The file involved, when known.
        path: Option<PathBuf>,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A setting is out of range or inconsistent; found when a store, a subscription or a
    /// copy is set up, before anything is read or written.
    #[error("invalid configuration: {reason}")]
    Configuration {
        /// What is wrong, naming the setting.
        reason: String,
    },
    /// An operation did not finish in time.
    #[error("{backend}: {operation} timed out")]
    Timeout {
        /// The backend's name.
        backend: &'static str,
        /// What timed out.
        operation: &'static str,
    },
    /// The store was closed, or its background worker stopped after an earlier fatal error.
    #[error("{backend}: the store is closed{}", reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Closed {
        /// The backend's name.
        backend: &'static str,
        /// Why, when known.
        reason: Option<String>,
    },
    /// Any other backend error, kept whole as the source.
    #[error("{backend}: backend error")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// Whether retrying the same operation may succeed.
        transient: bool,
        /// The backend's own error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Whether retrying the same operation later may succeed (a dropped connection, a timeout).
    ///
    /// A [`Error::Conflict`] is not transient: the caller must reload and decide again.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Backend { transient, .. } => *transient,
            Error::Timeout { .. } => true,
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }

    /// A short, stable name of the variant (`conflict`, `io`, `timeout`, …): the `kind` label
    /// of the error metrics, bounded whatever the error says.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Conflict { .. } => "conflict",
            Error::DuplicateEventId { .. } => "duplicate_event_id",
            Error::CheckpointConflict { .. } => "checkpoint_conflict",
            Error::InvalidCheckpoint { .. } => "invalid_checkpoint",
            Error::InvalidStreamId { .. } => "invalid_stream_id",
            Error::InvalidEventType { .. } => "invalid_event_type",
            Error::EventTooLarge { .. } => "event_too_large",
            Error::TooManyEvents { .. } => "too_many_events",
            Error::InvalidPayload { .. } => "invalid_payload",
            Error::InvalidSnapshot { .. } => "invalid_snapshot",
            Error::Encode { .. } => "encode",
            Error::Decode { .. } => "decode",
            Error::UnknownEventType { .. } => "unknown_event_type",
            Error::Unsupported { .. } => "unsupported",
            Error::Locked { .. } => "locked",
            Error::NotAStore { .. } => "not_a_store",
            Error::Corruption { .. } => "corruption",
            Error::Io { .. } => "io",
            Error::Configuration { .. } => "configuration",
            Error::Timeout { .. } => "timeout",
            Error::Closed { .. } => "closed",
            Error::Backend { .. } => "backend",
        }
    }

    /// Whether this is an optimistic-concurrency conflict.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// Wraps a backend's error.
    pub fn backend(backend: &'static str, transient: bool, source: impl Into<BoxError>) -> Self {
        Error::Backend { backend, transient, source: source.into() }
    }

    /// Stored data that failed a checksum or an invariant, in `file` at `offset`.
    pub fn corruption(backend: &'static str, file: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corruption { backend, file: file.into(), offset, reason: reason.into() }
    }

    /// Wraps an I/O error, with the file when known.
    pub fn io(backend: &'static str, path: Option<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { backend, path, source }
    }
}
