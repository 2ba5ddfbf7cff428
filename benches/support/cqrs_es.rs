//! cqrs-es 0.5's side of the command workloads (issue 18): the same counter, event and
//! command as `allframe_benches::{Counter, CounterEvent, Bump}`, and a quiet copy of its
//! `MemStore`. Included by `benches/commands.rs` and `examples/command_path.rs`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use cqrs_es::event_sink::EventSink;
use cqrs_es::mem_store::MemStoreAggregateContext;
use cqrs_es::{AggregateError, EventEnvelope};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EsEvent {
    Bumped { index: u64, data: String },
}

impl cqrs_es::DomainEvent for EsEvent {
    fn event_type(&self) -> String {
        "Bumped".to_string()
    }
    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug)]
pub struct Never;

impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}

impl std::error::Error for Never {}

pub struct EsBump;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EsCounter {
    pub bumps: u64,
    pub last_index: u64,
}

impl cqrs_es::Aggregate for EsCounter {
    const TYPE: &'static str = "counter";
    type Command = EsBump;
    type Event = EsEvent;
    type Error = Never;
    type Services = ();

    async fn handle(&mut self, _: EsBump, _: &(), sink: &EventSink<Self>) -> Result<(), Never> {
        let event = EsEvent::Bumped { index: self.bumps + 1, data: "payload".into() };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, EsEvent::Bumped { index, .. }: EsEvent) {
        self.bumps += 1;
        self.last_index = index;
    }
}

type Envelopes = Arc<RwLock<HashMap<String, Vec<EventEnvelope<EsCounter>>>>>;

/// cqrs-es's `MemStore` line for line, without its two `println!` per command: what the
/// library costs without the printing of its test store.
#[derive(Clone, Default)]
pub struct QuietStore {
    events: Envelopes,
}

impl QuietStore {
    fn committed(&self, id: &str) -> Vec<EventEnvelope<EsCounter>> {
        self.events.read().unwrap().get(id).into_iter().flatten().cloned().collect()
    }
}

impl cqrs_es::EventStore<EsCounter> for QuietStore {
    type AC = MemStoreAggregateContext<EsCounter>;

    async fn load_events(&self, id: &str) -> Result<Vec<EventEnvelope<EsCounter>>, AggregateError<Never>> {
        Ok(self.committed(id))
    }

    async fn load_aggregate(&self, id: &str) -> Result<Self::AC, AggregateError<Never>> {
        let mut aggregate = EsCounter::default();
        let mut current_sequence = 0;
        for envelope in self.committed(id) {
            current_sequence = envelope.sequence;
            cqrs_es::Aggregate::apply(&mut aggregate, envelope.payload);
        }
        Ok(MemStoreAggregateContext { aggregate_id: id.to_string(), aggregate, current_sequence })
    }

    async fn commit(
        &self,
        events: Vec<EsEvent>,
        context: Self::AC,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<EsCounter>>, AggregateError<Never>> {
        let mut sequence = context.current_sequence;
        let wrapped: Vec<EventEnvelope<EsCounter>> = events
            .into_iter()
            .map(|payload| {
                sequence += 1;
                EventEnvelope {
                    aggregate_id: context.aggregate_id.clone(),
                    sequence,
                    payload,
                    metadata: metadata.clone(),
                }
            })
            .collect();
        if wrapped.is_empty() {
            return Ok(wrapped);
        }
        let mut all = self.committed(&context.aggregate_id);
        all.extend(wrapped.iter().cloned());
        self.events.write().unwrap().insert(context.aggregate_id, all);
        Ok(wrapped)
    }
}
