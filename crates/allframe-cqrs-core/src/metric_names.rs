//! The name of every metric AllFrame reports, with its type, unit, labels and meaning: one
//! table ([`ALL`]) that the code emits from, `docs/OPERATIONS.md` lists (a test compares the
//! two) and exporters describe to their users.
//!
//! Names follow Prometheus' conventions: an `allframe_` prefix, the unit in the name
//! (`_seconds`, `_bytes`), `_total` on counters. Labels are bounded sets: a backend's name, an
//! operation, an error kind, a projection's or saga's name; never a stream id or an event id.

/// What kind of metric a name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (Prometheus counter, `_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution of observations (Prometheus histogram: `_bucket`, `_sum`, `_count`).
    Histogram,
}

impl MetricKind {
    /// `counter`, `gauge` or `histogram`, as Prometheus names them.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One metric: its name and what it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricDoc {
    /// The full name, as the exporter shows it.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// The unit (`seconds`, `bytes`, `events`, …).
    pub unit: &'static str,
    /// The labels every sample carries.
    pub labels: &'static [&'static str],
    /// What it measures, in one sentence.
    pub help: &'static str,
}

macro_rules! metrics_table {
    ($($(#[$doc:meta])* $constant:ident = $name:literal, $kind:ident, $unit:literal, [$($label:literal),*], $help:literal;)*) => {
        $( $(#[$doc])* pub const $constant: &str = $name; )*
        /// Every metric AllFrame reports.
        pub const ALL: &[MetricDoc] = &[
            $( MetricDoc { name: $name, kind: MetricKind::$kind, unit: $unit, labels: &[$($label),*], help: $help }, )*
        ];
    };
}

metrics_table! {
    /// Store operations, by backend and operation (the `Metered` wrapper).
    STORE_OPERATIONS = "allframe_store_operations_total", Counter, "operations", ["backend", "operation"],
        "Store operations called (append, read_stream, read_all, save_checkpoint, ...), failed or not.";
    /// Failed store operations, by error kind.
    STORE_ERRORS = "allframe_store_errors_total", Counter, "operations", ["backend", "operation", "kind"],
        "Store operations that returned an error, by the error's kind (conflict, io, timeout, closed, ...).";
    /// How long store operations take.
    STORE_OPERATION_DURATION = "allframe_store_operation_duration_seconds", Histogram, "seconds", ["backend", "operation"],
        "Time from the call to the answer of a store operation, failed or not.";
    /// Events stored, as the last `stats()` call counted them.
    STORE_EVENTS = "allframe_store_events", Gauge, "events", ["backend"],
        "Events in the store, as the last stats() call counted them (set by Metered::stats; allframe stats --serve calls it).";
    /// Streams stored, as the last `stats()` call counted them.
    STORE_STREAMS = "allframe_store_streams", Gauge, "streams", ["backend"],
        "Streams in the store, as the last stats() call counted them.";
    /// The log's head position at the last `stats()` call.
    STORE_HEAD_POSITION = "allframe_store_head_position", Gauge, "position", ["backend"],
        "The highest committed log position at the last stats() call.";
    /// Events appended.
    APPEND_EVENTS = "allframe_append_events_total", Counter, "events", ["backend"],
        "Events stored by appends (an idempotent retry stores none).";
    /// Payload bytes appended.
    APPEND_BYTES = "allframe_append_bytes_total", Counter, "bytes", ["backend"],
        "Payload bytes of the events stored by appends.";
    /// Appends refused by optimistic concurrency.
    APPEND_CONFLICTS = "allframe_append_conflicts_total", Counter, "appends", ["backend"],
        "Appends refused because the stream was not at the expected version.";
    /// Idempotent retries of an earlier append.
    APPEND_DUPLICATES = "allframe_append_duplicates_total", Counter, "appends", ["backend"],
        "Appends that repeated an earlier append's event ids and stored nothing again (deduplicated).";
    /// Appends written by one group commit.
    COMMIT_GROUP_APPENDS = "allframe_commit_group_appends", Histogram, "appends", ["backend"],
        "Appends written together by one group commit (one write and at most one sync; one transaction on PostgreSQL).";
    /// How long one sync of the log takes.
    SYNC_DURATION = "allframe_sync_duration_seconds", Histogram, "seconds", ["backend"],
        "Time of one write-and-sync of a group commit (AllSource, RocksDB).";
    /// AllSource's sealed log segments not yet converted to Parquet.
    ALLSOURCE_CONVERSION_BACKLOG = "allframe_allsource_conversion_backlog_segments", Gauge, "segments", [],
        "AllSource: sealed log segments waiting for conversion to Parquet (appends wait when it is full).";
    /// AllSource's segments on disk, log and Parquet.
    ALLSOURCE_SEGMENTS = "allframe_allsource_segments", Gauge, "segments", ["kind"],
        "AllSource: open segments, by kind (log: write-ahead log segments; parquet: converted segments).";
    /// PostgreSQL pool connections, in use and idle.
    POSTGRES_POOL_CONNECTIONS = "allframe_postgres_pool_connections", Gauge, "connections", ["state"],
        "PostgreSQL: connections of the pool, by state (in_use, idle).";
    /// PostgreSQL pool size limit.
    POSTGRES_POOL_MAX_CONNECTIONS = "allframe_postgres_pool_max_connections", Gauge, "connections", [],
        "PostgreSQL: the most connections the pool opens.";
    /// How long a PostgreSQL statement takes.
    POSTGRES_STATEMENT_DURATION = "allframe_postgres_statement_duration_seconds", Histogram, "seconds", ["statement"],
        "PostgreSQL: time of one statement (or one group-commit transaction), by statement.";
    /// Events a catch-up subscription delivered.
    SUBSCRIPTION_EVENTS = "allframe_subscription_events_total", Counter, "events", ["backend"],
        "Events delivered by catch-up subscriptions (raw and typed; projections and saga routers read through them).";
    /// The position a projection has applied up to.
    PROJECTION_POSITION = "allframe_projection_position", Gauge, "position", ["projection"],
        "The log position a projection has applied through: its checkpoint when it keeps one (where a restart resumes), else the position it passed.";
    /// How many positions a projection is behind the head.
    PROJECTION_LAG_EVENTS = "allframe_projection_lag_events", Gauge, "events", ["projection"],
        "Log positions between the head and a projection's checkpoint (positions are sparse on PostgreSQL).";
    /// How old the oldest event a projection has not applied is.
    PROJECTION_LAG_SECONDS = "allframe_projection_lag_seconds", Gauge, "seconds", ["projection"],
        "Age of the first event a projection has not passed yet (0 when it is caught up), as of its last read or status.";
    /// Events a projection applied.
    PROJECTION_EVENTS = "allframe_projection_events_total", Counter, "events", ["projection"],
        "Events a projection applied.";
    /// Failed attempts to apply an event.
    PROJECTION_FAILURES = "allframe_projection_failures_total", Counter, "failures", ["projection"],
        "Times a projection's handler or its checkpoint failed (each retry counts).";
    /// Events a projection set aside.
    PROJECTION_DEAD_LETTERS = "allframe_projection_dead_letters_total", Counter, "events", ["projection"],
        "Events a projection recorded as dead letters and passed over (FailurePolicy::dead_letter).";
    /// Whether a projection runs.
    PROJECTION_RUNNING = "allframe_projection_running", Gauge, "boolean", ["projection"],
        "1 while a projection's runner runs, 0 once it stopped (on a failure or when asked).";
    /// Saga instances, by state.
    SAGA_INSTANCES = "allframe_saga_instances", Gauge, "instances", ["saga", "state"],
        "Saga instances by state (running, waiting, compensating, stuck, completed, rolled_back): those the orchestrator drives, as last seen, and those its start found finished or stuck.";
    /// Saga steps and reactions, by outcome.
    SAGA_STEPS = "allframe_saga_steps_total", Counter, "steps", ["saga", "outcome"],
        "Attempts at saga steps, compensations and reactions, by outcome (succeeded, failed, timed_out, compensated, compensation_failed); a failure retried later counts as failed.";
    /// The position a saga router has routed up to.
    SAGA_ROUTER_POSITION = "allframe_saga_router_position", Gauge, "position", ["saga"],
        "The log position a choreography's router has routed and checkpointed.";
    /// How many positions a saga router is behind the head.
    SAGA_ROUTER_LAG_EVENTS = "allframe_saga_router_lag_events", Gauge, "events", ["saga"],
        "Log positions between the head and a choreography router's checkpoint.";
    /// The store's health as a number.
    HEALTH_STATUS = "allframe_health_status", Gauge, "status", [],
        "The last health answer: 0 ok, 1 degraded, 2 failed.";
}

/// Tells the installed recorder the unit and meaning of every metric, so that exporters show
/// them (Prometheus' `# HELP` lines). Call it once, after installing the recorder.
#[cfg(feature = "metrics")]
pub fn describe_all() {
    for doc in ALL {
        let help = metrics::SharedString::const_str(doc.help);
        let unit = match doc.unit {
            "seconds" => Some(metrics::Unit::Seconds),
            "bytes" => Some(metrics::Unit::Bytes),
            _ => None,
        };
        metrics::with_recorder(|recorder| {
            let name = metrics::KeyName::from_const_str(doc.name);
            match doc.kind {
                MetricKind::Counter => recorder.describe_counter(name, unit, help),
                MetricKind::Gauge => recorder.describe_gauge(name, unit, help),
                MetricKind::Histogram => recorder.describe_histogram(name, unit, help),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for doc in ALL {
            assert!(seen.insert(doc.name), "{} is listed twice", doc.name);
            assert!(doc.name.starts_with("allframe_"), "{}", doc.name);
            assert_eq!(doc.kind == MetricKind::Counter, doc.name.ends_with("_total"), "{}", doc.name);
            if matches!(doc.unit, "seconds" | "bytes") {
                assert!(doc.name.contains(doc.unit), "{} has its unit {} in the name", doc.name, doc.unit);
            }
            for label in doc.labels {
                assert!(!label.contains("stream") && !label.contains("id"), "{}: unbounded label {label}", doc.name);
            }
        }
    }
}
