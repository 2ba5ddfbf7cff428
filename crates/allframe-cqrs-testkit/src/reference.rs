//! A second reference, written to be obviously right rather than fast: one list of events
//! under one lock, every question answered by a linear scan. [`cross_check`] runs random
//! operation sequences against it and another backend (the memory backend, which the model
//! test and every other backend are compared with) and requires every result, `Ok` value and
//! error alike, to be identical field for field.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;

use allframe_cqrs_core::{
    AppendResult, BackendStats, Capabilities, Durability, Error, EventStoreBackend, ExpectedVersion, Limits, NewEvent,
    RecordedEvent, Result, Snapshot, StreamId, Timestamp, async_trait,
};
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::model::Op;

/// The reference backend: a `Vec` of events, a map of snapshots and one of checkpoints.
#[derive(Debug, Default)]
pub struct Reference {
    state: Mutex<(Vec<RecordedEvent>, BTreeMap<String, Snapshot>)>,
    checkpoints: Mutex<BTreeMap<String, u64>>,
}

impl Reference {
    fn with<T>(&self, f: impl FnOnce(&mut Vec<RecordedEvent>, &mut BTreeMap<String, Snapshot>) -> T) -> T {
        let mut guard = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (log, snapshots) = &mut *guard;
        f(log, snapshots)
    }
}

fn version_of(log: &[RecordedEvent], stream: &str) -> u64 {
    log.iter().filter(|e| e.stream_id == stream).count() as u64
}

#[async_trait]
impl EventStoreBackend for Reference {
    fn name(&self) -> &'static str {
        "reference"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::full(Durability::Volatile, false)
    }

    async fn append(&self, stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> Result<AppendResult> {
        Limits::default().check_append(stream, &events)?;
        self.with(|log, _| {
            let stored: Vec<Option<&RecordedEvent>> =
                events.iter().map(|e| log.iter().find(|s| s.metadata.event_id == e.metadata.event_id)).collect();
            if let Some(first_stored) = stored.iter().position(Option::is_some) {
                let named = |i: usize| {
                    let at = stored[i].expect("stored");
                    Error::DuplicateEventId {
                        event_id: events[i].metadata.event_id,
                        stored_stream: at.stream_id.clone(),
                        stored_version: at.version,
                    }
                };
                // A retry: every id stored, in this stream, at consecutive versions.
                let Some(first) = stored[0] else { return Err(named(first_stored)) };
                if first.stream_id != stream {
                    return Err(named(0));
                }
                for (i, at) in stored.iter().enumerate() {
                    match at {
                        Some(at) if at.stream_id == stream && at.version == first.version + i as u64 => {}
                        Some(_) => return Err(named(i)),
                        None => return Err(named(0)),
                    }
                }
                let last = stored[stored.len() - 1].expect("stored");
                return Ok(AppendResult {
                    stream_version: last.version,
                    first_position: first.position,
                    last_position: last.position,
                    deduplicated: true,
                });
            }
            let current = version_of(log, stream);
            expected.check(stream, current)?;
            if events.is_empty() {
                return Ok(AppendResult { stream_version: current, ..AppendResult::default() });
            }
            let first_position = log.len() as u64 + 1;
            for (i, event) in events.into_iter().enumerate() {
                log.push(RecordedEvent {
                    stream_id: StreamId::from(stream),
                    version: current + i as u64 + 1,
                    position: log.len() as u64 + 1,
                    event_type: event.event_type,
                    payload: event.payload,
                    metadata: event.metadata,
                });
            }
            Ok(AppendResult {
                stream_version: version_of(log, stream),
                first_position,
                last_position: log.len() as u64,
                deduplicated: false,
            })
        })
    }

    async fn read_stream(&self, stream: &str, after_version: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        Ok(self.with(|log, _| {
            log.iter().filter(|e| e.stream_id == stream && e.version > after_version).take(limit).cloned().collect()
        }))
    }

    async fn read_all(&self, after_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        Ok(self.with(|log, _| log.iter().filter(|e| e.position > after_position).take(limit).cloned().collect()))
    }

    async fn stream_version(&self, stream: &str) -> Result<u64> {
        Ok(self.with(|log, _| version_of(log, stream)))
    }

    async fn head_position(&self) -> Result<u64> {
        Ok(self.with(|log, _| log.len() as u64))
    }

    async fn list_streams(&self, after: Option<&str>, limit: usize) -> Result<Vec<(StreamId, u64)>> {
        Ok(self.with(|log, _| {
            let mut streams: BTreeMap<&str, u64> = BTreeMap::new();
            for event in log.iter() {
                *streams.entry(event.stream_id.as_str()).or_default() += 1;
            }
            streams
                .into_iter()
                .filter(|(id, _)| after.is_none_or(|after| *id > after))
                .take(limit)
                .map(|(id, version)| (StreamId::from(id), version))
                .collect()
        }))
    }

    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<()> {
        Limits::default().check_snapshot(stream, &snapshot)?;
        self.with(|log, snapshots| {
            snapshot.check_version(stream, version_of(log, stream))?;
            if snapshots.get(stream).is_none_or(|stored| stored.version <= snapshot.version) {
                snapshots.insert(stream.to_owned(), snapshot);
            }
            Ok(())
        })
    }

    async fn get_latest_snapshot(&self, stream: &str) -> Result<Option<Snapshot>> {
        Ok(self.with(|_, snapshots| snapshots.get(stream).cloned()))
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>> {
        Ok(self.checkpoints.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).copied())
    }

    async fn save_checkpoint(&self, name: &str, expected: Option<u64>, position: u64) -> Result<()> {
        let head = self.with(|log, _| log.len() as u64);
        let mut checkpoints = self.checkpoints.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let actual = checkpoints.get(name).copied();
        allframe_cqrs_core::checkpoint::compare_and_set(&Limits::default(), name, expected, actual, position, head)?;
        checkpoints.insert(name.to_owned(), position);
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }

    async fn stats(&self) -> Result<BackendStats> {
        let streams = self.list_streams(None, usize::MAX).await?.len() as u64;
        Ok(self.with(|log, snapshots| {
            let mut stats = BackendStats::new("reference", Durability::Volatile);
            stats.events = log.len() as u64;
            stats.streams = streams;
            stats.snapshots = snapshots.len() as u64;
            stats.head_position = log.len() as u64;
            stats
        }))
    }
}

