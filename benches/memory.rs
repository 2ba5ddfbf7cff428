//! Criterion benchmarks of the memory backend through the typed store (issue 2's figures):
//! `cargo bench -p allframe-benches --bench memory`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use allframe::Codec;
use allframe::prelude::*;
use allframe_benches::{BenchEvent, bench_event};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().unwrap()
}

fn append_one(c: &mut Criterion) {
    let rt = runtime(1);
    let mut group = c.benchmark_group("memory/append_one_typed_event");
    group.throughput(Throughput::Elements(1));
    for codec in [Codec::Json, Codec::Postcard] {
        group.bench_function(codec.name(), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let store: EventStore<BenchEvent> = EventStore::new().with_codec(codec);
                    let event = bench_event(1);
                    let start = Instant::now();
                    for _ in 0..iters {
                        store.append("account-1", vec![event.clone()]).await.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

fn get_events(c: &mut Criterion) {
    let rt = runtime(1);
    let mut group = c.benchmark_group("memory/get_events_100");
    group.throughput(Throughput::Elements(100));
    for codec in [Codec::Json, Codec::Postcard] {
        let store: EventStore<BenchEvent> = EventStore::new().with_codec(codec);
        rt.block_on(store.append("stream", (0..100).map(bench_event).collect())).unwrap();
        group.bench_function(format!("typed_{}", codec.name()), |b| {
            b.iter(|| rt.block_on(store.get_events("stream")).unwrap())
        });
        if codec == Codec::Json {
            group.bench_function("raw_records", |b| {
                b.iter(|| rt.block_on(store.backend().get_events("stream")).unwrap())
            });
        }
    }
    group.finish();
}

/// Total time per append with `tasks` tasks appending to distinct streams at once.
fn concurrent(c: &mut Criterion) {
    let rt = runtime(2);
    let mut group = c.benchmark_group("memory/concurrent_appends");
    group.throughput(Throughput::Elements(1));
    for tasks in [1u64, 4] {
        group.bench_function(format!("{tasks}_tasks"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let store: Arc<EventStore<BenchEvent>> = Arc::new(EventStore::new());
                    let per_task = iters.div_ceil(tasks);
                    let start = Instant::now();
                    let handles: Vec<_> = (0..tasks)
                        .map(|task| {
                            let store = Arc::clone(&store);
                            tokio::spawn(async move {
                                let stream = format!("stream-{task}");
                                let event = bench_event(task);
                                for _ in 0..per_task {
                                    store.append(&stream, vec![event.clone()]).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for handle in handles {
                        handle.await.unwrap();
                    }
                    start.elapsed().mul_f64(iters as f64 / (per_task * tasks) as f64)
                })
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = append_one, get_events, concurrent
}
criterion_main!(benches);
