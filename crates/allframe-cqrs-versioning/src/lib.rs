//! # AllFrame CQRS event versioning
//!
//! Events are stored forever and their types change. Each stored event carries the schema
//! version of its type (`allframe_cqrs_core::schema_version`); [`Upcasters`] declare, per
//! (event type, version), how the stored form of version n becomes version n + 1: a change of
//! its JSON, a rename, a split, a drop, or a typed conversion for binary codecs.
//! [`Upcasters::build`] checks the whole chain at start-up (a duplicate, a gap, a step beyond
//! the current version or into a type the event does not read is a [`ChainError`]); the
//! resulting [`Chain`] turns one stored event into what it stands for now, and [`Upcasting`]
//! puts it under every read of a backend: a typed store, command bus, subscription, projection
//! or replay over it reads events of older versions as the current ones.
//!
//! The store keeps a [`SchemaRegistry`] of its own (in the library stream [`SCHEMAS_STREAM`]):
//! the JSON Schema of each (event type, version) and the shape of the chain, so that copies
//! and tools carry them. Registering (`SchemaRegistration`, feature `schema-registry`:
//! `schemars` and `jsonschema`) checks each new version against the last in the type's
//! [`Compatibility`] mode.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod backend;
mod chain;
mod copy;
mod error;
mod json_edit;
#[cfg(feature = "schema-registry")]
mod register;
mod registry;
#[cfg(feature = "schema-registry")]
mod samples;
mod shape;
mod upcasters;

pub use backend::{DROPPED_STREAM, Upcasting};
pub use chain::{Chain, Upcasted};
pub use copy::copy_upcast;
pub use error::{ChainError, Incompatibility, RegistryError};
#[cfg(feature = "schema-registry")]
pub use register::{Registered, SchemaRegistration, event_schemas, validate_stored};
pub use registry::{
    CHAIN_RECORDED, Compatibility, RegisteredSchema, SCHEMA_REGISTERED, SCHEMAS_STREAM, SchemaRegistry,
};
pub use shape::{ChainShape, Step};
pub use upcasters::Upcasters;
#[cfg(feature = "schema-registry")]
pub use {jsonschema, schemars};
