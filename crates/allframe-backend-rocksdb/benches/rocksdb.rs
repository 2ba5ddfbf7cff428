//! The RocksDB backend beside raw RocksDB writing the same bytes, in the same run:
//! `cargo bench -p allframe-backend-rocksdb --bench rocksdb`.
//!
//! Every figure is in elements per second (puts for raw RocksDB, events for appends), with
//! 200-byte values / payloads. Raw RocksDB uses the same compression and memtable size as the
//! backend's defaults and writes to sequential big-endian keys, as the backend's event log does.
//! The read figure (p50/p99 of reading one 1,000-event stream) is printed at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use allframe_backend_rocksdb::{RocksDbBackend, RocksDbConfig};
use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, NewEvent};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rocksdb::{DB, DBCompressionType, Options, WriteBatch, WriteOptions};

const VALUE_BYTES: usize = 200;
const CONCURRENT_APPENDERS: u64 = 64;
const APPENDS_PER_APPENDER: u64 = 16;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn raw_db(dir: &tempfile::TempDir) -> DB {
    let defaults = RocksDbConfig::default();
    let mut options = Options::default();
    options.create_if_missing(true);
    options.set_compression_type(DBCompressionType::Lz4);
    options.set_write_buffer_size(defaults.write_buffer_bytes);
    options.set_bytes_per_sync(1 << 20);
    DB::open(&options, dir.path()).unwrap()
}

fn write_options(sync: bool) -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(sync);
    options
}

fn events(count: usize, seed: u64) -> Vec<NewEvent> {
    (0..count).map(|i| NewEvent::new("Benchmarked", vec![(seed as usize + i) as u8; VALUE_BYTES])).collect()
}

