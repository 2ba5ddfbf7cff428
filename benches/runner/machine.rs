//! The machine: cores, fdatasync latency, and the physical ceiling of durable appends.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Facts about the machine, measured at the start of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cores: usize,
    /// CPU model name.
    pub cpu: String,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Median latency of one 4 KiB overwrite + fdatasync, in microseconds.
    pub fdatasync_p50_us: f64,
    /// 99th percentile of the same.
    pub fdatasync_p99_us: f64,
    /// Raw ceiling: one 200-byte record written and fdatasync'ed per operation, records/s.
    pub raw_sync_per_sec: f64,
    /// Raw sequential write throughput without sync, MB/s.
    pub raw_write_mb_per_sec: f64,
    /// Where the measurements were taken (a directory on the benchmark disk).
    pub data_dir: String,
}

/// The cargo target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"))
}

/// A fresh directory for benchmark data on the same disk as the target directory.
pub fn data_dir(name: &str) -> PathBuf {
    let dir = target_dir().join("bench-data").join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create bench data dir");
    dir
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Peak resident set size of this process (`VmHWM`), in bytes.
pub fn peak_rss() -> Option<u64> {
    read("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Describes and measures the machine.
pub fn describe(quick: bool) -> Result<Machine, String> {
    let dir = data_dir("machine");
    let path = dir.join("probe");
    let mut file = OpenOptions::new().create(true).truncate(true).write(true).open(&path).map_err(|e| e.to_string())?;
    // Preallocate, then overwrite the same blocks: the case a preallocating WAL sees.
    file.write_all(&vec![0u8; 8 << 20]).map_err(|e| e.to_string())?;
    file.sync_all().map_err(|e| e.to_string())?;
    let rounds = if quick { 300 } else { 2000 };
    let page = vec![7u8; 4096];
    let mut latencies = Vec::with_capacity(rounds);
    use std::os::unix::fs::FileExt;
    for i in 0..rounds {
        let start = Instant::now();
        file.write_all_at(&page, (i as u64 % 2048) * 4096).map_err(|e| e.to_string())?;
        file.sync_data().map_err(|e| e.to_string())?;
        latencies.push(start.elapsed().as_secs_f64() * 1e6);
    }
    latencies.sort_by(f64::total_cmp);
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    // The raw ceiling of single durable appends: 200 bytes appended, then fdatasync.
    let record = vec![b'x'; 200];
    let start = Instant::now();
    for i in 0..rounds {
        file.write_all_at(&record, i as u64 * 200).map_err(|e| e.to_string())?;
        file.sync_data().map_err(|e| e.to_string())?;
    }
    let raw_sync_per_sec = rounds as f64 / start.elapsed().as_secs_f64();
    let big = vec![1u8; 1 << 20];
    let mut seq =
        OpenOptions::new().create(true).truncate(true).write(true).open(dir.join("seq")).map_err(|e| e.to_string())?;
    let megabytes = if quick { 128 } else { 1024 };
    let start = Instant::now();
    for _ in 0..megabytes {
        seq.write_all(&big).map_err(|e| e.to_string())?;
    }
    seq.sync_data().map_err(|e| e.to_string())?;
    let raw_write_mb_per_sec = megabytes as f64 * 1.048_576 / start.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    let memory_bytes = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    Ok(Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu,
        memory_bytes,
        fdatasync_p50_us: p50,
        fdatasync_p99_us: p99,
        raw_sync_per_sec,
        raw_write_mb_per_sec,
        data_dir: target_dir().join("bench-data").display().to_string(),
    })
}
