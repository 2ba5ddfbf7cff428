//! Criterion benchmarks of event versioning (issue 20): one upcast step on a 200-byte JSON
//! event, and a 1,000-event stream read through a three-step chain (closures on the parsed
//! value, and the same changes declared as edits of the text) beside the same read of
//! events stored at the current version: `cargo bench -p allframe-benches --bench versioning`.

use allframe::Codec;
use allframe::cqrs::Upcasters;
use allframe_benches::upcast_workload::{OrderPlaced, Stores, rename, stores, version_1};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn upcasting(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let Stores { plain, closures: upcast, declared } = rt.block_on(stores());

    let mut group = c.benchmark_group("versioning/read_1000");
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("stored_current", |b| b.iter(|| rt.block_on(plain.get_events("current")).unwrap()));
    group.bench_function("stored_current_through_upcasting", |b| {
        b.iter(|| rt.block_on(upcast.get_events("current")).unwrap())
    });
    group.bench_function("stored_v1_three_steps", |b| b.iter(|| rt.block_on(upcast.get_events("old")).unwrap()));
    group.bench_function("stored_v1_three_declared_steps", |b| {
        b.iter(|| rt.block_on(declared.get_events("old")).unwrap())
    });
    group.finish();

    let one_step = Upcasters::<OrderPlaced>::new()
        .json("OrderPlaced", 3, rename("customer", "customer_id"))
        .build()
        .expect("a sound chain");
    let payload = serde_json::to_vec(&version_1(7)).unwrap();
    let mut group = c.benchmark_group("versioning/one_step");
    group.throughput(Throughput::Elements(1));
    group.bench_function("field_rename_200_bytes", |b| {
        b.iter(|| one_step.apply("OrderPlaced", 3, &payload, Codec::Json).unwrap())
    });
    let one_declared = Upcasters::<OrderPlaced>::new()
        .rename_field("OrderPlaced", 3, &[], "customer", "customer_id")
        .build()
        .expect("a sound chain");
    group.bench_function("declared_field_rename_200_bytes", |b| {
        b.iter(|| one_declared.apply("OrderPlaced", 3, &payload, Codec::Json).unwrap())
    });
    group.finish();
}

criterion_group!(benches, upcasting);
criterion_main!(benches);
