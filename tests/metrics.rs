//! The metrics as an operator sees them, on all four backends: with a recorder installed, every
//! store operation reports its calls, latency and errors under the documented names and
//! labels, appends their events, bytes, conflicts and idempotent duplicates, and the durable
//! engines their own figures; every name emitted is in `metric_names::ALL` with exactly the
//! documented labels, and `docs/OPERATIONS.md` lists exactly the names of that table.

#[path = "support/targets.rs"]
mod targets;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use allframe::metric_names::{self, ALL, MetricKind};
use allframe::{EventStoreBackend, ExpectedVersion, Metered, NewEvent};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use targets::targets;

/// The one recorder of this test binary (a global one: the durable engines record from their
/// own threads).
fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("no other recorder in this test binary");
        snapshotter
    })
}

/// One recorded sample: its labels and value.
#[derive(Debug)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: DebugValue,
}

/// Drains the recorder: every sample by metric name.
fn drain() -> BTreeMap<String, Vec<Sample>> {
    let mut out: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let labels = key.key().labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
        out.entry(key.key().name().to_owned()).or_default().push(Sample { labels, value });
    }
    out
}

/// The counter `name` with exactly `labels`, 0 when never recorded.
fn counter(samples: &BTreeMap<String, Vec<Sample>>, name: &str, labels: &[(&str, &str)]) -> u64 {
    find(samples, name, labels)
        .map(|sample| match &sample.value {
            DebugValue::Counter(n) => *n,
            other => panic!("{name} is a counter, recorded {other:?}"),
        })
        .unwrap_or(0)
}

/// How many observations the histogram `name` with exactly `labels` got.
fn observations(samples: &BTreeMap<String, Vec<Sample>>, name: &str, labels: &[(&str, &str)]) -> usize {
    find(samples, name, labels)
        .map(|sample| match &sample.value {
            DebugValue::Histogram(values) => values.len(),
            other => panic!("{name} is a histogram, recorded {other:?}"),
        })
        .unwrap_or(0)
}

fn find<'a>(samples: &'a BTreeMap<String, Vec<Sample>>, name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    let wanted: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    samples.get(name)?.iter().find(|sample| sample.labels == wanted)
}

/// Every name recorded is documented in `metric_names::ALL`, as the kind it was recorded as,
/// with exactly the documented label names.
fn assert_documented(samples: &BTreeMap<String, Vec<Sample>>) {
    for (name, recorded) in samples {
        let doc =
            ALL.iter().find(|doc| doc.name == name).unwrap_or_else(|| panic!("{name} is not in metric_names::ALL"));
        for sample in recorded {
            let kind = match sample.value {
                DebugValue::Counter(_) => MetricKind::Counter,
                DebugValue::Gauge(_) => MetricKind::Gauge,
                DebugValue::Histogram(_) => MetricKind::Histogram,
            };
            assert_eq!(kind, doc.kind, "{name} is documented as a {:?}", doc.kind);
            let labels: BTreeSet<&str> = sample.labels.keys().map(String::as_str).collect();
            let documented: BTreeSet<&str> = doc.labels.iter().copied().collect();
            assert_eq!(labels, documented, "{name}: recorded labels {labels:?}, documented {documented:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_reports_its_operations_under_the_documented_names() {
    snapshotter();
    for target in targets("metrics").await {
        let backend = target.name;
        let store = Metered::new(target.open().await);
        let _ = drain();

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

        let samples = drain();
        assert_documented(&samples);
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
            let calls = counter(&samples, metric_names::STORE_OPERATIONS, &labels);
            assert_eq!(calls, if operation == "append" { 3 } else { 1 }, "{backend} {operation} calls");
            let timed = observations(&samples, metric_names::STORE_OPERATION_DURATION, &labels);
            assert_eq!(timed as u64, calls, "{backend} {operation} latencies");
        }
        let conflict = [("backend", backend), ("operation", "append"), ("kind", "conflict")];
        assert_eq!(counter(&samples, metric_names::STORE_ERRORS, &conflict), 1, "{backend}");
        assert_eq!(counter(&samples, metric_names::APPEND_EVENTS, &b), 2, "{backend}");
        assert_eq!(counter(&samples, metric_names::APPEND_BYTES, &b), bytes, "{backend}");
        assert_eq!(counter(&samples, metric_names::APPEND_CONFLICTS, &b), 1, "{backend}");
        assert_eq!(counter(&samples, metric_names::APPEND_DUPLICATES, &b), 1, "{backend}");
        assert!(find(&samples, metric_names::STORE_EVENTS, &b).is_some(), "{backend}: stats() sets the store gauges");
        assert!(find(&samples, metric_names::HEALTH_STATUS, &[]).is_some(), "{backend}: health() sets its gauge");
        // What only the engines know: their group commits, syncs and pools.
        if backend != "memory" {
            let groups = observations(&samples, metric_names::COMMIT_GROUP_APPENDS, &b);
            assert!(groups >= 1, "{backend}: the stored append went through a group commit");
        }
        if matches!(backend, "allsource" | "rocksdb") {
            assert!(observations(&samples, metric_names::SYNC_DURATION, &b) >= 1, "{backend}: a synced group");
        }
        if backend == "postgres" {
            assert!(find(&samples, metric_names::POSTGRES_POOL_MAX_CONNECTIONS, &[]).is_some());
            let timed = samples.get(metric_names::POSTGRES_STATEMENT_DURATION).map_or(0, Vec::len);
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
