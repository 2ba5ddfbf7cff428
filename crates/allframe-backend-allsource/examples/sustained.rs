//! Sustained no-sync appends with Parquet conversion running: how fast batches of 100 go in
//! once the converter, not the log, sets the pace (`max_conversion_backlog`), and how long until
//! every sealed segment is in Parquet. One appender task on a current-thread runtime.
//!
//! `cargo run --release -p allframe-backend-allsource --example sustained -- [events] [backlog]`
//! (defaults: 8,000,000 events, backlog 4; `ALLSOURCE_SEGMENT_MIB` sets the segment size,
//! default 64). Run it on a quiet machine.

use std::time::{Duration, Instant};

use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig, SyncMode};
use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, NewEvent};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let events: u64 = args.get(1).map(|a| a.parse()).transpose()?.unwrap_or(8_000_000);
    let backlog: usize = args.get(2).map(|a| a.parse()).transpose()?.unwrap_or(4);
    let segment_mib: u64 = std::env::var("ALLSOURCE_SEGMENT_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let store = AllSourceBackend::with_config(
            AllSourceConfig::durable(dir.path())
                .sync(SyncMode::NoSync)
                .max_conversion_backlog(backlog)
                .segment_size(segment_mib << 20),
        )?;
        let started = Instant::now();
        let mut written = 0u64;
        while written < events {
            let stream = format!("stream-{}", written / 1000);
            let batch: Vec<_> = (0..100).map(|_| NewEvent::new("Measured", vec![b'x'; 200])).collect();
            store.append(&stream, ExpectedVersion::Any, batch).await?;
            written += 100;
        }
        store.flush().await?;
        let appended = started.elapsed();
        println!(
            "no-sync, batches of 100: {events} events appended in {appended:.2?}: {:.0} events/s",
            events as f64 / appended.as_secs_f64()
        );
        loop {
            let stats = store.engine_stats();
            let files = stats.parquet_files;
            let segments = stats.wal_segments.max(1);
            if files + 1 >= segments {
                let done = started.elapsed();
                println!(
                    "all sealed segments in Parquet after {done:.2?}: {:.0} events/s end to end; \
                     {files} files; the writer waited for the converter {} times",
                    events as f64 / done.as_secs_f64(),
                    stats.parquet_backlog_waits
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    })
}
