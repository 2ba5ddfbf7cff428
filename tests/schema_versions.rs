//! Each stored event carries the schema version of its type (issue 20): written by the typed
//! store and by the command bus, kept by all four backends, version 1 written as nothing.

#[path = "support/targets.rs"]
mod targets;

use std::sync::Arc;

use allframe::cqrs::*;
use allframe::schema_version::{self, SCHEMA_VERSION_HEADER};
use serde::{Deserialize, Serialize};

/// A type at version 3 of its schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
#[event(version = 3)]
enum Ledger {
    Credited { cents: u64 },
}

/// A type never versioned: version 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
enum Note {
    Written { text: String },
}

#[command(stream = "ledger-{id}")]
#[derive(Debug, Serialize, Deserialize)]
struct Credit {
    id: String,
    cents: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_keeps_each_events_schema_version() {
    for target in targets::targets("schema_version").await {
        let backend = target.open().await;
        let ledger: EventStore<Ledger, dyn EventStoreBackend> = EventStore::from_shared(Arc::clone(&backend));
        let notes: EventStore<Note, dyn EventStoreBackend> = EventStore::from_shared(Arc::clone(&backend));
        ledger.append("ledger-1", vec![Ledger::Credited { cents: 5 }]).await.unwrap();
        notes.append("notes-1", vec![Note::Written { text: "hi".into() }]).await.unwrap();
        let bus = CommandBus::builder(Arc::clone(&backend))
            .handler::<Credit, _>(plain(|cmd: &Credit, _ctx: &Context| Ok(vec![Ledger::Credited { cents: cmd.cents }])))
            .build()
            .unwrap();
        bus.dispatch(Credit { id: "1".into(), cents: 7 }).await.unwrap();

        let stored = backend.read_stream("ledger-1", 0, 10).await.unwrap();
        assert_eq!(stored.len(), 2, "{}", target.name);
        for record in &stored {
            assert_eq!(
                record.metadata.headers.get(SCHEMA_VERSION_HEADER).map(String::as_str),
                Some("3"),
                "{}",
                target.name
            );
            assert_eq!(schema_version::of(&record.metadata), 3, "{}", target.name);
        }
        let note = &backend.read_stream("notes-1", 0, 10).await.unwrap()[0];
        assert!(!note.metadata.headers.contains_key(SCHEMA_VERSION_HEADER), "{}: version 1 is no header", target.name);
        assert_eq!(schema_version::of(&note.metadata), 1);
        // Reading them back typed is unchanged.
        assert_eq!(
            ledger.get_events("ledger-1").await.unwrap(),
            [Ledger::Credited { cents: 5 }, Ledger::Credited { cents: 7 }]
        );
        target.cleanup().await;
    }
}
