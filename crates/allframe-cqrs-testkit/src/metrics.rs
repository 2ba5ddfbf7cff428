//! Recording metrics in a test (feature `metrics`): one global recorder per test binary (the
//! durable engines record from their own threads, which a thread-local recorder would not
//! see), and what it recorded, each name and its labels checked against
//! `allframe_cqrs_core::metric_names::ALL`.
//!
//! ```ignore
//! allframe_cqrs_testkit::metrics::install();   // before making what records
//! // ... appends, a projection, a saga ...
//! let seen = allframe_cqrs_testkit::metrics::take();
//! assert_eq!(seen.counter("allframe_append_events_total", &[("backend", "memory")]), 2);
//! ```

use std::sync::OnceLock;

use allframe_cqrs_core::metric_names::{ALL, MetricKind};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// Installs the test binary's recorder (once; later calls do nothing).
pub fn install() {
    snapshotter();
}

fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("the only recorder of this test binary");
        snapshotter
    })
}

/// One metric as recorded: its name, its labels in order, and its value.
#[derive(Debug)]
pub struct Sample {
    /// The metric's name.
    pub name: String,
    /// Its labels, in the order they were given.
    pub labels: Vec<(String, String)>,
    /// Its value: a counter's total, a gauge's last value or a histogram's observations.
    pub value: DebugValue,
}

/// What was recorded since the last [`take`].
#[derive(Debug)]
pub struct Recorded(pub Vec<Sample>);

/// Takes (and clears: counters restart at 0, histograms empty) everything recorded so far,
/// after checking that each name is in the table, recorded as its documented kind, with
/// exactly its documented labels in their order.
pub fn take() -> Recorded {
    let mut out = Vec::new();
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let key = key.key();
        let name = key.name().to_owned();
        let labels: Vec<(String, String)> = key.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
        let doc =
            ALL.iter().find(|doc| doc.name == name).unwrap_or_else(|| panic!("{name} is not in metric_names::ALL"));
        let kind = match value {
            DebugValue::Counter(_) => MetricKind::Counter,
            DebugValue::Gauge(_) => MetricKind::Gauge,
            DebugValue::Histogram(_) => MetricKind::Histogram,
        };
        assert_eq!(kind, doc.kind, "{name} is documented as a {:?}", doc.kind);
        let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, doc.labels, "{name}: labels as documented");
        out.push(Sample { name, labels, value });
    }
    Recorded(out)
}

impl Recorded {
    /// The sample `name` with exactly `labels` (in any order), if it was recorded.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<&DebugValue> {
        let matches = |sample: &&Sample| {
            sample.name == name
                && sample.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| sample.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        };
        self.0.iter().find(matches).map(|sample| &sample.value)
    }

    /// A counter's total (0 when it was not recorded).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.get(name, labels) {
            None => 0,
            Some(DebugValue::Counter(n)) => *n,
            Some(other) => panic!("{name} is a counter, recorded {other:?}"),
        }
    }

    /// A gauge's last value, if it was set.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.get(name, labels)? {
            DebugValue::Gauge(value) => Some(value.into_inner()),
            other => panic!("{name} is a gauge, recorded {other:?}"),
        }
    }

    /// A histogram's observations (empty when none were recorded).
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        match self.get(name, labels) {
            None => Vec::new(),
            Some(DebugValue::Histogram(values)) => values.iter().map(|v| v.into_inner()).collect(),
            Some(other) => panic!("{name} is a histogram, recorded {other:?}"),
        }
    }

    /// Every sample of `name`, whatever its labels.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |sample| sample.name == name)
    }
}
