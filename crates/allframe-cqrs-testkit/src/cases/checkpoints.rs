//! The conformance case of named checkpoints (contract point 14).

use std::sync::Arc;

use allframe_cqrs_core::{Error, EventStoreBackend, ExpectedVersion};

use super::{events, unique_stream};

/// See [`super::checkpoints_compare_and_set`].
pub(super) async fn compare_and_set<B: EventStoreBackend>(backend: B) {
    let backend = Arc::new(backend);
    let stream = unique_stream("checkpointed");
    backend.append(&stream, ExpectedVersion::Any, events(1, 5)).await.unwrap();
    let head = backend.head_position().await.unwrap();
    let name = unique_stream("projection");
    let other = unique_stream("projection-other");
    assert_eq!(backend.load_checkpoint(&name).await.unwrap(), None, "contract 14: never saved");
    backend.save_checkpoint(&name, None, head - 2).await.expect("contract 14: a first save");
    assert_eq!(backend.load_checkpoint(&name).await.unwrap(), Some(head - 2));
    assert_eq!(backend.load_checkpoint(&other).await.unwrap(), None, "contract 14: names are independent");

    for (expected, what) in [(None, "expects none"), (Some(head - 3), "expects an older position")] {
        let refused = backend.save_checkpoint(&name, expected, head).await;
        match refused {
            Err(Error::CheckpointConflict { name: n, expected: e, actual }) => {
                assert_eq!((n.as_str(), e, actual), (name.as_str(), expected, Some(head - 2)), "contract 14: {what}")
            }
            other => panic!("contract 14: a save that {what} is a conflict: {other:?}"),
        }
    }
    backend.save_checkpoint(&name, Some(head - 2), head).await.expect("contract 14: the expected position");
    let bad: [(&str, u64, &str); 3] =
        [("", 1, "an empty name"), ("nul\0byte", 1, "a name with NUL"), (name.as_str(), head + 1, "beyond the head")];
    for (bad_name, position, what) in bad {
        let refused = backend.save_checkpoint(bad_name, Some(head), position).await;
        assert!(matches!(refused, Err(Error::InvalidCheckpoint { .. })), "contract 14: {what}: {refused:?}");
    }
    assert_eq!(backend.load_checkpoint(&name).await.unwrap(), Some(head), "contract 14: refusals changed nothing");
    backend.save_checkpoint(&name, Some(head), 0).await.expect("contract 14: a reset to 0 (a rebuild)");
    assert_eq!(backend.load_checkpoint(&name).await.unwrap(), Some(0));

    for round in 0..3u64 {
        // From nothing, then from 0: every target is at least 1, so exactly one save can hold
        // the expected position (a target equal to it would let a second save in).
        let from = if round == 0 {
            None
        } else {
            let current = backend.load_checkpoint(&other).await.unwrap();
            backend.save_checkpoint(&other, current, 0).await.expect("contract 14: a reset");
            Some(0)
        };
        let target = move |task: u64| 1 + (round + task) % head;
        let tasks: Vec<_> = (0..8u64)
            .map(|task| {
                let backend = Arc::clone(&backend);
                let other = other.clone();
                tokio::spawn(async move { (task, backend.save_checkpoint(&other, from, target(task)).await) })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.expect("task") {
                (task, Ok(())) => winners.push(task),
                (_, Err(Error::CheckpointConflict { .. })) => {}
                (_, Err(error)) => panic!("contract 14: a concurrent save fails only by conflict: {error:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "contract 14: one of 8 concurrent saves from {from:?} wins (round {round})");
        let stored = backend.load_checkpoint(&other).await.unwrap();
        assert_eq!(stored, Some(target(winners[0])), "contract 14: the winner's position is stored");
    }
}
