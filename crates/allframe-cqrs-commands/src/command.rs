//! What a command is: [`Command`], the refusals its handler may give ([`DomainError`]), how one
//! dispatch is told apart from another ([`CommandOptions`]), and what it produced ([`Outcome`]).

use std::collections::BTreeMap;

use allframe_cqrs_core::EventId;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ValidationErrors;

/// A request to change the state of one stream (an aggregate), or to do something else a
/// plain handler decides.
///
/// The `#[command(...)]` attribute writes this impl: `name = "..."` names it (default: the
/// type's name), `stream = "account-{id}"` or a `#[command(stream)]` field names its stream,
/// `error = MyError` its refusal type, `validate` runs the type's `garde::Validate` before any
/// state is loaded, and `schema` gives its JSON Schema.
pub trait Command: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stable name: by-name (JSON) dispatch, errors, logs and idempotency records use it.
    const NAME: &'static str;

    /// What the handler may refuse the command with (a business rule, typed).
    type Error: DomainError;

    /// The stream the command acts on (the aggregate's id).
    fn stream_id(&self) -> String;

    /// Field checks run before any state is loaded; the default accepts everything.
    fn validate(&self) -> Result<(), ValidationErrors> {
        Ok(())
    }

    /// The command's JSON Schema, when it has one (`#[command(schema)]` with `schemars`):
    /// by-name dispatch checks JSON against it (feature `json-schema`), and the bus hands it
    /// out for API documentation.
    fn json_schema() -> Option<serde_json::Value>
    where
        Self: Sized,
    {
        None
    }
}

/// A handler's refusal: a typed business error with a stable code an API can map.
///
/// The code and the HTTP status go into [`DispatchError`](crate::DispatchError)'s serialized
/// form, so an HTTP layer answers without a `match` of its own.
pub trait DomainError: std::error::Error + Serialize + Send + Sync + 'static {
    /// A stable, machine-readable code (`insufficient_funds`); default `rejected`.
    fn code(&self) -> &'static str {
        "rejected"
    }

    /// The HTTP status an API answers with; default 422 (Unprocessable Content).
    fn http_status(&self) -> u16 {
        422
    }
}

/// The refusal type of a command whose handler never refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NoError {}

impl std::fmt::Display for NoError {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl std::error::Error for NoError {}

impl DomainError for NoError {}

/// How one dispatch is identified and what it carries into the events it produces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommandOptions {
    /// A key that makes retries of this dispatch idempotent: a repeated key answers with the
    /// first dispatch's outcome, durably, on every backend.
    pub idempotency_key: Option<String>,
    /// The command's id, the causation id of every event it produces (default: a new id).
    pub command_id: Option<EventId>,
    /// The request's correlation id (default: the command's id).
    pub correlation_id: Option<EventId>,
    /// Headers added to every event the command produces.
    pub headers: BTreeMap<String, String>,
}

impl CommandOptions {
    /// No key, new ids, no headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the dispatch idempotent under `key`.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the command's id.
    pub fn command_id(mut self, id: EventId) -> Self {
        self.command_id = Some(id);
        self
    }

    /// Sets the request's correlation id.
    pub fn correlation_id(mut self, id: EventId) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Adds a header to every event the command produces.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }
}

/// What a dispatch did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Outcome {
    /// The command's name.
    pub command: &'static str,
    /// The command's id (the events' causation id); for a replayed outcome, the first
    /// dispatch's.
    pub command_id: EventId,
    /// The stream the events went to.
    pub stream_id: String,
    /// How many events the command produced (0: it changed nothing).
    pub events: u64,
    /// The stream's version after the command's events (its last event's version).
    pub stream_version: u64,
    /// The global position of the first event, 0 when there is none.
    pub first_position: u64,
    /// The global position of the last event, 0 when there is none.
    pub last_position: u64,
    /// Whether this is the stored outcome of an earlier dispatch with the same idempotency
    /// key (nothing ran again).
    pub replayed: bool,
    /// How many times the command was decided again after a conflict.
    pub conflict_retries: u32,
}
