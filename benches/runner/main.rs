//! `allframe-bench`: one workload, every backend, side by side (run it through
//! `cargo xtask bench [--quick] [--compare FILE] [--backend NAME] [--only postgres-scale|sagas]`).
//!
//! The parent process describes the machine (cores, fdatasync latency, the raw write plus
//! fdatasync ceiling), then runs each backend in a child process of its own (so that peak
//! memory is per backend), collects their JSON results, and writes the report under
//! `target/bench-report/`: `report.md`, `report.json`, `throughput.svg`, `latency.svg`.

mod machine;
#[cfg(feature = "postgres")]
mod postgres;
mod projections;
mod report;
mod sagas;
mod targets;
mod workloads;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// One measured workload on one backend.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measurement {
    /// Backend and mode, such as `allsource-durable`.
    pub target: String,
    /// Workload name, such as `append_single`.
    pub workload: String,
    /// Events per second (median of the runs); operations per second where `rate_unit` says so.
    pub events_per_sec: f64,
    /// What `events_per_sec` counts: `events/s`, or `loads/s` for aggregate loads.
    #[serde(default)]
    pub rate_unit: String,
    /// Latency percentiles of one operation, in microseconds (p50, p99, p99.9), when measured.
    pub latency_us: Option<[f64; 3]>,
    /// What one operation is (an append of one event, a read of 1,000 events, ...).
    pub unit: String,
    /// Runs taken (the median is reported).
    pub runs: u32,
}

/// What a child reports for its backend.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetResult {
    /// Backend and mode.
    pub target: String,
    /// Why it was skipped, if it was.
    pub skipped: Option<String>,
    /// Its measurements.
    pub measurements: Vec<Measurement>,
    /// Peak resident memory of the child process, in bytes.
    pub peak_rss_bytes: Option<u64>,
}

/// Sizes of one run.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Scale {
    /// Seconds each time-bounded workload runs.
    pub seconds: f64,
    /// Events in the "large store" the read workloads use.
    pub store_events: u64,
    /// Events the catch-up subscription reads.
    pub subscription_events: u64,
    /// Runs per workload.
    pub runs: u32,
    /// Events in each store the projection catch-up replays (`--projection-events N`).
    #[serde(default)]
    pub projection_events: u64,
    /// Events the PostgreSQL transactional projection applies.
    #[serde(default)]
    pub transactional_events: u64,
}

impl Scale {
    fn new(quick: bool) -> Self {
        if quick {
            Scale {
                seconds: 0.5,
                store_events: 20_000,
                subscription_events: 20_000,
                runs: 1,
                projection_events: 20_000,
                transactional_events: 5_000,
            }
        } else {
            Scale {
                seconds: 2.0,
                store_events: 1_000_000,
                subscription_events: 1_000_000,
                runs: 3,
                projection_events: 1_000_000,
                transactional_events: 100_000,
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let mut scale = Scale::new(quick);
    if let Some(events) = value(&args, "--projection-events").and_then(|n| n.parse().ok()) {
        scale.projection_events = events;
    }
    #[cfg(feature = "postgres")]
    if let Some(at) = args.iter().position(|a| a == "--pg-writer") {
        postgres::writer_process(&args[at + 1..]);
        return;
    }
    if let Some(target) = value(&args, "--child") {
        child(&target, scale, value(&args, "--only"));
        return;
    }
    if let Err(error) = parent(&args, quick, scale) {
        eprintln!("allframe-bench: {error}");
        std::process::exit(1);
    }
}

fn value(args: &[String], flag: &str) -> Option<String> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned()
}

fn child(target: &str, scale: Scale, only: Option<String>) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut result = runtime.block_on(workloads::run_target(target, scale, only.as_deref()));
    result.peak_rss_bytes = machine::peak_rss();
    runtime.block_on(targets::cleanup(target));
    println!("RESULT {}", serde_json::to_string(&result).expect("json"));
}

fn parent(args: &[String], quick: bool, scale: Scale) -> Result<(), String> {
    let started = Instant::now();
    let out_dir = value(args, "--out").map(PathBuf::from).unwrap_or_else(|| machine::target_dir().join("bench-report"));
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let only = value(args, "--backend");
    eprintln!("measuring the machine (fdatasync latency, raw write + fdatasync ceiling)...");
    let machine = machine::describe(quick)?;
    let all = targets::names();
    let chosen: Vec<&str> =
        all.iter().map(String::as_str).filter(|t| only.as_deref().is_none_or(|o| t.starts_with(o))).collect();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut results = Vec::new();
    for (index, target) in chosen.iter().enumerate() {
        progress(index, chosen.len(), target, started);
        let mut child = Command::new(&exe);
        child.args(["--child", target]).stdout(Stdio::piped()).stderr(Stdio::inherit());
        if quick {
            child.arg("--quick");
        }
        child.args(["--projection-events", &scale.projection_events.to_string()]);
        if let Some(only) = value(args, "--only") {
            child.args(["--only", &only]);
        }
        let mut child = child.spawn().map_err(|e| format!("start child for {target}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no child stdout")?;
        let mut result = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| e.to_string())?;
            if let Some(json) = line.strip_prefix("RESULT ") {
                result = Some(serde_json::from_str::<TargetResult>(json).map_err(|e| e.to_string())?);
            } else if let Some(step) = line.strip_prefix("STEP ") {
                progress_step(index, chosen.len(), target, step, started);
            }
        }
        let status = child.wait().map_err(|e| e.to_string())?;
        results.push(result.unwrap_or_else(|| TargetResult {
            target: target.to_string(),
            skipped: Some(format!("the benchmark process failed ({status})")),
            measurements: Vec::new(),
            peak_rss_bytes: None,
        }));
    }
    progress(chosen.len(), chosen.len(), "done", started);
    eprintln!();
    let report = report::Report { machine, quick, scale, results, seconds: started.elapsed().as_secs_f64() };
    let compare = match value(args, "--compare") {
        Some(path) => Some(report::load(&PathBuf::from(path))?),
        None => None,
    };
    let text = report::write_all(&report, compare.as_ref(), &out_dir)?;
    println!("{text}");
    eprintln!("wrote {}/report.md, report.json, throughput.svg, latency.svg", out_dir.display());
    // A target that could not be reached is skipped; one whose workloads failed fails the run
    // (the smoke run in CI exists to find those), after the report of the others is written.
    let failed: Vec<String> = report
        .results
        .iter()
        .filter_map(|r| r.skipped.as_ref().map(|reason| (r, reason)))
        .filter(|(_, reason)| reason.starts_with("failed") || reason.starts_with("the benchmark process failed"))
        .map(|(r, reason)| format!("{}: {reason}", r.target))
        .collect();
    if !failed.is_empty() {
        return Err(format!("workloads failed:\n  {}", failed.join("\n  ")));
    }
    Ok(())
}

fn progress(done: usize, total: usize, what: &str, started: Instant) {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        eprintln!("[{done}/{total}] {what} ({:.0}s)", started.elapsed().as_secs_f64());
        return;
    }
    let width = 30;
    let filled = (done * width).checked_div(total).unwrap_or(width);
    eprint!(
        "\r[{}{}] {done}/{total} {what:<24} {:>5.0}s      ",
        "#".repeat(filled),
        "-".repeat(width - filled),
        started.elapsed().as_secs_f64()
    );
    let _ = std::io::stderr().flush();
}

fn progress_step(done: usize, total: usize, target: &str, step: &str, started: Instant) {
    progress(done, total, &format!("{target}: {step}"), started);
}
