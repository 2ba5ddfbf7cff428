//! The workloads, run in one child process per target.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use allframe::cqrs::{CommandBus, DispatchError};
use allframe::read::all_events;
use allframe::{
    DynBackend, EventStore, EventStoreBackend, ExpectedVersion, RawSubscription, StartFrom, SubscriptionOptions,
};
use allframe_benches::{Bump, CustomerTotals, OrderPlaced, counter_bus, order_placed};
use futures_util::TryStreamExt;

use crate::{Measurement, Scale, TargetResult, targets};

type Store = EventStore<OrderPlaced, DynBackend>;

pub(crate) fn step(name: &str) {
    println!("STEP {name}");
    let _ = std::io::stdout().flush();
}

/// Runs every workload on one target.
///
/// `only` names one group of workloads to run alone: `postgres-scale` (the PostgreSQL scale
/// workloads beside raw SQL and postgres-es, on the `postgres` target) or `sagas` (the saga
/// workloads beside their baseline).
pub async fn run_target(target: &str, scale: Scale, only: Option<&str>) -> TargetResult {
    let mut result =
        TargetResult { target: target.to_owned(), skipped: None, measurements: Vec::new(), peak_rss_bytes: None };
    let backend = match targets::open(target).await {
        Ok(backend) => backend,
        Err(reason) => {
            result.skipped = Some(reason);
            return result;
        }
    };
    let store: Store = EventStore::with_backend(backend);
    let outcome = match only {
        None => run_all(target, &store, scale).await,
        #[cfg(feature = "postgres")]
        Some("postgres-scale") if crate::projections::has_transactions(target) => {
            crate::postgres::scale(target, scale).await
        }
        Some("sagas") => crate::sagas::run(target, scale).await,
        Some(_) => Ok(Vec::new()),
    };
    match outcome {
        Ok(measurements) => result.measurements = measurements,
        Err(error) => result.skipped = Some(format!("failed: {error}")),
    }
    result
}

async fn run_all(target: &str, store: &Store, scale: Scale) -> Result<Vec<Measurement>, allframe::Error> {
    let mut out = Vec::new();
    let duration = Duration::from_secs_f64(scale.seconds);
    let measure = |workload: &str, unit: &str, runs: Vec<(f64, Vec<f64>)>| median(target, workload, unit, runs);

    step("append_single");
    let mut runs = Vec::new();
    for run in 0..scale.runs {
        runs.push(appenders(store, 1, 1, duration, &format!("single-{run}")).await?);
    }
    out.push(measure("append_single", "append of 1 event", runs));

    for tasks in [1usize, 8, 64] {
        step(&format!("concurrent_{tasks}"));
        let mut runs = Vec::new();
        for run in 0..scale.runs {
            runs.push(appenders(store, tasks, 1, duration, &format!("conc{tasks}-{run}")).await?);
        }
        out.push(measure(&format!("concurrent_{tasks}"), "append of 1 event", runs));
    }

    step("append_batch100");
    let mut runs = Vec::new();
    for run in 0..scale.runs {
        runs.push(appenders(store, 1, 100, duration, &format!("batch-{run}")).await?);
    }
    out.push(measure("append_batch100", "append of 100 events", runs));

    // Commands through the bus (issue 18): each dispatcher on an aggregate of its own, with
    // the aggregate cache, so that a command costs a check of the stream, a decision and an
    // append, whatever the aggregate's length.
    let bus = counter_bus(store.backend().clone(), store.codec(), Some(1024));
    for tasks in [1u32, 64] {
        step(&format!("dispatch_{tasks}"));
        let mut runs = Vec::new();
        for run in 0..scale.runs {
            runs.push(dispatchers(&bus, tasks, duration, 1000 * (tasks + run)).await?);
        }
        out.push(measure(&format!("dispatch_{tasks}"), "dispatch of 1 command (cached aggregate)", runs));
    }

    step("fill the store");
    let filled = store.backend().head_position().await?;
    let mut n = filled;
    while n < scale.store_events {
        let batch: Vec<OrderPlaced> = (n..n + 1000).map(order_placed).collect();
        store.append(&format!("fill-{}", n / 1000 % 997), batch).await?;
        n += 1000;
    }
    store.append_expected("big-stream", ExpectedVersion::NoStream, (0..1000).map(order_placed).collect()).await?;

    step("read_stream_1000");
    let backend = store.shared_backend();
    let mut runs = Vec::new();
    for _ in 0..scale.runs {
        runs.push(repeat(duration, 1000, || async { backend.get_events("big-stream").await.map(|_| ()) }).await?);
    }
    out.push(measure("read_stream_1000", "read of a 1,000-event stream (records)", runs));

    step("aggregate_load");
    for (workload, snapshot) in [("aggregate_load_no_snapshot", false), ("aggregate_load_snapshot", true)] {
        let stream = format!("agg-{snapshot}");
        store.append_expected(&stream, ExpectedVersion::NoStream, (0..1000).map(order_placed).collect()).await?;
        if snapshot {
            let state = store.load_aggregate::<CustomerTotals>(&stream).await?;
            store.save_snapshot(&stream, &state.state, 990).await?;
        }
        let mut runs = Vec::new();
        for _ in 0..scale.runs {
            runs.push(
                repeat(duration, 1, || async { store.load_aggregate::<CustomerTotals>(&stream).await.map(|_| ()) })
                    .await?,
            );
        }
        out.push(measure(
            workload,
            if snapshot { "load (snapshot at 990 + 10 events)" } else { "load (1,000 events decoded)" },
            runs,
        ));
    }

    step("full_log_read");
    let mut runs = Vec::new();
    for _ in 0..scale.runs {
        let start = Instant::now();
        let count = all_events(&*backend, 0, 1024).try_fold(0u64, |n, _| async move { Ok(n + 1) }).await?;
        runs.push((count as f64 / start.elapsed().as_secs_f64(), Vec::new()));
    }
    out.push(measure("full_log_read", "event read, streamed (records)", runs));

    step("catch_up_subscription");
    let mut runs = Vec::new();
    for _ in 0..scale.runs {
        let head = backend.head_position().await?;
        let options = SubscriptionOptions { page_size: 1024, ..SubscriptionOptions::default() };
        let mut subscription = RawSubscription::start(Arc::clone(&backend), StartFrom::Beginning, options).await?;
        let want = scale.subscription_events.min(backend.stats().await?.events);
        let start = Instant::now();
        let mut seen = 0;
        while seen < want {
            let event = subscription.next().await?;
            seen += 1;
            if event.position >= head {
                break;
            }
        }
        runs.push((seen as f64 / start.elapsed().as_secs_f64(), Vec::new()));
    }
    out.push(measure("catch_up_subscription", "event delivered (records)", runs));

    out.push(crate::projections::live_lag(store, target, duration).await?);
    out.extend(crate::sagas::run(target, scale).await?);
    out.extend(crate::projections::catch_up(target, scale).await?);
    #[cfg(feature = "postgres")]
    if crate::projections::has_transactions(target) {
        out.extend(crate::projections::transactional(target, scale).await?);
        out.extend(crate::postgres::scale(target, scale).await?);
    }
    Ok(out)
}

