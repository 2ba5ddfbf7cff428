#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use allframe_cqrs_core::*;

/// The in-memory backend (feature `cqrs`).
#[cfg(feature = "cqrs")]
#[cfg_attr(docsrs, doc(cfg(feature = "cqrs")))]
pub mod memory {
    pub use allframe_backend_memory::*;
}

#[cfg(feature = "cqrs")]
#[cfg_attr(docsrs, doc(cfg(feature = "cqrs")))]
#[doc(inline)]
pub use allframe_backend_memory::{EventStore, InMemoryBackend, InMemoryEventStore};

/// Everything an application usually needs, in one import: `use allframe::prelude::*;`.
pub mod prelude {
    pub use allframe_cqrs_core::{
        Aggregate, AppendResult, Codec, CommandError, Envelope, Error, Event, EventData, EventId,
        EventStoreBackend, ExpectedVersion, LoadedAggregate, Metadata, Projection, SnapshotPolicy, StartFrom,
    };

    #[cfg(feature = "cqrs")]
    pub use allframe_backend_memory::{EventStore, InMemoryBackend, InMemoryEventStore};

    #[cfg(not(feature = "cqrs"))]
    pub use allframe_cqrs_core::EventStore;
}
