//! The schema registry kept in the store itself, as events of the library's stream
//! [`SCHEMAS_STREAM`], so that it travels with the data (copies, backups, restores) and works
//! the same on every backend. Each (event type, schema version) is registered once, with its
//! JSON Schema and compatibility mode; the chain's shape is recorded beside them. Reading it
//! needs no JSON Schema crate; registering (with its compatibility checks) is in
//! `register.rs`, behind the `schema-registry` feature.

use std::collections::BTreeMap;

use allframe_cqrs_core::{Error, EventId, EventStoreBackend, ExpectedVersion, NewEvent, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::RegistryError;
use crate::shape::ChainShape;

/// The library stream that holds the registry.
pub const SCHEMAS_STREAM: &str = "$allframe-schemas";
/// The type of a record registering one (event type, version).
pub const SCHEMA_REGISTERED: &str = "allframe.SchemaRegistered";
/// The type of a record of the chain's shape.
pub const CHAIN_RECORDED: &str = "allframe.ChainRecorded";

/// Which changes registering a new version of a type accepts, as in schema registries for
/// message brokers; chosen per type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compatibility {
    /// The new version reads every stored event of the last one (through the chain's upcasters):
    /// what an event store needs, since old events are read forever. The default.
    #[default]
    Backward,
    /// The last version reads events of the new one: older instances still running during a
    /// rolling deployment read what newer ones write.
    Forward,
    /// Both.
    Full,
    /// No check.
    None,
}

impl Compatibility {
    /// The name stored and shown (`backward`, `forward`, `full`, `none`).
    pub fn name(self) -> &'static str {
        match self {
            Compatibility::Backward => "backward",
            Compatibility::Forward => "forward",
            Compatibility::Full => "full",
            Compatibility::None => "none",
        }
    }

    /// Whether the new version must read the last one's events.
    pub fn backward(self) -> bool {
        matches!(self, Compatibility::Backward | Compatibility::Full)
    }

    /// Whether the last version must read the new one's events.
    pub fn forward(self) -> bool {
        matches!(self, Compatibility::Forward | Compatibility::Full)
    }
}

/// One registered (event type, schema version).
#[derive(Clone, Debug, PartialEq)]
pub struct RegisteredSchema {
    /// The stored event type.
    pub event_type: String,
    /// Its schema version.
    pub version: u32,
    /// The mode its registration was checked with, and later versions are by default.
    pub compatibility: Compatibility,
    /// The JSON Schema of its payload (with the JSON codec).
    pub schema: Value,
    /// When it was registered (the record's timestamp).
    pub registered_at: Timestamp,
}

/// The stored form of a [`SCHEMA_REGISTERED`] record.
#[derive(Serialize, Deserialize)]
pub(crate) struct SchemaRecord {
    pub(crate) event_type: String,
    pub(crate) version: u32,
    pub(crate) compatibility: Compatibility,
    pub(crate) schema: Value,
}

/// The registry as read from a store at one moment.
#[derive(Clone, Debug, Default)]
pub struct SchemaRegistry {
    schemas: BTreeMap<String, BTreeMap<u32, RegisteredSchema>>,
    chain: Option<(ChainShape, Timestamp)>,
    /// The version of [`SCHEMAS_STREAM`] read.
    head: u64,
}

impl SchemaRegistry {
    /// Reads the registry of the store behind `backend` (empty when nothing was registered).
    ///
    /// # Errors
    ///
    /// The store's error, or [`RegistryError::Corrupt`] for a record it cannot read.
    pub async fn load<B: EventStoreBackend + ?Sized>(backend: &B) -> Result<Self, RegistryError> {
        let mut registry = SchemaRegistry::default();
        loop {
            let page = backend.read_stream(SCHEMAS_STREAM, registry.head, 256).await?;
            let Some(last) = page.last() else { break };
            let last = last.version;
            for record in &page {
                let corrupt = |reason: String| RegistryError::Corrupt { version: record.version, reason };
                match &*record.event_type {
                    SCHEMA_REGISTERED => {
                        let stored: SchemaRecord =
                            serde_json::from_slice(&record.payload).map_err(|e| corrupt(e.to_string()))?;
                        let entry = RegisteredSchema {
                            event_type: stored.event_type.clone(),
                            version: stored.version,
                            compatibility: stored.compatibility,
                            schema: stored.schema,
                            registered_at: record.metadata.timestamp,
                        };
                        registry.schemas.entry(stored.event_type).or_default().entry(stored.version).or_insert(entry);
                    }
                    CHAIN_RECORDED => {
                        let shape: ChainShape =
                            serde_json::from_slice(&record.payload).map_err(|e| corrupt(e.to_string()))?;
                        registry.chain = Some((shape, record.metadata.timestamp));
                    }
                    other => return Err(corrupt(format!("unknown record type `{other}`"))),
                }
            }
            registry.head = last;
        }
        Ok(registry)
    }

