//! # AllFrame CQRS commands
//!
//! The layer an application writes every day, on top of the store: a [`CommandBus`] that
//! sends each command to its one handler, and a [`QueryBus`] for read models.
//!
//! One dispatch, whatever the backend:
//!
//! 1. the command is validated ([`Command::validate`], field-level [`ValidationErrors`]),
//!    before anything is loaded;
//! 2. with an idempotency key ([`CommandOptions::idempotency_key`]) the first dispatch's
//!    [`Outcome`] is looked up, and returned if there is one (see [`idempotency`]);
//! 3. an [`AggregateHandler`] gets the aggregate's state (snapshot plus events, or the
//!    aggregate cache) and decides events or a refusal; a plain [`Handler`] decides without
//!    state;
//! 4. the events get the command's id as causation, the request's correlation id and the
//!    handler's headers, and are appended expecting the version that was loaded;
//! 5. after a conflict the command is decided again, up to a limit; then
//!    [`DispatchError::Conflict`];
//! 6. the snapshot policy and the aggregate cache are applied.
//!
//! Every error is one [`DispatchError`], with a stable code and an HTTP status each.
//! Handlers take shared services from the [`Context`] ([`State`]), registered once on the
//! builder; a wiring mistake (two handlers for one command) is a [`RegistrationError`] from
//! [`CommandBusBuilder::build`], never a panic.
//!
//! The idempotency records are ordinary events with derived ids, so they are durable, copied
//! by `allframe copy`, and work the same on every backend (contract points 9 and 13).

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod bus;
mod cache;
mod command;
mod context;
mod error;
mod handler;
pub mod idempotency;
#[cfg(feature = "json-schema")]
mod json;
mod query;
mod registry;
mod table;

pub use bus::{CommandBus, CommandBusBuilder};
pub use command::{Command, CommandOptions, DomainError, NoError, Outcome};
pub use context::{Context, State, StateMap};
pub use error::{DispatchError, ErasedRejection, ErrorCode, FieldError, RegistrationError, ValidationErrors};
pub use handler::{AggregateHandler, Decide, Handler, Plain, decide, plain};
pub use query::{Query, QueryBus, QueryBusBuilder, QueryContext, QueryError, QueryHandler};

/// What the expansions of `#[command]` and `#[command_handler]` refer to.
#[doc(hidden)]
pub mod __private {
    pub use crate::registry::Registration;
    pub use allframe_cqrs_core::async_trait;
    #[cfg(feature = "validation")]
    pub use garde;
    pub use inventory;
    pub use serde_json;

    /// The JSON Schema of `T` (`#[command(schema)]`).
    #[cfg(feature = "json-schema")]
    pub fn schema_of<T: schemars::JsonSchema>() -> Option<serde_json::Value> {
        serde_json::to_value(schemars::schema_for!(T)).ok()
    }
}
