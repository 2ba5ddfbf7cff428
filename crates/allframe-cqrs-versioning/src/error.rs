//! Why a chain of upcasters is refused at start-up.

/// A broken chain, found by [`Upcasters::build`](crate::Upcasters::build) before any read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// Two steps read one type at one version.
    #[error("two upcasters read `{event_type}` at schema version {from}")]
    Duplicate {
        /// The type.
        event_type: String,
        /// The version both read.
        from: u32,
    },
    /// A step reads a version that is not below the current one (or version 0).
    #[error("an upcaster reads `{event_type}` at schema version {from}, but the current version is {current}")]
    BeyondCurrent {
        /// The type.
        event_type: String,
        /// The version it reads.
        from: u32,
        /// The event type's current schema version.
        current: u32,
    },
    /// A type with steps has none for one version below the current one.
    #[error(
        "`{event_type}` has no upcaster from schema version {missing} (the current version is {current}); \
         add one, or `unchanged(\"{event_type}\", {missing})` if it did not change"
    )]
    Gap {
        /// The type.
        event_type: String,
        /// The version no step reads.
        missing: u32,
        /// The current version.
        current: u32,
    },
    /// A step turns events into a type the event type does not read.
    #[error(
        "the upcaster of `{event_type}` at schema version {from} makes `{target}`, which the event type does not read"
    )]
    UnknownTarget {
        /// The type read.
        event_type: String,
        /// The version read.
        from: u32,
        /// The type made.
        target: String,
    },
}
