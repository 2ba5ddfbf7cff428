//! One durable appender, one event at a time: acknowledge latency against the disk's own floor
//! (a 200-byte write at the next offset of a preallocated file, then `fdatasync`), in the three
//! places an appender can run: a task on a multi-thread runtime, `block_on` on the caller's
//! thread, and a current-thread runtime; each with the acknowledgement poll
//! (`AllSourceConfig::ack_spin`) on and off. Rounds alternate so the disk's drift hits all alike.
//!
//! `cargo run --release -p allframe-backend-allsource --example lone -- [appends per round] [rounds]`
//! (defaults: 2,000 and 3). Run it on a quiet machine.

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use allframe_backend_allsource::{AllSourceBackend, AllSourceConfig};
use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, NewEvent};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn summary(name: &str, mut lat: Vec<Duration>, floor: Duration) {
    lat.sort();
    let p50 = percentile(&lat, 0.5);
    println!(
        "{name:<36} p50 {:>7.1} µs ({:.2}x floor)  p90 {:>7.1} µs  p99 {:>7.1} µs",
        p50.as_secs_f64() * 1e6,
        p50.as_secs_f64() / floor.as_secs_f64(),
        percentile(&lat, 0.9).as_secs_f64() * 1e6,
        percentile(&lat, 0.99).as_secs_f64() * 1e6,
    );
}

/// The floor: 200 bytes written after the last, in a file preallocated with zeros, then synced.
fn raw(dir: &std::path::Path, n: usize) -> std::io::Result<Vec<Duration>> {
    let path = dir.join("raw-floor");
    let file = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path)?;
    file.write_all_at(&vec![0u8; (n * 256).max(1 << 20)], 0)?;
    file.sync_all()?;
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        file.write_all_at(&[1u8; 200], (i * 200) as u64)?;
        file.sync_data()?;
        lat.push(start.elapsed());
    }
    std::fs::remove_file(&path)?;
    Ok(lat)
}

async fn appends(store: &AllSourceBackend, n: usize) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let event = NewEvent::new("Measured", vec![b'x'; 200]);
        let start = Instant::now();
        store.append("lone", ExpectedVersion::Any, vec![event]).await.expect("append");
        lat.push(start.elapsed());
    }
    lat
}

/// `n` appends to let the first segment grow to its working size, then `n` measured ones.
async fn warm_then_measure(store: &AllSourceBackend, n: usize) -> Vec<Duration> {
    appends(store, n).await;
    appends(store, n).await
}

fn open(dir: &std::path::Path, poll: bool) -> AllSourceBackend {
    let ack_spin = if poll { AllSourceConfig::default().ack_spin } else { Duration::ZERO };
    AllSourceBackend::with_config(AllSourceConfig::durable(dir).ack_spin(ack_spin)).expect("open")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map(|a| a.parse()).transpose()?.unwrap_or(2_000);
    let rounds: usize = args.get(2).map(|a| a.parse()).transpose()?.unwrap_or(3);
    let dir = tempfile::tempdir()?;
    let multi = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let current = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut floor = Vec::new();
    // [poll][place]: place 0 = task on the multi-thread runtime, 1 = its block_on, 2 = current-thread.
    let mut lat: [[Vec<Duration>; 3]; 2] = Default::default();
    let mut store_no = 0;
    for _ in 0..rounds {
        floor.extend(raw(dir.path(), n)?);
        for (poll, by_place) in [true, false].into_iter().zip(lat.iter_mut()) {
            for (place, into) in by_place.iter_mut().enumerate() {
                store_no += 1;
                let store = std::sync::Arc::new(open(&dir.path().join(format!("store-{store_no}")), poll));
                let measured = match place {
                    0 => {
                        let s = store.clone();
                        multi.block_on(
                            async move { tokio::spawn(async move { warm_then_measure(&s, n).await }).await },
                        )?
                    }
                    1 => multi.block_on(warm_then_measure(&store, n)),
                    _ => current.block_on(warm_then_measure(&store, n)),
                };
                into.extend(measured);
            }
        }
    }
    floor.sort();
    let f = percentile(&floor, 0.5);
    summary("raw write + fdatasync", floor, f);
    for (poll, by_place) in lat.into_iter().enumerate() {
        for (place, l) in by_place.into_iter().enumerate() {
            let place = ["task, multi-thread", "block_on, multi-thread", "current-thread"][place];
            let poll = if poll == 0 { "polling" } else { "no polling" };
            summary(&format!("{place}, {poll}"), l, f);
        }
    }
    Ok(())
}
