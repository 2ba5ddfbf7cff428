//! One command-path workload, repeated, for instruction counts under
//! `valgrind --tool=callgrind` (timings come from `benches/commands.rs`):
//! `cargo run --release -p allframe-benches --example command_path -- WORKLOAD [N]`, where
//! WORKLOAD is `load-json`, `load-postcard` (N loads of a 1,000-event aggregate;
//! `load-interleaved-*`: 100 such, whose events were appended in turn, loaded in turn),
//! `execute-json`, `dispatch-json`, `dispatch-cached-json` (N commands round-robin over 100
//! aggregates; `-postcard` for the other codec), `dispatch-new`, `execute-new` (N commands,
//! each on a new aggregate), and cqrs-es's `es-load`, `es-quiet-load`, `es-execute`,
//! `es-quiet-execute`.

use std::sync::Arc;

use allframe::cqrs::NoError;
use allframe::prelude::*;
use allframe::{Codec, InMemoryBackend};
use allframe_benches::{Bump, Counter, CounterEvent, bumped, counter_bus, counter_stream};

async fn run(workload: &str, n: u32) -> u64 {
    let codec = if workload.ends_with("postcard") { Codec::Postcard } else { Codec::Json };
    match workload {
        "load-json" | "load-postcard" => {
            let store: EventStore<CounterEvent> = EventStore::new().with_codec(codec);
            store.append("counter-0", (0..1000).map(bumped).collect()).await.unwrap();
            let mut total = 0;
            for _ in 0..n {
                total += store.load_aggregate::<Counter>("counter-0").await.unwrap().state.bumps;
            }
            total
        }
        "load-interleaved-json" | "load-interleaved-postcard" => {
            let store: EventStore<CounterEvent> = EventStore::new().with_codec(codec);
            for n in 0..1000 {
                for counter in 0..100 {
                    store.append(&counter_stream(counter), vec![bumped(n)]).await.unwrap();
                }
            }
            let ids: Vec<String> = (0..100).map(counter_stream).collect();
            let mut total = 0;
            for i in 0..n {
                total += store.load_aggregate::<Counter>(&ids[(i % 100) as usize]).await.unwrap().state.bumps;
            }
            total
        }
        "execute-json" | "execute-postcard" => {
            let store: EventStore<CounterEvent> = EventStore::new().with_codec(codec);
            let ids: Vec<String> = (0..100).map(counter_stream).collect();
            let mut total = 0;
            for i in 0..n {
                let id = &ids[(i % 100) as usize];
                let result = store.execute::<Counter, _, NoError>(id, |c| Ok(vec![bumped(c.bumps)])).await.unwrap();
                total += result.stream_version;
            }
            total
        }
        "dispatch-json" | "dispatch-postcard" | "dispatch-cached-json" | "dispatch-cached-postcard" => {
            let cache = workload.starts_with("dispatch-cached").then_some(100);
            let bus = counter_bus(Arc::new(InMemoryBackend::new()), codec, cache);
            let mut total = 0;
            for i in 0..n {
                total += bus.dispatch(Bump { counter: i % 100 }).await.unwrap().stream_version;
            }
            total
        }
        "dispatch-new" => {
            let bus = counter_bus(Arc::new(InMemoryBackend::new()), codec, None);
            let mut total = 0;
            for i in 0..n {
                total += bus.dispatch(Bump { counter: i }).await.unwrap().stream_version;
            }
            total
        }
        "execute-new" => {
            let store: EventStore<CounterEvent> = EventStore::new().with_codec(codec);
            let mut total = 0;
            for i in 0..n {
                let stream = counter_stream(i);
                let result =
                    store.execute::<Counter, _, NoError>(&stream, |c| Ok(vec![bumped(c.bumps)])).await.unwrap();
                total += result.stream_version;
            }
            total
        }
        "es-load" => es_load(cqrs_es::mem_store::MemStore::default(), n).await,
        "es-quiet-load" => es_load(es::QuietStore::default(), n).await,
        "es-execute" => es_execute(cqrs_es::mem_store::MemStore::default(), n).await,
        "es-quiet-execute" => es_execute(es::QuietStore::default(), n).await,
        other => panic!("unknown workload `{other}`"),
    }
}

/// N loads of a 1,000-event cqrs-es aggregate.
async fn es_load<S: cqrs_es::EventStore<es::EsCounter> + Clone>(store: S, n: u32) -> u64 {
    let cqrs = cqrs_es::CqrsFramework::new(store.clone(), vec![], ());
    for _ in 0..1000 {
        cqrs.execute("counter-0", es::EsBump).await.unwrap();
    }
    let mut total = 0;
    for _ in 0..n {
        let mut loaded = store.load_aggregate("counter-0").await.unwrap();
        total += cqrs_es::AggregateContext::aggregate(&mut loaded).bumps;
    }
    total
}

/// N cqrs-es commands round-robin over 100 aggregates.
async fn es_execute<S: cqrs_es::EventStore<es::EsCounter>>(store: S, n: u32) -> u64 {
    let cqrs = cqrs_es::CqrsFramework::new(store, vec![], ());
    let ids: Vec<String> = (0..100).map(counter_stream).collect();
    for i in 0..n {
        cqrs.execute(&ids[(i % 100) as usize], es::EsBump).await.unwrap();
    }
    u64::from(n)
}

#[path = "../support/cqrs_es.rs"]
mod es;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workload = args.first().map(String::as_str).unwrap_or("load-json");
    let n = args.get(1).map_or(100, |n| n.parse().expect("a count"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let total = rt.block_on(run(workload, n));
    println!("{workload} x{n}: {total}");
}