fn writes(c: &mut Criterion) {
    let rt = runtime();
    let value = vec![7u8; VALUE_BYTES];
    let raw_dir = tempfile::tempdir().unwrap();
    let raw = Arc::new(raw_db(&raw_dir));
    let next_key = Arc::new(AtomicU64::new(0));
    let key = |next: &AtomicU64| next.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    let mut group = c.benchmark_group("rocksdb");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));

    group.throughput(Throughput::Elements(1000));
    group.bench_function("raw/put_nosync_x1000", |b| {
        let options = write_options(false);
        b.iter(|| {
            for _ in 0..1000 {
                raw.put_opt(key(&next_key), &value, &options).unwrap();
            }
        })
    });
    group.bench_function("raw/batch1000_nosync", |b| {
        let options = write_options(false);
        b.iter(|| {
            let mut batch = WriteBatch::default();
            for _ in 0..1000 {
                batch.put(key(&next_key), &value);
            }
            raw.write_opt(batch, &options).unwrap();
        })
    });
    group.bench_function("raw/layout_batch100_nosync", |b| {
        // The keys and bytes our layout writes for 100-event appends (a 264-byte record and a
        // 16-byte id per event, an index entry and a head per append), as plain puts.
        let options = write_options(false);
        let record = vec![7u8; 264];
        b.iter(|| {
            for _ in 0..10 {
                let mut batch = WriteBatch::default();
                let mut first = 0;
                for i in 0..100 {
                    let n = next_key.fetch_add(1, Ordering::Relaxed);
                    first = if i == 0 { n } else { first };
                    batch.put([&[1u8][..], &n.to_be_bytes()].concat(), &record);
                    batch.put([&[2u8][..], &u128::from(n).to_be_bytes()].concat(), n.to_be_bytes());
                }
                batch.put([&[3u8][..], b"batched\0", &first.to_be_bytes()].concat(), [0u8; 16]);
                batch.put([&[4u8][..], b"batched"].concat(), first.to_be_bytes());
                raw.write_opt(batch, &options).unwrap();
            }
        })
    });
    group.bench_function("raw/batch1000_sync", |b| {
        let options = write_options(true);
        b.iter(|| {
            let mut batch = WriteBatch::default();
            for _ in 0..1000 {
                batch.put(key(&next_key), &value);
            }
            raw.write_opt(batch, &options).unwrap();
        })
    });
    group.throughput(Throughput::Elements(CONCURRENT_APPENDERS * APPENDS_PER_APPENDER));
    group.bench_function("raw/put_sync_64_threads", |b| {
        // RocksDB's own write grouping: 64 threads, each a synced single put at a time.
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..CONCURRENT_APPENDERS {
                    scope.spawn(|| {
                        let options = write_options(true);
                        for _ in 0..iters * APPENDS_PER_APPENDER {
                            raw.put_opt(key(&next_key), &value, &options).unwrap();
                        }
                    });
                }
            });
            start.elapsed()
        })
    });

    let nosync_dir = tempfile::tempdir().unwrap();
    let nosync =
        RocksDbBackend::open_with(nosync_dir.path(), RocksDbConfig::default().sync(false)).map(Arc::new).unwrap();
    let sync_dir = tempfile::tempdir().unwrap();
    let sync = RocksDbBackend::open_with(sync_dir.path(), RocksDbConfig::default()).map(Arc::new).unwrap();

    group.throughput(Throughput::Elements(1000));
    for (name, store) in [("append/batch100_nosync", &nosync), ("append/batch100_sync", &sync)] {
        let mut seed = 0;
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    seed += 10;
                    (0..10).map(|i| events(100, seed + i)).collect::<Vec<_>>()
                },
                |batches| {
                    rt.block_on(async {
                        for batch in batches {
                            store.append("batched", ExpectedVersion::Any, batch).await.unwrap();
                        }
                    })
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.throughput(Throughput::Elements(CONCURRENT_APPENDERS * APPENDS_PER_APPENDER));
    for events_per_append in [1, APPENDS_PER_APPENDER] {
        // 64 tasks, each appending to its own stream; 1,024 events per iteration either way.
        let appends_per_iteration = APPENDS_PER_APPENDER / events_per_append;
        group.bench_function(format!("append/sync_64_appenders_x{events_per_append}_events"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..CONCURRENT_APPENDERS)
                        .map(|task| {
                            let sync = Arc::clone(&sync);
                            tokio::spawn(async move {
                                let stream = format!("appender-{task}");
                                for n in 0..iters * appends_per_iteration {
                                    let batch = events(events_per_append as usize, n);
                                    sync.append(&stream, ExpectedVersion::Any, batch).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
    rt.block_on(async {
        for (name, store) in [("nosync", &nosync), ("sync", &sync)] {
            let stats = store.stats().await.unwrap();
            let groups: f64 = stats.details["group_commits"].parse().unwrap();
            let writes: f64 = stats.details["grouped_writes"].parse().unwrap();
            println!("append store ({name}): {} events, {:.1} appends per group commit", stats.events, writes / groups);
        }
    });
}

fn reads(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = RocksDbBackend::open_with(dir.path(), RocksDbConfig::default().sync(false)).unwrap();
    rt.block_on(async {
        // The 1,000-event stream is written in 10 appends interleaved with another stream's.
        for seed in 0..10 {
            store.append("read-me", ExpectedVersion::Any, events(100, seed)).await.unwrap();
            store.append("other", ExpectedVersion::Any, events(100, seed)).await.unwrap();
        }
    });
    let mut group = c.benchmark_group("rocksdb");
    group.sample_size(20).measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1000));
    group.bench_function("read/stream_1000_events", |b| {
        b.iter(|| {
            let events = rt.block_on(store.read_stream("read-me", 0, 1000)).unwrap();
            assert_eq!(events.len(), 1000);
        })
    });
    group.finish();
    let mut samples: Vec<Duration> = (0..2000)
        .map(|_| {
            let start = Instant::now();
            let events = rt.block_on(store.read_stream("read-me", 0, 1000)).unwrap();
            let elapsed = start.elapsed();
            assert_eq!(events.len(), 1000);
            elapsed
        })
        .collect();
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "read of a 1,000-event stream over {} reads: p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        at(0.50),
        at(0.99),
        samples[samples.len() - 1]
    );
}

criterion_group!(benches, writes, reads);
criterion_main!(benches);
