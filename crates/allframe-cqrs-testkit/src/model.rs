//! The model test: random sequences of operations run against a backend and against a plain
//! reference model, compared after every step.

use std::collections::HashMap;
use std::future::Future;

use allframe_cqrs_core::{AppendResult, Error, EventId, EventStoreBackend, ExpectedVersion, NewEvent, Snapshot};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::cases::same_payload;

/// One operation of the model test.
#[derive(Clone, Debug)]
pub enum Op {
    /// Append `count` new events to stream `stream`.
    Append {
        /// Stream index (a few streams, so that conflicts happen).
        stream: usize,
        /// The expected version.
        expected: ExpectedVersion,
        /// How many events.
        count: usize,
    },
    /// Repeat an earlier append (by index among the appends tried so far) to `stream`.
    Retry {
        /// Which earlier append, modulo the number tried.
        append: usize,
        /// Stream index to send it to (the same stream or another).
        stream: usize,
    },
    /// Read a page of a stream.
    ReadStream {
        /// Stream index.
        stream: usize,
        /// Read after this version.
        after: u64,
        /// Page size.
        limit: usize,
    },
    /// Read a page of the log after the `after`-th event.
    ReadAll {
        /// Number of events to skip (translated to a position).
        after: usize,
        /// Page size.
        limit: usize,
    },
    /// Save a snapshot.
    SaveSnapshot {
        /// Stream index.
        stream: usize,
        /// Snapshot version.
        version: u64,
    },
    /// Read the latest snapshot.
    GetSnapshot {
        /// Stream index.
        stream: usize,
    },
    /// Re-send stored events of a stream that may span several appends (versions
    /// `start % len + 1` on, `count` of them) to `to`.
    RetrySpan {
        /// Stream whose events are re-sent.
        stream: usize,
        /// Where in that stream the span starts (modulo its length).
        start: usize,
        /// How many events.
        count: usize,
        /// Stream to send them to (the same stream or another).
        to: usize,
    },
    /// Read a stream's version.
    StreamVersion {
        /// Stream index.
        stream: usize,
    },
    /// List the streams.
    ListStreams {
        /// Most streams returned.
        limit: usize,
    },
}

const STREAMS: usize = 3;

fn expected_strategy() -> impl Strategy<Value = ExpectedVersion> {
    prop_oneof![
        Just(ExpectedVersion::Any),
        Just(ExpectedVersion::NoStream),
        Just(ExpectedVersion::StreamExists),
        (0u64..7).prop_map(ExpectedVersion::Exact),
    ]
}

/// The strategy for one operation.
pub fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..STREAMS, expected_strategy(), 0usize..4).prop_map(|(stream, expected, count)| Op::Append { stream, expected, count }),
        1 => (0usize..64, 0..STREAMS).prop_map(|(append, stream)| Op::Retry { append, stream }),
        2 => (0..STREAMS, 0u64..8, 1usize..5).prop_map(|(stream, after, limit)| Op::ReadStream { stream, after, limit }),
        2 => (0usize..24, 1usize..7).prop_map(|(after, limit)| Op::ReadAll { after, limit }),
        1 => (0..STREAMS, 0u64..8).prop_map(|(stream, version)| Op::SaveSnapshot { stream, version }),
        1 => (0..STREAMS).prop_map(|stream| Op::GetSnapshot { stream }),
        1 => (0..STREAMS, 0usize..16, 1usize..5, 0..STREAMS).prop_map(|(stream, start, count, to)| Op::RetrySpan { stream, start, count, to }),
        1 => (0..STREAMS).prop_map(|stream| Op::StreamVersion { stream }),
        1 => (1usize..5).prop_map(|limit| Op::ListStreams { limit }),
    ]
}

#[derive(Clone, Debug)]
struct ModelEvent {
    stream: usize,
    version: u64,
    /// The backend's position, learned from its append result.
    position: u64,
    event: NewEvent,
}

