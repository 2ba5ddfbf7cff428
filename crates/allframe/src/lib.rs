#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The core's user-facing API, listed (as sqlx's facade does) so that nothing meant for backend
// authors (`CommitSignal`, the `retry` rule) leaks into applications; backend authors depend on
// `allframe-cqrs-core` directly.
pub use allframe_cqrs_core::{
    Aggregate, AppendResult, BackendStats, BoxError, Bytes, Capabilities, Codec, CommandError, DEFAULT_PAGE_SIZE,
    Durability, DynBackend, Envelope, Error, Event, EventData, EventId, EventStoreBackend, ExpectedVersion, Health,
    HealthReason, HealthStatus, Lease, Leases, Limits, LoadedAggregate, Metadata, MetadataDecodeError, NewEvent,
    ParseEventIdError, Projection, RawSubscription, RecordedEvent, Result, Snapshot, SnapshotPolicy, StartFrom,
    StreamId, Subscription, SubscriptionHandle, SubscriptionOptions, Timestamp, Undecodable, async_trait,
    is_system_stream, metric_names, migrate, read, schema_version,
};

/// Any backend with every store operation counted and timed through the `metrics` facade
/// (feature `cqrs-metrics`; the names are in [`metric_names`]).
#[cfg(feature = "cqrs-metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "cqrs-metrics")))]
pub use allframe_cqrs_core::Metered;

/// The Prometheus endpoint: `/metrics` and `/health` over HTTP (feature `prometheus`).
#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
pub use allframe_prometheus as prometheus;

/// Where an event is stored, as [`EventStoreBackend::find_event`] names it.
pub use allframe_cqrs_core::retry::StoredAt;

/// The typed store over any backend (with feature `cqrs`, the memory backend's alias below
/// names it with `InMemoryBackend` as the default backend).
#[cfg(not(feature = "cqrs"))]
pub use allframe_cqrs_core::EventStore;

/// The in-memory backend (feature `cqrs`).
#[cfg(feature = "cqrs")]
#[cfg_attr(docsrs, doc(cfg(feature = "cqrs")))]
pub mod memory {
    pub use allframe_backend_memory::{EventStore, InMemoryBackend, InMemoryEventStore};
}

#[cfg(feature = "cqrs")]
#[cfg_attr(docsrs, doc(cfg(feature = "cqrs")))]
#[doc(inline)]
pub use allframe_backend_memory::{EventStore, InMemoryBackend, InMemoryEventStore};

/// The embedded durable AllSource backend (feature `cqrs-allsource`).
#[cfg(feature = "cqrs-allsource")]
#[cfg_attr(docsrs, doc(cfg(feature = "cqrs-allsource")))]
pub mod allsource {
    pub use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig, SyncMode};
}

/// The PostgreSQL backend (feature `cqrs-postgres`).
#[cfg(feature = "cqrs-postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "cqrs-postgres")))]
pub mod postgres {
    pub use allframe_backend_postgres::{
        DEFAULT_GROUPS_IN_FLIGHT, DEFAULT_IDLE_CHECK_AFTER, DEFAULT_IDLE_CHECK_TIMEOUT,
        DEFAULT_LISTENER_CHECK_INTERVAL, DEFAULT_LISTENER_CHECK_TIMEOUT, DEFAULT_SCHEMA, DEFAULT_TCP_KEEPALIVE_IDLE,
        DEFAULT_VISIBILITY_WAIT, HorizonStatus, MAX_EVENTS_PER_TRANSACTION, OpenTransaction, PayloadEncoding,
        PostgresBackend, PostgresBuilder, SCHEMA_VERSION,
    };
}

/// The RocksDB backend (feature `cqrs-rocksdb`).
#[cfg(feature = "cqrs-rocksdb")]
#[cfg_attr(docsrs, doc(cfg(feature = "cqrs-rocksdb")))]
pub mod rocksdb {
    pub use allframe_backend_rocksdb::{Compression, RocksDbBackend, RocksDbConfig};
}

#[cfg(feature = "cqrs-allsource")]
#[cfg_attr(docsrs, doc(cfg(feature = "cqrs-allsource")))]
#[doc(inline)]
pub use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig, SyncMode};

#[cfg(feature = "cqrs-postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "cqrs-postgres")))]
#[doc(inline)]
pub use allframe_backend_postgres::{PayloadEncoding, PostgresBackend, PostgresBuilder};

#[cfg(feature = "cqrs-rocksdb")]
#[cfg_attr(docsrs, doc(cfg(feature = "cqrs-rocksdb")))]
#[doc(inline)]
pub use allframe_backend_rocksdb::{RocksDbBackend, RocksDbConfig};

pub mod backends;