/// Runs `cases` random operation sequences against a backend from `factory` and against
/// [`Reference`], and panics at the first step where any result differs in any field.
///
/// Positions are compared too, so this is for backends that number positions 1, 2, 3…
/// without gaps, as the memory backend does.
pub fn cross_check<B, F, Fut>(cases: u32, factory: F)
where
    B: EventStoreBackend,
    F: Fn() -> Fut,
    Fut: Future<Output = B>,
{
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let result = runner.run(&proptest::collection::vec(crate::model::op_strategy(), 1..60), |ops| {
        runtime.block_on(async {
            let backend = factory().await;
            let reference = Reference::default();
            let (mut tried, mut counter) = (Vec::new(), 0u64);
            for (step, op) in ops.iter().enumerate() {
                let events = events_for(op, &reference, &mut tried, &mut counter).await;
                let got = apply(&backend, op, events.clone()).await;
                let want = apply(&reference, op, events).await;
                if got != want {
                    return Err(TestCaseError::fail(format!(
                        "step {step}: {op:?}\n  backend:   {got}\n  reference: {want}"
                    )));
                }
            }
            Ok(())
        })
    });
    if let Err(error) = result {
        panic!("cross-check against the reference failed: {error}");
    }
}

fn stream(index: usize) -> String {
    format!("cross-{index}")
}

/// The events an append-like operation sends (new ones, an earlier append again, or stored
/// events of a stream spanning appends); the same for both backends.
async fn events_for(
    op: &Op,
    reference: &Reference,
    tried: &mut Vec<Vec<NewEvent>>,
    counter: &mut u64,
) -> Vec<NewEvent> {
    let events = match op {
        Op::Append { count, .. } => (0..*count)
            .map(|_| {
                *counter += 1;
                crate::cases::event("Cross", *counter)
            })
            .collect(),
        Op::Retry { append, .. } if !tried.is_empty() => tried[append % tried.len()].clone(),
        Op::RetrySpan { stream: from, start, count, .. } => {
            let stored = reference.read_stream(&stream(*from), 0, usize::MAX).await.unwrap_or_default();
            if stored.is_empty() {
                return Vec::new();
            }
            let first = start % stored.len();
            stored[first..(first + count).min(stored.len())].iter().map(RecordedEvent::to_new_event).collect()
        }
        _ => return Vec::new(),
    };
    tried.push(events.clone());
    events
}

/// Runs one operation and describes its whole result.
async fn apply<B: EventStoreBackend + ?Sized>(backend: &B, op: &Op, events: Vec<NewEvent>) -> String {
    match *op {
        Op::Append { stream: s, expected, .. } => format!("{:?}", backend.append(&stream(s), expected, events).await),
        Op::Retry { stream: s, .. } => format!("{:?}", backend.append(&stream(s), ExpectedVersion::Any, events).await),
        Op::RetrySpan { to, .. } => format!("{:?}", backend.append(&stream(to), ExpectedVersion::Any, events).await),
        Op::ReadStream { stream: s, after, limit } => {
            format!("{:?}", backend.read_stream(&stream(s), after, limit).await)
        }
        Op::ReadAll { after, limit } => format!("{:?}", backend.read_all(after as u64, limit).await),
        Op::SaveSnapshot { stream: s, version } => {
            let mut snapshot = Snapshot::new(version, format!(r#"{{"v":{version}}}"#));
            snapshot.timestamp = Timestamp::from_micros(version as i64);
            format!("{:?}", backend.save_snapshot(&stream(s), snapshot).await)
        }
        Op::GetSnapshot { stream: s } => format!("{:?}", backend.get_latest_snapshot(&stream(s)).await),
        Op::StreamVersion { stream: s } => format!("{:?}", backend.stream_version(&stream(s)).await),
        Op::ListStreams { limit } => format!("{:?}", backend.list_streams(None, limit).await),
    }
}
