//! The metrics as an operator sees them, on all four backends: with a recorder installed, every
//! store operation reports its calls, latency and errors under the documented names and
//! labels, appends their events, bytes, conflicts and idempotent duplicates, and the durable
//! engines their own figures; every name emitted is in `metric_names::ALL` with exactly the
//! documented labels, and `docs/OPERATIONS.md` lists exactly the names of that table.

#[path = "support/targets.rs"]
mod targets;

use std::collections::BTreeSet;

use allframe::metric_names::{self, ALL};
use allframe::{EventStoreBackend, ExpectedVersion, Metered, NewEvent};
use allframe_cqrs_testkit::metrics::{install, take};
use targets::targets;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_reports_its_operations_under_the_documented_names() {
    install();
    for target in targets("metrics").await {
        let backend = target.name;
        let store = Metered::new(target.open().await);
        let _ = take();

        let events =
            vec![NewEvent::new("Opened", &b"{\"holder\":\"Ada\"}"[..]), NewEvent::new("Deposited", &b"{\"n\":5}"[..])];
        let bytes: u64 = events.iter().map(|e| e.payload.len() as u64).sum();
        let first_id = events[0].metadata.event_id;
        store.append("account-1", ExpectedVersion::NoStream, events.clone()).await.unwrap();
        // The same append again (a client's retry): stored once, counted as a duplicate.
        assert!(store.append("account-1", ExpectedVersion::Any, events).await.unwrap().deduplicated);
        let conflict = store.append("account-1", ExpectedVersion::NoStream, vec![NewEvent::new("X", &b"{}"[..])]).await;
        assert!(conflict.unwrap_err().is_conflict());
        store.read_stream("account-1", 0, 10).await.unwrap();
        store.read_all(0, 10).await.unwrap();
        store.stream_version("account-1").await.unwrap();
        store.head_position().await.unwrap();
        store.list_streams(None, 10).await.unwrap();
        store.find_event(first_id).await.unwrap();
        store.save_checkpoint("metrics-test", None, 1).await.unwrap();
        store.load_checkpoint("metrics-test").await.unwrap();
        store.flush().await.unwrap();
        store.stats().await.unwrap();
        assert!(store.health().await.is_ok(), "{backend}");

        // Every name recorded is in the table, as its kind, with exactly its labels.
        let samples = take();
        let b = [("backend", backend)];
        for operation in [
            "append",
            "read_stream",
            "read_all",
            "stream_version",
            "head_position",
            "list_streams",
            "find_event",
            "save_checkpoint",
            "load_checkpoint",
            "flush",
            "stats",
        ] {
            let labels = [("backend", backend), ("operation", operation)];
            let calls = samples.counter(metric_names::STORE_OPERATIONS, &labels);
            assert_eq!(calls, if operation == "append" { 3 } else { 1 }, "{backend} {operation} calls");
            let timed = samples.histogram(metric_names::STORE_OPERATION_DURATION, &labels).len();
            assert_eq!(timed as u64, calls, "{backend} {operation} latencies");
        }
        let conflict = [("backend", backend), ("operation", "append"), ("kind", "conflict")];
        assert_eq!(samples.counter(metric_names::STORE_ERRORS, &conflict), 1, "{backend}");
        assert_eq!(samples.counter(metric_names::APPEND_EVENTS, &b), 2, "{backend}");
        assert_eq!(samples.counter(metric_names::APPEND_BYTES, &b), bytes, "{backend}");
        assert_eq!(samples.counter(metric_names::APPEND_CONFLICTS, &b), 1, "{backend}");
        assert_eq!(samples.counter(metric_names::APPEND_DUPLICATES, &b), 1, "{backend}");
        assert!(samples.get(metric_names::STORE_EVENTS, &b).is_some(), "{backend}: stats() sets the store gauges");
        assert!(samples.get(metric_names::HEALTH_STATUS, &[]).is_some(), "{backend}: health() sets its gauge");
        // What only the engines know: their group commits, syncs and pools.
        if backend != "memory" {
            let groups = samples.histogram(metric_names::COMMIT_GROUP_APPENDS, &b).len();
            assert!(groups >= 1, "{backend}: the stored append went through a group commit");
        }
        if matches!(backend, "allsource" | "rocksdb") {
            assert!(!samples.histogram(metric_names::SYNC_DURATION, &b).is_empty(), "{backend}: a synced group");
        }
        if backend == "postgres" {
            assert!(samples.get(metric_names::POSTGRES_POOL_MAX_CONNECTIONS, &[]).is_some());
            let timed = samples.all(metric_names::POSTGRES_STATEMENT_DURATION).count();
            assert!(timed >= 5, "postgres: statements timed by name, {timed} names seen");
        }
        target.cleanup().await;
    }
}

#[test]
fn operations_md_lists_exactly_the_metrics_of_the_table() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/OPERATIONS.md")).unwrap();
    let mut missing = Vec::new();
    for metric in ALL {
        let row = doc.lines().find(|line| line.starts_with(&format!("| `{}`", metric.name)));
        match row {
            None => missing.push(format!("{}: no table row starting with | `{}`", metric.name, metric.name)),
            Some(row) => {
                if !row.contains(metric.kind.as_str()) {
                    missing.push(format!("{}: its row does not say {}", metric.name, metric.kind.as_str()));
                }
                for label in metric.labels {
                    if !row.contains(&format!("`{label}`")) {
                        missing.push(format!("{}: its row does not name the label `{label}`", metric.name));
                    }
                }
            }
        }
    }
    // Every `allframe_…` name the guide mentions (queries included) is one of the table's.
    let known: BTreeSet<&str> = ALL.iter().map(|m| m.name).collect();
    for word in doc.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("allframe_") {
            let base = ["_bucket", "_sum", "_count"].iter().fold(word, |w, suffix| w.strip_suffix(suffix).unwrap_or(w));
            if !known.contains(base) && !known.contains(word) {
                missing.push(format!("docs/OPERATIONS.md names `{word}`, which no code reports"));
            }
        }
    }
    assert!(missing.is_empty(), "docs/OPERATIONS.md and metric_names::ALL disagree:\n{}", missing.join("\n"));
}