/// The application layer in one import, as the AllFrame 0.1 crates had it:
/// `use allframe::cqrs::*;` (feature `cqrs`).
///
/// The store's API (events, aggregates, the typed `EventStore` over the memory backend), the
/// command and query buses (`allframe-cqrs-commands`), the projection registry
/// (`allframe-cqrs-projections`), and the derives and attributes (`#[derive(Event)]`,
/// `#[command]`, `#[command_handler]`).
#[cfg(feature = "cqrs")]
#[cfg_attr(docsrs, doc(cfg(feature = "cqrs")))]
pub mod cqrs {
    pub use allframe_backend_memory::{EventStore, InMemoryBackend, InMemoryEventStore};
    pub use allframe_cqrs_commands::{
        AggregateHandler, Command, CommandBus, CommandBusBuilder, CommandOptions, Context, Decide, DispatchError,
        DomainError, ErasedRejection, ErrorCode, FieldError, Handler, NoError, Outcome, Plain, Query, QueryBus,
        QueryBusBuilder, QueryContext, QueryError, QueryHandler, RegistrationError, State, StateMap, ValidationErrors,
        decide, idempotency, plain,
    };
    /// For read models that override `ReadModel::commit`, and other async traits.
    pub use allframe_cqrs_core::async_trait;
    pub use allframe_cqrs_core::{
        Aggregate, AppendResult, BoxError, Codec, CommandError, DynBackend, Envelope, Error, Event, EventData, EventId,
        EventStoreBackend, ExpectedVersion, LoadedAggregate, Metadata, Projection, SnapshotPolicy, StartFrom,
    };
    pub use allframe_cqrs_macros::{Event, command, command_handler};
    /// The projection registry's other items (`Progress`, dead-letter streams).
    pub use allframe_cqrs_projections as projections;
    pub use allframe_cqrs_projections::{
        CancelToken, DeadLetter, FailurePolicy, GiveUp, IndexedTable, ProjectionError, ProjectionRegistry,
        ProjectionState, ProjectionStatus, ReadModel, ReadModelHandle, Replay, ReplayReport, Resume, RetryReport,
        RunOptions, TransactionalReadModel,
    };
    /// Sagas' other items (their records and streams, an instance's progress).
    #[cfg(feature = "cqrs-sagas")]
    pub use allframe_cqrs_sagas as sagas;
    #[cfg(feature = "cqrs-sagas")]
    pub use allframe_cqrs_sagas::{
        Choreography, Correlation, Reaction, Retry, Saga, SagaDefinition, SagaError, SagaOrchestrator, SagaState, Step,
        StepContext, StepError,
    };
    /// Event versioning's other items (the registry's stream and record types, chain steps).
    pub use allframe_cqrs_versioning as versioning;
    pub use allframe_cqrs_versioning::{
        Chain, ChainError, ChainShape, Compatibility, RegisteredSchema, RegistryError, SchemaRegistry, Upcasters,
        Upcasting,
    };
    /// Registering event schemas with compatibility checks (`schemars` + `jsonschema`).
    #[cfg(feature = "cqrs-schema-registry")]
    pub use allframe_cqrs_versioning::{Registered, SchemaRegistration};

    /// The seed's "Step 2: add AllSource (zero code changes)": with `use allframe::cqrs::*`,
    /// the durable backends are in scope too.
    #[cfg(feature = "cqrs-allsource")]
    pub use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig, SyncMode};
    #[cfg(feature = "cqrs-postgres")]
    pub use allframe_backend_postgres::{PgLeases, PgTransaction, PostgresBackend};
    #[cfg(feature = "cqrs-rocksdb")]
    pub use allframe_backend_rocksdb::{RocksDbBackend, RocksDbConfig};

    #[doc(hidden)]
    pub use allframe_cqrs_commands::__private;
}

/// Everything an application usually needs, in one import: `use allframe::prelude::*;`.
pub mod prelude {
    pub use allframe_cqrs_core::{
        Aggregate, AppendResult, Codec, CommandError, Envelope, Error, Event, EventData, EventId, EventStoreBackend,
        ExpectedVersion, LoadedAggregate, Metadata, Projection, SnapshotPolicy, StartFrom,
    };

    #[cfg(feature = "cqrs")]
    pub use allframe_backend_memory::{EventStore, InMemoryBackend, InMemoryEventStore};

    #[cfg(not(feature = "cqrs"))]
    pub use allframe_cqrs_core::EventStore;

    #[cfg(feature = "cqrs-allsource")]
    pub use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig};

    #[cfg(feature = "cqrs-postgres")]
    pub use allframe_backend_postgres::PostgresBackend;

    #[cfg(feature = "cqrs-rocksdb")]
    pub use allframe_backend_rocksdb::{RocksDbBackend, RocksDbConfig};
}