    /// The registered event types, by name.
    pub fn event_types(&self) -> impl Iterator<Item = &str> {
        self.schemas.keys().map(String::as_str)
    }

    /// Every registered version of `event_type`, oldest first.
    pub fn versions(&self, event_type: &str) -> impl Iterator<Item = &RegisteredSchema> {
        self.schemas.get(event_type).into_iter().flat_map(|versions| versions.values())
    }

    /// One registered version.
    pub fn get(&self, event_type: &str, version: u32) -> Option<&RegisteredSchema> {
        self.schemas.get(event_type)?.get(&version)
    }

    /// The newest registered version of `event_type`.
    pub fn latest(&self, event_type: &str) -> Option<&RegisteredSchema> {
        self.schemas.get(event_type)?.values().next_back()
    }

    /// The newest registered version of `event_type` below `version`.
    pub fn latest_before(&self, event_type: &str, version: u32) -> Option<&RegisteredSchema> {
        self.schemas.get(event_type)?.range(..version).next_back().map(|(_, schema)| schema)
    }

    /// The last recorded shape of the application's chain, and when it was recorded.
    pub fn chain(&self) -> Option<(&ChainShape, Timestamp)> {
        self.chain.as_ref().map(|(shape, at)| (shape, *at))
    }

    /// Records `shape` unless it is the last one recorded; whether it was recorded.
    ///
    /// # Errors
    ///
    /// As [`SchemaRegistry::load`].
    pub async fn record_chain<B: EventStoreBackend + ?Sized>(
        backend: &B,
        shape: &ChainShape,
    ) -> Result<bool, RegistryError> {
        let appended = append_records(backend, |registry| {
            if registry.chain().is_some_and(|(recorded, _)| recorded == shape) {
                return Ok(Vec::new());
            }
            Ok(vec![chain_record(shape)?])
        })
        .await?;
        Ok(appended > 0)
    }
}

/// The record of `shape`, with an id derived from what it says (a retried append of it is
/// idempotent).
pub(crate) fn chain_record(shape: &ChainShape) -> Result<NewEvent, RegistryError> {
    let payload = serde_json::to_vec(shape).map_err(|e| RegistryError::Schema(e.to_string()))?;
    let id = EventId::derived("allframe.chain-recorded", &String::from_utf8_lossy(&payload), 0);
    Ok(NewEvent::new(CHAIN_RECORDED, payload).with_event_id(id))
}

/// The record registering `record`, with an id derived from its type, version and schema.
#[cfg(feature = "schema-registry")]
pub(crate) fn schema_record(record: &SchemaRecord) -> Result<NewEvent, RegistryError> {
    let payload = serde_json::to_vec(record).map_err(|e| RegistryError::Schema(e.to_string()))?;
    let id = EventId::derived("allframe.schema-registered", &String::from_utf8_lossy(&payload), 0);
    Ok(NewEvent::new(SCHEMA_REGISTERED, payload).with_event_id(id))
}

/// Appends what `decide` makes of the registry as stored, expecting the version it read: when
/// another process registered something in between, the registry is read again and `decide`
/// runs again on it, so two registrations never both succeed on what only one saw. Returns how
/// many records were appended.
pub(crate) async fn append_records<B: EventStoreBackend + ?Sized>(
    backend: &B,
    mut decide: impl FnMut(&SchemaRegistry) -> Result<Vec<NewEvent>, RegistryError>,
) -> Result<usize, RegistryError> {
    loop {
        let registry = SchemaRegistry::load(backend).await?;
        let records = decide(&registry)?;
        if records.is_empty() {
            return Ok(0);
        }
        let count = records.len();
        let expected =
            if registry.head == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(registry.head) };
        match backend.append(SCHEMAS_STREAM, expected, records).await {
            Ok(_) => return Ok(count),
            // Another process appended first; a record with our id is one with our content
            // (ids are derived from it). Read again and decide on what is there now.
            Err(Error::Conflict { .. } | Error::DuplicateEventId { .. }) => continue,
            Err(error) => return Err(error.into()),
        }
    }
}