/// `tasks` tasks append batches of `batch` events to their own streams until `duration` ends.
/// Returns events/s and per-append latencies in microseconds.
async fn appenders(
    store: &Store,
    tasks: usize,
    batch: usize,
    duration: Duration,
    prefix: &str,
) -> Result<(f64, Vec<f64>), allframe::Error> {
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let store = store.clone();
            let stream = format!("{prefix}-{task}");
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let events: Vec<OrderPlaced> = (n..n + batch as u64).map(order_placed).collect();
                    let begin = Instant::now();
                    store.append(&stream, events).await?;
                    latencies.push(begin.elapsed().as_secs_f64() * 1e6);
                    n += batch as u64;
                }
                Ok::<_, allframe::Error>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await.expect("appender task")?);
    }
    let events = latencies.len() as f64 * batch as f64;
    Ok((events / start.elapsed().as_secs_f64(), latencies))
}

/// `tasks` tasks dispatch `Bump` commands, each to its own counter (numbered from `first`),
/// until `duration` ends. Returns commands/s and per-dispatch latencies in microseconds.
async fn dispatchers(
    bus: &CommandBus,
    tasks: u32,
    duration: Duration,
    first: u32,
) -> Result<(f64, Vec<f64>), allframe::Error> {
    let bus = bus.clone();
    concurrently(tasks, duration, move |task, _| {
        let bus = bus.clone();
        async move {
            match bus.dispatch(Bump { counter: first + task }).await {
                Ok(_) => Ok(()),
                Err(DispatchError::Store(error)) => Err(error),
                Err(other) => Err(allframe::Error::Configuration { reason: other.to_string() }),
            }
        }
    })
    .await
}

/// `tasks` tasks each run `operation(task, n)` for n = 0, 1, … one after another until
/// `duration` ends. Returns operations/s and each operation's latency in microseconds.
pub(crate) async fn concurrently<F, Fut>(
    tasks: u32,
    duration: Duration,
    operation: F,
) -> Result<(f64, Vec<f64>), allframe::Error>
where
    F: Fn(u32, u32) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), allframe::Error>> + Send + 'static,
{
    let operation = std::sync::Arc::new(operation);
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let operation = std::sync::Arc::clone(&operation);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0;
                while Instant::now() < deadline {
                    let begin = Instant::now();
                    operation(task, n).await?;
                    latencies.push(begin.elapsed().as_secs_f64() * 1e6);
                    n += 1;
                }
                Ok::<_, allframe::Error>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for handle in handles {
        let task = handle.await.map_err(|e| allframe::Error::Configuration { reason: e.to_string() })?;
        latencies.extend(task?);
    }
    Ok((latencies.len() as f64 / start.elapsed().as_secs_f64(), latencies))
}

/// Repeats `operation` until `duration` ends; returns events/s (with `events` per operation)
/// and latencies in microseconds.
async fn repeat<F, Fut>(duration: Duration, events: u64, mut operation: F) -> Result<(f64, Vec<f64>), allframe::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), allframe::Error>>,
{
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let mut latencies = Vec::new();
    while Instant::now() < deadline || latencies.len() < 5 {
        let begin = Instant::now();
        operation().await?;
        latencies.push(begin.elapsed().as_secs_f64() * 1e6);
    }
    Ok((latencies.len() as f64 * events as f64 / start.elapsed().as_secs_f64(), latencies))
}

/// The run with the median throughput, with its latency percentiles.
pub(crate) fn median(target: &str, workload: &str, unit: &str, mut runs: Vec<(f64, Vec<f64>)>) -> Measurement {
    let count = runs.len() as u32;
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (events_per_sec, mut latencies) = runs.swap_remove(runs.len() / 2);
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let latency_us = (!latencies.is_empty()).then(|| [percentile(0.5), percentile(0.99), percentile(0.999)]);
    let rate_unit = if workload.starts_with("aggregate_load") {
        "loads/s"
    } else if workload.starts_with("dispatch") {
        "commands/s"
    } else if workload.starts_with("saga_") {
        "orders/s"
    } else {
        "events/s"
    }
    .to_owned();
    Measurement {
        target: target.to_owned(),
        workload: workload.to_owned(),
        events_per_sec,
        rate_unit,
        latency_us,
        unit: unit.to_owned(),
        runs: count,
    }
}
