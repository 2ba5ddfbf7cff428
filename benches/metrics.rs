//! What metrics cost on the memory backend's append path (issue 23): the plain store beside
//! the same store through `Metered` with no recorder installed (the promise: at most 3 % more),
//! and with a Prometheus recorder recording. `cargo bench -p allframe-benches --bench metrics`.

use std::time::Instant;

use allframe::{EventStore, InMemoryBackend, Metered};
use allframe_benches::{BenchEvent, bench_event};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

/// Times `iters` appends of one event to one stream of `store`.
async fn appends<B: allframe::EventStoreBackend>(store: &EventStore<BenchEvent, B>, iters: u64) -> std::time::Duration {
    let event = bench_event(1);
    let start = Instant::now();
    for _ in 0..iters {
        store.append("account-1", vec![event.clone()]).await.unwrap();
    }
    start.elapsed()
}

fn append_one(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("metrics/memory_append_one_typed_event");
    group.throughput(Throughput::Elements(1));
    group.bench_function("plain", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let store: EventStore<BenchEvent, InMemoryBackend> = EventStore::with_backend(InMemoryBackend::new());
                appends(&store, iters).await
            })
        })
    });
    group.bench_function("metered_no_recorder", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let store = EventStore::<BenchEvent, _>::with_backend(Metered::new(InMemoryBackend::new()));
                appends(&store, iters).await
            })
        })
    });
    // The handles bind to the recorder installed when the wrapper is made: a local one here,
    // so that the runs above stay without a recorder.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    group.bench_function("metered_prometheus_recorder", |b| {
        b.iter_custom(|iters| {
            let backend = metrics::with_local_recorder(&recorder, || Metered::new(InMemoryBackend::new()));
            rt.block_on(async {
                let store = EventStore::<BenchEvent, _>::with_backend(backend);
                appends(&store, iters).await
            })
        })
    });
    group.finish();
}

criterion_group!(benches, append_one);
criterion_main!(benches);
