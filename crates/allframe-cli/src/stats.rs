//! `allframe stats STORE`: one screen of a store's figures and its health; `--json` for
//! scripts, `--watch` to refresh them in the terminal with rates, `--serve ADDRESS` to serve
//! them to Prometheus (`/metrics`) and load balancers (`/health`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use allframe::prometheus::Exporter;
use allframe::{BackendStats, DynBackend, EventStoreBackend, Health, Metered};
use serde_json::json;

use crate::CliError;
use crate::address::{self, Address, Open};

/// `allframe stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// The store.
    #[arg(value_name = "STORE")]
    pub store: Address,
    /// Print one JSON object instead of text.
    #[arg(long, conflicts_with_all = ["watch", "serve"])]
    pub json: bool,
    /// Refresh every SECONDS (default 2) until interrupted, with rates since the last screen.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<f64>,
    /// Serve /metrics and /health on ADDRESS (such as 127.0.0.1:9464) until interrupted,
    /// reading the store's figures every --every seconds.
    #[arg(long, value_name = "ADDRESS")]
    pub serve: Option<SocketAddr>,
    /// How often --serve reads the store's figures, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub every: f64,
}

/// Runs `allframe stats`.
pub async fn stats(args: &StatsArgs) -> Result<u8, CliError> {
    let store = &args.store;
    if let Some(address) = args.serve {
        return serve(store, address, seconds(args.every)?).await;
    }
    let backend = address::open(store, Open::Existing).await?;
    let fail = |error: allframe::Error| CliError::store(store, &error);
    let Some(every) = args.watch else {
        let (figures, health) = (backend.stats().await.map_err(fail)?, backend.health().await);
        if args.json {
            println!("{}", serde_json::to_string_pretty(&as_json(store, &figures, &health)).unwrap_or_default());
        } else {
            print!("{}", screen(store, &figures, &health, None));
        }
        return Ok(exit_code(&health));
    };
    let every = seconds(every)?;
    let mut last: Option<(Instant, BackendStats)> = None;
    loop {
        let (figures, health) = (backend.stats().await.map_err(fail)?, backend.health().await);
        let rates = last.as_ref().map(|(at, before)| Rates::between(before, &figures, at.elapsed()));
        // Clear the terminal and go home, as `watch` does.
        print!("\x1b[2J\x1b[H{}", screen(store, &figures, &health, rates));
        println!("\nrefreshing every {:.1} s; Ctrl-C to stop", every.as_secs_f64());
        last = Some((Instant::now(), figures));
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
    }
}

/// A positive, finite number of seconds.
fn seconds(value: f64) -> Result<Duration, CliError> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| CliError::usage(format!("{value} is not a positive number of seconds")))
}

/// 0 when the store is ok or degraded, 1 when it failed (for scripts and probes).
fn exit_code(health: &Health) -> u8 {
    u8::from(health.status == allframe::HealthStatus::Failed)
}

/// Events and positions per second between two readings.
#[derive(Clone, Copy, Debug)]
struct Rates {
    events: f64,
    positions: f64,
}

impl Rates {
    fn between(before: &BackendStats, now: &BackendStats, elapsed: Duration) -> Rates {
        let seconds = elapsed.as_secs_f64().max(1e-3);
        Rates {
            events: now.events.saturating_sub(before.events) as f64 / seconds,
            positions: now.head_position.saturating_sub(before.head_position) as f64 / seconds,
        }
    }
}

/// The text screen: figures in a table, then the health answer.
fn screen(store: &Address, figures: &BackendStats, health: &Health, rates: Option<Rates>) -> String {
    let mut out = String::new();
    let rate = |value: Option<f64>| value.map(|v| format!("{v:>12.1}/s")).unwrap_or_default();
    out.push_str(&format!("store       {store}\n"));
    out.push_str(&format!("backend     {} ({})\n", figures.backend, figures.durability));
    out.push_str(&format!("health      {health}\n\n"));
    out.push_str(&format!("{:<28}{:>16}{:>14}\n", "figure", "value", "rate"));
    out.push_str(&format!("{:<28}{:>16}{}\n", "events", figures.events, rate(rates.map(|r| r.events))));
    out.push_str(&format!("{:<28}{:>16}\n", "streams", figures.streams));
    out.push_str(&format!("{:<28}{:>16}\n", "snapshots", figures.snapshots));
    out.push_str(&format!(
        "{:<28}{:>16}{}\n",
        "head position",
        figures.head_position,
        rate(rates.map(|r| r.positions))
    ));
    for (key, value) in &figures.details {
        out.push_str(&format!("{key:<28}{value:>16}\n"));
    }
    out
}

fn as_json(store: &Address, figures: &BackendStats, health: &Health) -> serde_json::Value {
    json!({
        "store": store.to_string(),
        "backend": figures.backend,
        "durability": figures.durability.to_string(),
        "events": figures.events,
        "streams": figures.streams,
        "snapshots": figures.snapshots,
        "head_position": figures.head_position,
        "details": figures.details,
        "health": health,
    })
}

/// `--serve`: installs the Prometheus recorder, opens the store through [`Metered`], and reads
/// its figures and health every `every` so that the gauges stay current between scrapes.
async fn serve(store: &Address, address: SocketAddr, every: Duration) -> Result<u8, CliError> {
    let exporter =
        Exporter::install().map_err(|error| CliError::new(store, error.to_string(), "run one exporter per process"))?;
    let opened = address::open(store, Open::Existing).await?;
    let backend: DynBackend = Arc::new(Metered::new(opened));
    let checked = Arc::clone(&backend);
    let server = exporter
        .serve(address, move || {
            let backend = Arc::clone(&checked);
            async move { backend.health().await }
        })
        .await
        .map_err(|error| CliError::new(store, error.to_string(), "choose a free address, such as 127.0.0.1:9464"))?;
    println!("serving http://{0}/metrics and http://{0}/health for {store}; Ctrl-C to stop", server.local_addr());
    loop {
        if let Err(error) = backend.stats().await {
            eprintln!("allframe: {store}: reading the figures failed: {error}");
        }
        let _ = backend.health().await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
    }
}