#[derive(Default, Debug)]
struct Model {
    log: Vec<ModelEvent>,
    /// Per stream, indices into `log`.
    streams: HashMap<usize, Vec<usize>>,
    snapshots: HashMap<usize, (u64, Vec<u8>)>,
    /// Every append tried, for retries: (stream, events).
    tried: Vec<(usize, Vec<NewEvent>)>,
    ids: HashMap<EventId, usize>,
}

/// What the model says an append does.
enum Expect {
    Stored,
    Deduplicated {
        first: usize,
        last: usize,
    },
    Conflict {
        actual: u64,
    },
    /// Refused as a duplicate, naming this id and where it is stored.
    Duplicate {
        id: EventId,
        stream: usize,
        version: u64,
    },
}

impl Model {
    fn version(&self, stream: usize) -> u64 {
        self.streams.get(&stream).map_or(0, |v| v.len() as u64)
    }

    fn predict(&self, stream: usize, expected: ExpectedVersion, events: &[NewEvent]) -> Expect {
        let found: Vec<Option<usize>> = events.iter().map(|e| self.ids.get(&e.metadata.event_id).copied()).collect();
        if found.iter().all(Option::is_none) {
            let actual = self.version(stream);
            let ok = match expected {
                ExpectedVersion::Any => true,
                ExpectedVersion::NoStream => actual == 0,
                ExpectedVersion::StreamExists => actual > 0,
                ExpectedVersion::Exact(n) => n == actual,
            };
            return if ok { Expect::Stored } else { Expect::Conflict { actual } };
        }
        // Which id a refusal names: the first stored one when the first is new; the first id
        // when it is stored elsewhere or the run breaks at a new id; else the id that breaks it.
        let duplicate = |index: usize| {
            let at = &self.log[found[index].expect("a stored id")];
            Expect::Duplicate { id: events[index].metadata.event_id, stream: at.stream, version: at.version }
        };
        let Some(first) = found[0] else {
            return duplicate(found.iter().position(Option::is_some).expect("some id is stored"));
        };
        let first_event = &self.log[first];
        if first_event.stream != stream {
            return duplicate(0);
        }
        let versions = &self.streams[&stream];
        for (offset, index) in found.iter().enumerate() {
            if index.is_none() || index.as_ref() != versions.get(first_event.version as usize - 1 + offset) {
                return duplicate(if index.is_some() { offset } else { 0 });
            }
        }
        Expect::Deduplicated { first, last: found[found.len() - 1].unwrap_or(first) }
    }
}

fn stream_name(prefix: &str, stream: usize) -> String {
    format!("{prefix}-{stream}")
}

