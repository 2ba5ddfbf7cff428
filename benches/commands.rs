//! Criterion benchmarks of the command path beside cqrs-es 0.5 in one run (issue 18), memory
//! backend: `cargo bench -p allframe-benches --bench commands > /dev/null` (cqrs-es's
//! `MemStore` prints a line per load and per commit; criterion's figures are then read from
//! `target/criterion/commands_*/*/new/estimates.json`).
//!
//! * `commands_load_1000`: one load of a 1,000-event aggregate (cqrs-es `MemStore::load_aggregate`,
//!   our `EventStore::load_aggregate` with JSON and postcard), and decoding the 1,000 payloads
//!   alone, the floor of a store that keeps bytes;
//! * `commands_round_robin`: 100,000 commands round-robin over 100 aggregates, which end at
//!   1,000 events each (cqrs-es `CqrsFramework::execute`, our `EventStore::execute` and
//!   `CommandBus::dispatch` with and without the aggregate cache);
//! * `commands_new_aggregate`: one command on a new aggregate, direct `EventStore::execute`
//!   against `CommandBus::dispatch`: the bus's own cost per command.

use std::sync::Arc;
use std::time::{Duration, Instant};

use allframe::cqrs::NoError;
use allframe::prelude::*;
use allframe::{Codec, InMemoryBackend};
use allframe_benches::{Bump, Counter, CounterEvent, bumped, counter_bus, counter_stream};
use cqrs_es::CqrsFramework;
use cqrs_es::mem_store::MemStore;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

/// Aggregates of the round-robin workload.
const AGGREGATES: u32 = 100;
/// Events each aggregate ends with.
const EVENTS_EACH: u32 = 1000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[path = "support/cqrs_es.rs"]
mod es;

use es::{EsBump, EsCounter, QuietStore};

fn es_ids() -> Vec<String> {
    (0..AGGREGATES).map(counter_stream).collect()
}

/// 100,000 cqrs-es commands round-robin over a fresh store.
async fn es_round_robin<S: cqrs_es::EventStore<EsCounter>>(store: S) -> Duration {
    let cqrs = CqrsFramework::new(store, vec![], ());
    let ids = es_ids();
    let start = Instant::now();
    for _ in 0..EVENTS_EACH {
        for id in &ids {
            cqrs.execute(id, EsBump).await.unwrap();
        }
    }
    start.elapsed()
}

/// 100,000 `EventStore::execute` round-robin over a fresh memory store.
async fn execute_round_robin(codec: Codec) -> Duration {
    let store: EventStore<CounterEvent> = EventStore::new().with_codec(codec);
    let ids = es_ids();
    let start = Instant::now();
    for _ in 0..EVENTS_EACH {
        for id in &ids {
            store.execute::<Counter, _, NoError>(id, |counter| Ok(vec![bumped(counter.bumps)])).await.unwrap();
        }
    }
    start.elapsed()
}

/// 100,000 `CommandBus::dispatch` round-robin over a fresh memory store.
async fn dispatch_round_robin(codec: Codec, cache: Option<usize>) -> Duration {
    let bus = counter_bus(Arc::new(InMemoryBackend::new()), codec, cache);
    let start = Instant::now();
    for _ in 0..EVENTS_EACH {
        for counter in 0..AGGREGATES {
            bus.dispatch(Bump { counter }).await.unwrap();
        }
    }
    start.elapsed()
}

fn load_1000(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("commands_load_1000");
    group.throughput(Throughput::Elements(u64::from(EVENTS_EACH)));

    let mem_store = MemStore::<EsCounter>::default();
    let quiet = QuietStore::default();
    rt.block_on(async {
        let loud = CqrsFramework::new(mem_store.clone(), vec![], ());
        let cqrs = CqrsFramework::new(quiet.clone(), vec![], ());
        for _ in 0..EVENTS_EACH {
            loud.execute("counter-0", EsBump).await.unwrap();
            cqrs.execute("counter-0", EsBump).await.unwrap();
        }
    });
    group.bench_function("cqrs-es_mem_store", |b| {
        b.iter(|| rt.block_on(cqrs_es::EventStore::load_aggregate(&mem_store, "counter-0")).unwrap())
    });
    group.bench_function("cqrs-es_quiet_store", |b| {
        b.iter(|| rt.block_on(cqrs_es::EventStore::load_aggregate(&quiet, "counter-0")).unwrap())
    });

    for codec in [Codec::Json, Codec::Postcard] {
        let store: EventStore<CounterEvent> = EventStore::new().with_codec(codec);
        rt.block_on(async {
            for _ in 0..EVENTS_EACH {
                store.execute::<Counter, _, NoError>("counter-0", |c| Ok(vec![bumped(c.bumps)])).await.unwrap();
            }
        });
        let loaded = rt.block_on(store.load_aggregate::<Counter>("counter-0")).unwrap();
        assert_eq!((loaded.version, loaded.state.bumps), (1000, 1000));
        group.bench_function(format!("allframe_{}", codec.name()), |b| {
            b.iter(|| rt.block_on(store.load_aggregate::<Counter>("counter-0")).unwrap())
        });
        // The floor of any store that keeps bytes: decoding the payloads and applying them.
        let payloads: Vec<Vec<u8>> = (0..u64::from(EVENTS_EACH)).map(|n| codec.encode(&bumped(n)).unwrap()).collect();
        group.bench_function(format!("decode_only_{}", codec.name()), |b| {
            b.iter(|| {
                let mut counter = Counter::default();
                for payload in &payloads {
                    let event: CounterEvent = codec.decode(payload).unwrap();
                    allframe::Aggregate::apply(&mut counter, &event);
                }
                counter
            })
        });
    }
    group.finish();
}

fn round_robin(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("commands_round_robin");
    group.sampling_mode(SamplingMode::Flat).sample_size(10).measurement_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(u64::from(AGGREGATES * EVENTS_EACH)));
    let mut variant = |name: &str, run: &dyn Fn() -> Duration| {
        group.bench_function(name, |b| b.iter_custom(|iters| (0..iters).map(|_| run()).sum()));
    };
    variant("cqrs-es_mem_store", &|| rt.block_on(es_round_robin(MemStore::<EsCounter>::default())));
    variant("cqrs-es_quiet_store", &|| rt.block_on(es_round_robin(QuietStore::default())));
    for codec in [Codec::Json, Codec::Postcard] {
        let name = codec.name();
        variant(&format!("execute_{name}"), &|| rt.block_on(execute_round_robin(codec)));
        variant(&format!("dispatch_{name}"), &|| rt.block_on(dispatch_round_robin(codec, None)));
        variant(&format!("dispatch_cached_{name}"), &|| {
            rt.block_on(dispatch_round_robin(codec, Some(AGGREGATES as usize)))
        });
    }
    group.finish();
}

/// One command on a new aggregate: what the bus adds to a direct `EventStore::execute`.
fn new_aggregate(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("commands_new_aggregate");
    group.throughput(Throughput::Elements(1));
    let store: EventStore<CounterEvent> = EventStore::new();
    let mut n = 0u32;
    group.bench_function("execute_json", |b| {
        b.iter(|| {
            n += 1;
            let stream = counter_stream(n);
            rt.block_on(store.execute::<Counter, _, NoError>(&stream, |c| Ok(vec![bumped(c.bumps)]))).unwrap()
        })
    });
    let bus = counter_bus(Arc::new(InMemoryBackend::new()), Codec::Json, None);
    let mut n = 0u32;
    group.bench_function("dispatch_json", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(bus.dispatch(Bump { counter: n })).unwrap()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = load_1000, new_aggregate, round_robin
}
criterion_main!(benches);
