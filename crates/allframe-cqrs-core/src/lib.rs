//! # AllFrame CQRS core
//!
//! The contract of AllFrame CQRS: typed events and aggregates, the byte-level records every
//! backend stores, one error type, the [`EventStoreBackend`] trait, and the typed
//! [`EventStore`] that sits on top of any backend. No storage and no I/O live here.
//!
//! Third-party backends depend on this crate only and prove themselves with
//! `allframe-cqrs-testkit`.
//!
//! Layering:
//!
//! * [`EventStore<E, B>`](EventStore) encodes typed events `E` with a [`Codec`] into
//!   [`NewEvent`]s and decodes [`RecordedEvent`]s back into [`Envelope`]s;
//! * [`EventStoreBackend`] stores bytes: streams with contiguous versions, a global
//!   position, snapshots, and a commit signal for subscriptions;
//! * [`RawSubscription`] and [`read`] give catch-up subscriptions and paged or streamed reads
//!   on top of any backend.
//!
//! The contract every backend keeps is stated on [`EventStoreBackend`].

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod backend;
pub mod checkpoint;
mod codec;
mod error;
mod event;
pub mod event_name;
mod health;
mod lease;
#[cfg(feature = "metrics")]
mod metered;
pub mod metric_names;
pub mod migrate;
pub mod read;
pub mod retry;
pub mod schema_version;
mod store;
mod subscription;
mod transaction;
mod types;

pub use backend::{CommitSignal, DEFAULT_PAGE_SIZE, DynBackend, EventStoreBackend};
pub use codec::Codec;
pub use error::{BoxError, Error, Result};
pub use event::{Aggregate, Envelope, Event, EventData, Projection};
pub use health::{Health, HealthReason, HealthStatus};
pub use lease::{Lease, Leases};
#[cfg(feature = "metrics")]
pub use metered::Metered;
pub use store::{CommandError, EventStore, LoadedAggregate, SnapshotPolicy, SubscriptionHandle, Undecodable};
pub use subscription::{RawSubscription, StartFrom, Subscription, SubscriptionOptions};
pub use transaction::CheckpointTransactions;
pub use types::{
    AppendResult, BackendStats, Capabilities, Durability, EventId, ExpectedVersion, Limits, Metadata,
    MetadataDecodeError, NewEvent, ParseEventIdError, RecordedEvent, SYSTEM_STREAM_PREFIX, Snapshot, StreamId,
    Timestamp, is_system_stream,
};

/// Re-exported so backends implement [`EventStoreBackend`] with the same macro version.
pub use async_trait::async_trait;
/// Re-exported for backends and callers that build payloads.
pub use bytes::Bytes;