async fn run_ops<B: EventStoreBackend>(backend: B, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let caps = backend.capabilities();
    let prefix = crate::cases::unique_stream("model");
    let mut model = Model::default();
    let mut counter = 0u64;
    for (step, op) in ops.into_iter().enumerate() {
        let append = match &op {
            Op::Append { stream, expected, count } => {
                let events = (0..*count)
                    .map(|_| {
                        counter += 1;
                        crate::cases::event("Model", counter)
                    })
                    .collect();
                Some((*stream, *expected, events))
            }
            Op::Retry { append, stream } if caps.idempotent_appends && !model.tried.is_empty() => {
                Some((*stream, ExpectedVersion::Any, model.tried[append % model.tried.len()].1.clone()))
            }
            Op::RetrySpan { stream, start, count, to } if caps.idempotent_appends => {
                let stored = model.streams.get(stream).map_or(&[][..], Vec::as_slice);
                if stored.is_empty() {
                    None
                } else {
                    let from = start % stored.len();
                    let span = stored[from..(from + count).min(stored.len())].iter();
                    Some((*to, ExpectedVersion::Any, span.map(|&i| model.log[i].event.clone()).collect()))
                }
            }
            _ => None,
        };
        match op {
            Op::Append { .. } | Op::Retry { .. } | Op::RetrySpan { .. } => {
                let Some((stream, expected, events)) = append else { continue };
                model.tried.push((stream, events.clone()));
                let name = stream_name(&prefix, stream);
                let result = backend.append(&name, expected, events.clone()).await;
                match (model.predict(stream, expected, &events), result) {
                    (Expect::Stored, Ok(result)) if !events.is_empty() => {
                        let first_version = model.version(stream) + 1;
                        let stored = backend.read_stream(&name, first_version - 1, events.len()).await.map_err(fail)?;
                        prop_assert_eq!(stored.len(), events.len());
                        let want = AppendResult {
                            stream_version: first_version + events.len() as u64 - 1,
                            first_position: stored[0].position,
                            last_position: stored[stored.len() - 1].position,
                            deduplicated: false,
                        };
                        prop_assert_eq!(result, want, "step {}: append result", step);
                        let last_position = model.log.last().map_or(0, |e| e.position);
                        prop_assert!(result.first_position > last_position, "step {}: positions increase", step);
                        for (offset, (event, record)) in events.into_iter().zip(stored).enumerate() {
                            let index = model.log.len();
                            model.ids.insert(event.metadata.event_id, index);
                            model.streams.entry(stream).or_default().push(index);
                            model.log.push(ModelEvent {
                                stream,
                                version: first_version + offset as u64,
                                position: record.position,
                                event,
                            });
                        }
                    }
                    (Expect::Stored, Ok(result)) => {
                        let want = AppendResult { stream_version: model.version(stream), ..AppendResult::default() };
                        prop_assert_eq!(result, want, "step {}: empty append result", step);
                    }
                    (Expect::Deduplicated { first, last }, Ok(result)) => {
                        let want = AppendResult {
                            stream_version: model.log[last].version,
                            first_position: model.log[first].position,
                            last_position: model.log[last].position,
                            deduplicated: true,
                        };
                        prop_assert_eq!(result, want, "step {}: retry result", step);
                    }
                    (Expect::Conflict { actual }, Err(Error::Conflict { stream: s, expected: e, actual: got })) => {
                        prop_assert_eq!(
                            (s.as_str(), e, got),
                            (name.as_str(), expected, actual),
                            "step {}: conflict",
                            step
                        );
                    }
                    (
                        Expect::Duplicate { id, stream: at, version },
                        Err(Error::DuplicateEventId { event_id, stored_stream, stored_version }),
                    ) => {
                        let want = (id, stream_name(&prefix, at), version);
                        prop_assert_eq!(
                            (event_id, stored_stream.to_string(), stored_version),
                            want,
                            "step {}: duplicate",
                            step
                        );
                    }
                    (_, result) => {
                        return Err(TestCaseError::fail(format!(
                            "step {step}: append to stream {stream} gave {result:?}; the model disagrees"
                        )));
                    }
                }
            }
            Op::ReadStream { stream, after, limit } => {
                let got = backend.read_stream(&stream_name(&prefix, stream), after, limit).await.map_err(fail)?;
                let want: Vec<&ModelEvent> = model
                    .streams
                    .get(&stream)
                    .map(|v| v.iter().skip(after as usize).take(limit).map(|&i| &model.log[i]).collect())
                    .unwrap_or_default();
                compare(&caps, step, &got, &want)?;
            }
            Op::ReadAll { after, limit } => {
                let after_position =
                    if after == 0 { 0 } else { model.log.get(after - 1).map_or(u64::MAX - 1, |e| e.position) };
                let got = backend.read_all(after_position, limit).await.map_err(fail)?;
                let want: Vec<&ModelEvent> = model.log.iter().skip(after).take(limit).collect();
                compare(&caps, step, &got, &want)?;
            }
            Op::SaveSnapshot { stream, version } if caps.snapshots => {
                let payload = format!(r#"{{"at":{version},"step":{step}}}"#).into_bytes();
                let result =
                    backend.save_snapshot(&stream_name(&prefix, stream), Snapshot::new(version, payload.clone())).await;
                let valid = version >= 1 && version <= model.version(stream);
                match result {
                    Ok(()) if valid => {
                        if model.snapshots.get(&stream).is_none_or(|(stored, _)| *stored <= version) {
                            model.snapshots.insert(stream, (version, payload));
                        }
                    }
                    Err(Error::InvalidSnapshot { .. }) if !valid => {}
                    other => return Err(TestCaseError::fail(format!("step {step}: snapshot v{version}: {other:?}"))),
                }
            }
            Op::GetSnapshot { stream } if caps.snapshots => {
                let got = backend.get_latest_snapshot(&stream_name(&prefix, stream)).await.map_err(fail)?;
                match (got, model.snapshots.get(&stream)) {
                    (None, None) => {}
                    (Some(got), Some((version, payload))) => {
                        prop_assert_eq!(got.version, *version, "step {}: snapshot version", step);
                        prop_assert!(same_payload(&caps, &got.payload, payload), "step {}: snapshot payload", step);
                    }
                    (got, want) => {
                        return Err(TestCaseError::fail(format!("step {step}: snapshot {got:?}, model {want:?}")));
                    }
                }
            }
            Op::StreamVersion { stream } => {
                let got = backend.stream_version(&stream_name(&prefix, stream)).await.map_err(fail)?;
                prop_assert_eq!(got, model.version(stream), "step {}: stream_version", step);
            }
            Op::ListStreams { limit } => {
                let got = backend.list_streams(Some(&prefix), limit).await.map_err(fail)?;
                let mut want: Vec<(String, u64)> = (0..STREAMS)
                    .filter(|s| model.version(*s) > 0)
                    .map(|s| (stream_name(&prefix, s), model.version(s)))
                    .collect();
                want.sort();
                want.truncate(limit);
                let got: Vec<(String, u64)> = got.into_iter().map(|(id, v)| (id.to_string(), v)).collect();
                prop_assert_eq!(got, want, "step {}: list_streams", step);
            }
            Op::SaveSnapshot { .. } | Op::GetSnapshot { .. } => {}
        }
        let head = backend.head_position().await.map_err(fail)?;
        prop_assert_eq!(head, model.log.last().map_or(0, |e| e.position), "step {}: head position", step);
    }
    Ok(())
}

fn compare(
    caps: &allframe_cqrs_core::Capabilities,
    step: usize,
    got: &[allframe_cqrs_core::RecordedEvent],
    want: &[&ModelEvent],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len(), "step {}: number of events", step);
    for (g, w) in got.iter().zip(want) {
        prop_assert_eq!(g.version, w.version, "step {}: version", step);
        prop_assert_eq!(g.position, w.position, "step {}: position", step);
        prop_assert_eq!(&g.metadata, &w.event.metadata, "step {}: metadata", step);
        prop_assert!(same_payload(caps, &g.payload, &w.event.payload), "step {}: payload", step);
        prop_assert_eq!(g.event_type.as_ref(), w.event.event_type.as_ref());
    }
    Ok(())
}

fn fail(error: Error) -> TestCaseError {
    TestCaseError::fail(format!("backend error: {error:?}"))
}

/// Runs the model test: `cases` random sequences of up to 40 operations, each on a fresh
/// backend from `factory`, compared with the reference model after every step.
///
/// Call it from a plain `#[test]` (it makes its own runtime). `ALLFRAME_MODEL_CASES`
/// overrides `cases`.
pub fn run_model_test<B, F, Fut>(cases: u32, factory: F)
where
    B: EventStoreBackend,
    F: Fn() -> Fut,
    Fut: Future<Output = B>,
{
    let cases = std::env::var("ALLFRAME_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let result = runner.run(&proptest::collection::vec(op_strategy(), 1..40), |ops| {
        runtime.block_on(async {
            let backend = factory().await;
            run_ops(backend, ops).await
        })
    });
    if let Err(error) = result {
        panic!("model test failed: {error}");
    }
}
