//! AllSource append throughput: durable mode with 64 concurrent appenders (group commit),
//! durable mode with one appender, and no-sync mode with batches of 100 events.
//!
//! `cargo bench -p allframe-backend-allsource --bench allsource`
//! (set `ALLSOURCE_BENCH_DIR` to put the stores on another disk than the temp directory).

use std::sync::Arc;
use std::time::{Duration, Instant};

use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig, SyncMode};
use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, NewEvent};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const APPENDERS: u64 = 64;

fn event() -> NewEvent {
    NewEvent::new("Benched", vec![b'x'; 200])
}

fn temp_dir() -> tempfile::TempDir {
    match std::env::var_os("ALLSOURCE_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).expect("bench dir"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime")
}

fn durable_concurrent(c: &mut Criterion) {
    let rt = runtime();
    let dir = temp_dir();
    let store = Arc::new(AllSourceBackend::production(dir.path()).expect("open"));
    let mut group = c.benchmark_group("allsource_durable");
    group.throughput(Throughput::Elements(APPENDERS));
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("64_appenders_1_event_200B", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                let tasks: Vec<_> = (0..APPENDERS)
                    .map(|task| {
                        let store = store.clone();
                        tokio::spawn(async move {
                            let stream = format!("bench-{task}");
                            for _ in 0..iters {
                                store.append(&stream, ExpectedVersion::Any, vec![event()]).await.expect("append");
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("task");
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

fn durable_single(c: &mut Criterion) {
    let rt = runtime();
    let dir = temp_dir();
    let store = AllSourceBackend::production(dir.path()).expect("open");
    let mut group = c.benchmark_group("allsource_durable");
    group.throughput(Throughput::Elements(1));
    group.bench_function("1_appender_1_event_200B", |b| {
        b.to_async(&rt).iter(|| async {
            store.append("single", ExpectedVersion::Any, vec![event()]).await.expect("append");
        })
    });
    group.finish();
}

fn nosync_batched(c: &mut Criterion) {
    let rt = runtime();
    let dir = temp_dir();
    let store =
        AllSourceBackend::with_config(AllSourceConfig::durable(dir.path()).sync(SyncMode::NoSync)).expect("open");
    let mut group = c.benchmark_group("allsource_nosync");
    group.throughput(Throughput::Elements(100));
    group.bench_function("batch_100_events_200B", |b| {
        b.to_async(&rt).iter(|| async {
            let batch: Vec<_> = (0..100).map(|_| event()).collect();
            store.append("batched", ExpectedVersion::Any, batch).await.expect("append");
        })
    });
    group.finish();
}

fn memory_single(c: &mut Criterion) {
    let rt = runtime();
    let store = AllSourceBackend::new().expect("open");
    let mut group = c.benchmark_group("allsource_memory");
    group.throughput(Throughput::Elements(1));
    group.bench_function("1_appender_1_event_200B", |b| {
        b.to_async(&rt).iter(|| async {
            store.append("mem", ExpectedVersion::Any, vec![event()]).await.expect("append");
        })
    });
    group.finish();
}

criterion_group!(benches, durable_concurrent, durable_single, nosync_batched, memory_single);
criterion_main!(benches);
