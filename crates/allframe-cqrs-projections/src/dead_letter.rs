//! Dead letters: events a projection gave up on, stored as ordinary events in the library's
//! stream `$allframe-dead-letters-NAME` (one per projection), so they are durable, copied by
//! `allframe copy` and the same on every backend.
//!
//! A record's id is derived from the projection, the event's position and how many records
//! that position already has, so recording it again after a crash is idempotent (contract
//! point 9), while an event that fails again after it was resolved gets a new record.

use std::collections::BTreeMap;

use allframe_cqrs_core::{EventId, EventStoreBackend, ExpectedVersion, NewEvent, RecordedEvent, Result};
use serde::{Deserialize, Serialize};

/// The event type of a dead letter.
pub const DEAD_LETTER_EVENT_TYPE: &str = "allframe.DeadLetter";
/// The event type of a dead letter's resolution (its event was applied on a retry).
pub const RESOLVED_EVENT_TYPE: &str = "allframe.DeadLetterResolved";

/// The stream holding projection `name`'s dead letters.
pub fn stream(name: &str) -> String {
    format!("{}dead-letters-{name}", allframe_cqrs_core::SYSTEM_STREAM_PREFIX)
}

/// An event a projection could not apply, with why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The projection.
    pub projection: String,
    /// The version of the projection's logic that failed.
    pub version: u32,
    /// The event's global position.
    pub position: u64,
    /// The event's stream.
    pub stream_id: String,
    /// Its version in the stream.
    pub stream_version: u64,
    /// Its stored type.
    pub event_type: String,
    /// Its id.
    pub event_id: String,
    /// The last failure's message.
    pub reason: String,
    /// How many times it was tried.
    pub attempts: u32,
    /// Which record of this position it is (0 for the first).
    pub occurrence: u64,
}

impl DeadLetter {
    /// The event this dead letter is about, read from the log (`None` if it is not there).
    pub async fn event<B: EventStoreBackend + ?Sized>(&self, backend: &B) -> Result<Option<RecordedEvent>> {
        let page = backend.read_all(self.position.saturating_sub(1), 1).await?;
        Ok(page.into_iter().find(|record| record.position == self.position))
    }
}

#[derive(Serialize, Deserialize)]
struct Resolution {
    position: u64,
    occurrence: u64,
}

/// The dead letters of one projection, as read from its stream.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Per position: how many records it has, and its latest record if unresolved.
    by_position: BTreeMap<u64, (u64, Option<DeadLetter>)>,
}

impl Ledger {
    pub(crate) async fn load<B: EventStoreBackend + ?Sized>(backend: &B, name: &str) -> Result<Self> {
        let mut ledger = Ledger::default();
        for record in backend.get_events(&stream(name)).await? {
            ledger.absorb(&record);
        }
        Ok(ledger)
    }

    fn absorb(&mut self, record: &RecordedEvent) {
        match &*record.event_type {
            DEAD_LETTER_EVENT_TYPE => {
                if let Ok(letter) = serde_json::from_slice::<DeadLetter>(&record.payload) {
                    let entry = self.by_position.entry(letter.position).or_default();
                    entry.0 = entry.0.max(letter.occurrence + 1);
                    entry.1 = Some(letter);
                }
            }
            RESOLVED_EVENT_TYPE => {
                if let Ok(resolution) = serde_json::from_slice::<Resolution>(&record.payload)
                    && let Some(entry) = self.by_position.get_mut(&resolution.position)
                    && entry.1.as_ref().is_some_and(|letter| letter.occurrence == resolution.occurrence)
                {
                    entry.1 = None;
                }
            }
            _ => {}
        }
    }

    /// Whether `position` has a dead letter not yet resolved (so failing on it again adds none).
    pub(crate) fn is_open(&self, position: u64) -> bool {
        self.by_position.get(&position).is_some_and(|entry| entry.1.is_some())
    }

    pub(crate) fn open(&self) -> Vec<DeadLetter> {
        self.by_position.values().filter_map(|entry| entry.1.clone()).collect()
    }

    pub(crate) fn open_count(&self) -> u64 {
        self.by_position.values().filter(|entry| entry.1.is_some()).count() as u64
    }

    /// Stores a dead letter (its `occurrence` set here) and notes it.
    pub(crate) async fn record<B: EventStoreBackend + ?Sized>(
        &mut self,
        backend: &B,
        mut letter: DeadLetter,
    ) -> Result<()> {
        letter.occurrence = self.by_position.get(&letter.position).map_or(0, |entry| entry.0);
        let key = format!("{}@{}", letter.projection, letter.position);
        let id = EventId::derived("allframe.dead-letter.v1", &key, letter.occurrence);
        let payload = serde_json::to_vec(&letter).expect("a dead letter serializes");
        let event = NewEvent::new(DEAD_LETTER_EVENT_TYPE, payload).with_event_id(id);
        backend.append(&stream(&letter.projection), ExpectedVersion::Any, vec![event]).await?;
        let entry = self.by_position.entry(letter.position).or_default();
        entry.0 = letter.occurrence + 1;
        entry.1 = Some(letter);
        Ok(())
    }

    /// Stores that the open dead letter at `position` was applied after all.
    pub(crate) async fn resolve<B: EventStoreBackend + ?Sized>(&mut self, backend: &B, position: u64) -> Result<()> {
        let Some(letter) = self.by_position.get(&position).and_then(|entry| entry.1.clone()) else {
            return Ok(());
        };
        let key = format!("{}@{}", letter.projection, letter.position);
        let id = EventId::derived("allframe.dead-letter-resolved.v1", &key, letter.occurrence);
        let payload = serde_json::to_vec(&Resolution { position, occurrence: letter.occurrence })
            .expect("a resolution serializes");
        let event = NewEvent::new(RESOLVED_EVENT_TYPE, payload).with_event_id(id);
        backend.append(&stream(&letter.projection), ExpectedVersion::Any, vec![event]).await?;
        if let Some(entry) = self.by_position.get_mut(&position) {
            entry.1 = None;
        }
        Ok(())
    }
}
