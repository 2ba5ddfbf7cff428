//! Why a chain of upcasters is refused at start-up, and why the schema registry refuses a
//! registration.

/// A broken chain, found by [`Upcasters::build`](crate::Upcasters::build) before any read. Its
/// `Debug` is its message, so that `build().expect(..)` at start-up says what to fix.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
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

impl std::fmt::Debug for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Why the schema registry refused a registration, or could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The new version breaks what its compatibility mode asks for.
    #[error(
        "version {new_version} of `{event_type}` is not {direction} compatible with version {old_version} of `{old_type}`: {}",
        list(problems)
    )]
    Incompatible {
        /// The type being registered (for a backward check, what the old type is read as).
        event_type: String,
        /// The version being registered.
        new_version: u32,
        /// The registered type compared with (another name when the chain renames it).
        old_type: String,
        /// Its version.
        old_version: u32,
        /// `backward` (the new version cannot read stored events of the old one) or `forward`
        /// (the old version cannot read events of the new one).
        direction: &'static str,
        /// What breaks, each with an example.
        problems: Vec<Incompatibility>,
    },
    /// The type's schema changed while its version did not.
    #[error(
        "the schema of `{event_type}` differs from the one registered for version {version} on {registered_at}; \
         raise the event type's version (`#[event(version = N)]`) and add an upcaster if stored events need one"
    )]
    Changed {
        /// The type.
        event_type: String,
        /// The version registered with another schema.
        version: u32,
        /// When the other schema was registered (RFC 3339).
        registered_at: String,
    },
    /// The store already holds a newer version of the type than this build knows.
    #[error(
        "the store holds version {stored} of `{event_type}`, this build's is version {current}: \
         an older build is reading a store a newer one has written"
    )]
    Newer {
        /// The type.
        event_type: String,
        /// The newest version in the store.
        stored: u32,
        /// This build's version.
        current: u32,
    },
    /// The chain is for another version than the event type.
    #[error("the chain reads events at version {chain}, the event type is at version {event}")]
    ChainVersion {
        /// The chain's current version.
        chain: u32,
        /// The event type's.
        event: u32,
    },
    /// The generated schema could not be used.
    #[error("the event type's JSON Schema cannot be used: {0}")]
    Schema(String),
    /// A record of the registry could not be read.
    #[error("the schema registry's record at version {version} of `$allframe-schemas` cannot be read: {reason}")]
    Corrupt {
        /// Its version in the registry's stream.
        version: u64,
        /// Why.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] allframe_cqrs_core::Error),
}

/// One way a new schema breaks an old one, found on an example event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incompatibility {
    /// Where in the payload (a JSON pointer, `` for the whole payload).
    pub path: String,
    /// What breaks there.
    pub message: String,
    /// An example payload that shows it.
    pub example: String,
}

impl std::fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.path.is_empty() { "/" } else { &self.path };
        write!(f, "at `{path}`: {} (for example {})", self.message, self.example)
    }
}

fn list(problems: &[Incompatibility]) -> String {
    let shown: Vec<String> = problems.iter().take(3).map(ToString::to_string).collect();
    let more = problems.len().saturating_sub(3);
    if more > 0 { format!("{}; and {more} more", shown.join("; ")) } else { shown.join("; ") }
}
