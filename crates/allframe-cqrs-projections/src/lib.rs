//! # AllFrame CQRS projections
//!
//! Read models kept up to date by the library, on any backend:
//!
//! - a [`ReadModel`] declares its name, version and the event types it handles; a
//!   [`ProjectionRegistry`] runs each as a task that reads the log after its position and
//!   waits for commits once caught up, with start, stop, pause and [`ProjectionStatus`]
//!   (state, position, lag in events and in time, events per second);
//! - where it starts ([`Resume`]): an in-memory model replays from position 0 at each start;
//!   a model kept elsewhere resumes after its durable checkpoint (contract point 14,
//!   compare-and-set, so two runners that overlap cannot both move it), at-least-once;
//! - exactly-once where the read model lives with the store: a [`TransactionalReadModel`]
//!   writes in the transaction that moves its checkpoint (PostgreSQL), and with leases
//!   ([`ProjectionRegistry::with_leases`]) each runs in one application instance at a time;
//! - a [`FailurePolicy`] per projection for an event that does not decode, or that the
//!   handler refuses or panics on: stop, retry with backoff, or a [`DeadLetter`] stored in the
//!   log, listed and retried by the operator; a failure never disappears without a trace;
//! - rebuilds: in place ([`ProjectionRegistry::rebuild`]), or beside the live model
//!   ([`ProjectionRegistry::rebuild_beside`]) while queries read the old one until the new one
//!   has caught up;
//! - [`ReadModelHandle`]: queries share the model without copying it, and
//!   [`read_at_least`](ReadModelHandle::read_at_least) a command's position reads their own
//!   writes;
//! - [`IndexedTable`]: a read model's rows with the lookup keys it declares, kept in step;
//! - [`Replay`]: a range of the log, filtered, into any handler, rate-limited or not, with
//!   [`Progress`] and a [`CancelToken`].
//!
//! Everything it stores (checkpoints, dead letters) goes through the backend contract, so it
//! works the same on every backend and `allframe copy` copies it. Guide: `docs/PROJECTIONS.md`.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod dead_letter;
mod error;
mod handle;
mod health;
mod lock;
mod metrics;
mod policy;
mod read_model;
mod registry;
mod replay;
mod runner;
mod status;
mod table;
mod transactional;

pub use dead_letter::DeadLetter;
pub use error::ProjectionError;
pub use handle::ReadModelHandle;
pub use policy::{FailurePolicy, GiveUp};
pub use read_model::{ReadModel, Resume, checkpoint_name};
pub use registry::{ProjectionRegistry, RetryReport};
pub use replay::{CancelToken, Progress, Replay, ReplayReport};
pub use runner::RunOptions;
pub use status::{ProjectionState, ProjectionStatus};
pub use table::IndexedTable;
pub use transactional::TransactionalReadModel;
