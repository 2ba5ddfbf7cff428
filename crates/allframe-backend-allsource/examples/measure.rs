//! Measures what criterion does not: acknowledge latency percentiles (durable, 64 appenders and
//! one appender) against one raw 4 KiB write + fdatasync, and, for a large store, reopen time,
//! memory after open, and p99 of reading one 1,000-event stream from Parquet segments.
//!
//! `cargo run --release -p allframe-backend-allsource --example measure -- [events] [dir]`
//! (defaults: 1,000,000 events, a temporary directory; `ALLSOURCE_SEGMENT_MIB` sets the
//! segment size of the large store, default 64). Run it on a quiet machine.

use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig, SyncMode};
use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, NewEvent};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn event() -> NewEvent {
    NewEvent::new("Measured", vec![b'x'; 200])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let events: u64 = args.get(1).map(|a| a.parse()).transpose()?.unwrap_or(1_000_000);
    let tmp = tempfile::tempdir()?;
    let base = args.get(2).map(std::path::PathBuf::from).unwrap_or_else(|| tmp.path().to_path_buf());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;

    // One raw 4 KiB overwrite + fdatasync, the unit the goals are stated in.
    let probe_path = base.join("fsync-probe");
    let probe = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&probe_path)?;
    probe.write_all_at(&vec![0u8; 1 << 20], 0)?;
    probe.sync_all()?;
    let mut syncs = Vec::new();
    for i in 0..500u64 {
        let start = Instant::now();
        probe.write_all_at(&[1u8; 4096], (i % 256) * 4096)?;
        probe.sync_data()?;
        syncs.push(start.elapsed());
    }
    syncs.sort();
    std::fs::remove_file(&probe_path)?;
    let fsync_p50 = percentile(&syncs, 0.5);
    println!("raw 4 KiB write + fdatasync: p50 {:?}, p99 {:?}", fsync_p50, percentile(&syncs, 0.99));

    rt.block_on(async {
        // Durable, 64 concurrent appenders of one 200-byte event.
        let dir = base.join("durable-64");
        let store = Arc::new(AllSourceBackend::production(&dir).expect("open"));
        let per_task = 2_000u64;
        let started = Instant::now();
        let tasks: Vec<_> = (0..64)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut lat = Vec::with_capacity(per_task as usize);
                    for _ in 0..per_task {
                        let s = Instant::now();
                        store.append(&format!("c-{t}"), ExpectedVersion::Any, vec![event()]).await.expect("append");
                        lat.push(s.elapsed());
                    }
                    lat
                })
            })
            .collect();
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.expect("task"));
        }
        let elapsed = started.elapsed();
        lat.sort();
        let stats = store.engine_stats();
        println!(
            "durable, 64 appenders: {:.0} events/s, ack p50 {:?}, p99 {:?} ({:.1}x fsync p50), {} fsyncs, {:.1} events per group commit",
            (64 * per_task) as f64 / elapsed.as_secs_f64(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            percentile(&lat, 0.99).as_secs_f64() / fsync_p50.as_secs_f64(),
            stats.fsyncs,
            (64 * per_task) as f64 / stats.group_commits.max(1) as f64,
        );
        drop(store);

        // Durable, one appender.
        let store = AllSourceBackend::production(base.join("durable-1")).expect("open");
        let mut lat = Vec::new();
        for _ in 0..2_000 {
            let s = Instant::now();
            store.append("single", ExpectedVersion::Any, vec![event()]).await.expect("append");
            lat.push(s.elapsed());
        }
        lat.sort();
        println!(
            "durable, 1 appender: ack p50 {:?} ({:.2}x fsync p50), p99 {:?}",
            percentile(&lat, 0.5),
            percentile(&lat, 0.5).as_secs_f64() / fsync_p50.as_secs_f64(),
            percentile(&lat, 0.99)
        );
        drop(store);

        // A large store: no-sync batches of 100 into 1,000-event streams.
        let dir = base.join("large");
        let segment_mib: u64 = std::env::var("ALLSOURCE_SEGMENT_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
        let config = AllSourceConfig::durable(&dir).sync(SyncMode::NoSync).segment_size(segment_mib << 20);
        let store = AllSourceBackend::with_config(config.clone()).expect("open");
        let started = Instant::now();
        let mut written = 0u64;
        while written < events {
            let stream = format!("stream-{}", written / 1000);
            let batch: Vec<_> = (0..100).map(|_| event()).collect();
            store.append(&stream, ExpectedVersion::Any, batch).await.expect("append");
            written += 100;
        }
        store.flush().await.expect("flush");
        println!(
            "no-sync, batches of 100: {:.0} events/s ({events} events)",
            events as f64 / started.elapsed().as_secs_f64()
        );
        let wait = Instant::now();
        loop {
            let stats = store.engine_stats();
            let files = stats.parquet_files;
            let segments = stats.wal_segments.max(1);
            if files + 1 >= segments || wait.elapsed() > Duration::from_secs(600) {
                println!("parquet conversion: {files} files after {:?}", wait.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(store);
        let before = rss_mib();
        let started = Instant::now();
        let store = AllSourceBackend::with_config(config).expect("reopen");
        let reopen = started.elapsed();
        println!("reopen of {events} events: {reopen:?}; resident memory {:.0} MiB -> {:.0} MiB", before, rss_mib());
        let stats = store.engine_stats();
        println!(
            "index: {} cold segments, {} bytes of bloom filters and fences, {} event ids and {} frames in the tail index",
            stats.index_cold_segments,
            stats.index_cold_memory_bytes,
            stats.index_tail_ids,
            stats.index_frames,
        );
        let mut lat = Vec::new();
        let streams = events / 1000;
        for i in 0..200u64 {
            // Old streams: their events are in Parquet segments.
            let stream = format!("stream-{}", (i * 7919) % (streams / 2).max(1));
            let s = Instant::now();
            let read = store.read_stream(&stream, 0, 1000).await.expect("read");
            lat.push(s.elapsed());
            assert_eq!(read.len(), 1000);
        }
        lat.sort();
        println!(
            "read of one 1,000-event stream (Parquet): p50 {:?}, p99 {:?}",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        );
        let _ = std::io::stdout().flush();
    });
    Ok(())
}
