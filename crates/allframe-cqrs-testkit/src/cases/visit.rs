//! The conformance case of `visit_stream`, the read behind aggregate loads.

use allframe_cqrs_core::{Error, EventStoreBackend, ExpectedVersion};

use super::{assert_same_events, events, unique_stream};

/// See [`super::visit_stream_lends_what_read_stream_returns`].
pub(super) async fn lends_what_read_stream_returns<B: EventStoreBackend>(backend: B) {
    let stream = unique_stream("visit");
    let appended = events(0, 250);
    for chunk in appended.chunks(50) {
        backend.append(&stream, ExpectedVersion::Any, chunk.to_vec()).await.unwrap();
    }
    let stream = stream.as_str();
    let mut visited = Vec::new();
    let count = backend
        .visit_stream(stream, 0, 1000, &mut |event| {
            visited.push(event.clone());
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(count, visited.len(), "the count is of the events visited");
    assert_same_events(&backend, &visited, &appended);
    assert_eq!(visited, backend.read_stream(stream, 0, 1000).await.unwrap(), "the events read_stream returns");
    for (after, limit) in [(120u64, 5usize), (10, 200), (0, 250), (249, 10), (250, 10)] {
        let mut versions = Vec::new();
        let count = backend
            .visit_stream(stream, after, limit, &mut |event| {
                versions.push(event.version);
                Ok(())
            })
            .await
            .unwrap();
        let expected: Vec<u64> = (after + 1..=(after + limit as u64).min(250)).collect();
        assert_eq!((count, versions), (expected.len(), expected), "visit after {after}, limit {limit}");
    }
    let mut calls = 0;
    let stopped = backend
        .visit_stream(stream, 0, 1000, &mut |_| {
            calls += 1;
            if calls == 130 { Err(Error::Configuration { reason: "stop".into() }) } else { Ok(()) }
        })
        .await;
    assert!(matches!(stopped, Err(Error::Configuration { .. })), "the visitor's error is returned: {stopped:?}");
    assert_eq!(calls, 130, "no event is visited after the visitor's error");
    let missing = backend.visit_stream(&unique_stream("missing"), 0, 10, &mut |_| Ok(())).await.unwrap();
    assert_eq!(missing, 0, "a missing stream visits nothing");
}
