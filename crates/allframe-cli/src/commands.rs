//! The commands, each with its arguments.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use allframe::migrate::{CopyOptions, CopyProgress, copy_store, verify_stores};
use allframe::{Codec, DynBackend, EventStoreBackend, StreamId};
use serde_json::json;

use crate::CliError;
use crate::address::{self, Address, Open};

/// Arguments of `allframe copy`.
#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// The store to copy from.
    #[arg(value_name = "FROM")]
    pub from: Address,
    /// The store to copy into (created when missing).
    #[arg(value_name = "TO")]
    pub to: Address,
    /// Events read per page (and most written per append).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub page: u64,
    /// Copy events only, not the latest snapshots.
    #[arg(long)]
    pub no_snapshots: bool,
    /// Write every event at its current schema version, through the demo's upcasters (the
    /// migration pipeline; snapshots are not copied, aggregates rebuild from the events).
    #[arg(long)]
    pub upcast: bool,
}

/// Arguments of `allframe verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The first store.
    #[arg(value_name = "A")]
    pub a: Address,
    /// The second store.
    #[arg(value_name = "B")]
    pub b: Address,
    /// Events and streams read per page.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub page: u64,
}

/// Arguments of `allframe inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The store.
    #[arg(value_name = "STORE")]
    pub store: Address,
    /// Show the last events of this stream.
    #[arg(long, value_name = "ID")]
    pub stream: Option<String>,
    /// How many events --stream shows.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub last: u64,
    /// How many streams to list.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub streams: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `allframe check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The store.
    #[arg(value_name = "STORE")]
    pub store: Address,
}

/// Arguments of `allframe demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// `allsource` or `memory` (default: $ALLFRAME_BACKEND, else allsource).
    #[arg(long, value_name = "NAME")]
    pub backend: Option<String>,
    /// The AllSource store's directory.
    #[arg(long, value_name = "DIR", default_value = "./allframe-data")]
    pub data: String,
    /// Serve /metrics (Prometheus) and /health on ADDRESS, such as 127.0.0.1:9464, while the
    /// demo runs (and its load, with --load).
    #[arg(long, value_name = "ADDRESS")]
    pub serve: Option<std::net::SocketAddr>,
    /// After the demo, run the bank under load for SECONDS (0: until Ctrl-C), printing a line
    /// of figures every second.
    #[arg(long, value_name = "SECONDS")]
    pub load: Option<u64>,
}

/// `allframe copy FROM TO`.
pub async fn copy(args: &CopyArgs) -> Result<u8, CliError> {
    let (from, to) = (&args.from, &args.to);
    if from == to && !from.is_volatile() {
        return Err(CliError::usage("FROM and TO are the same store"));
    }
    let source = address::open(from, Open::Existing).await?;
    let destination = address::open(to, Open::BulkDestination).await?;
    let options =
        CopyOptions { page_size: args.page as usize, snapshots: !args.no_snapshots, ..CopyOptions::default() };
    let started = Instant::now();
    let mut bar = ProgressBar::new("copy", started);
    let show = |progress: CopyProgress| bar.show(progress.read, progress.total);
    let result = if args.upcast {
        let chain = crate::bank::upcasters();
        allframe::cqrs::versioning::copy_upcast(&*source, &*destination, &chain, Codec::Json, options, show).await
    } else {
        copy_store(&*source, &*destination, options, show).await
    };
    bar.finish();
    let done = result.map_err(|error| {
        // The error may come from either store; name both and let the message say which.
        let mut cli = CliError::store(to, &error);
        cli.subject = format!("copy {from} -> {to}");
        cli
    })?;
    destination.flush().await.map_err(|e| CliError::store(to, &e))?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "copied {} events ({} already there, skipped) and {} snapshots from {from} to {to} in {seconds:.1}s ({:.0} events/s)",
        done.written,
        done.skipped,
        done.snapshots,
        done.read as f64 / seconds.max(1e-9)
    );
    if args.upcast {
        let version = <crate::bank::BankEvent as allframe::Event>::SCHEMA_VERSION;
        println!("every event is at schema version {version}; check them with: allframe schema check --store {to}");
    } else {
        println!("check the result with: allframe verify {from} {to}");
    }
    Ok(0)
}

/// Progress on standard error: an `indicatif` bar on a terminal, a line a second otherwise
/// (logs and pipes get lines they can read; scripts wait for the first one).
pub struct ProgressBar {
    what: &'static str,
    started: Instant,
    last: Option<Instant>,
    /// The last figures shown and the last printed (done, total), for the final line off a
    /// terminal.
    shown: (u64, u64),
    printed: (u64, u64),
    bar: Option<indicatif::ProgressBar>,
}

impl ProgressBar {
    /// A bar for `what` (the word that starts its lines off a terminal), started at `started`.
    pub fn new(what: &'static str, started: Instant) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            let style = indicatif::ProgressStyle::with_template(
                "[{bar:30}] {percent:>3}% {pos}/{len} events, {per_sec}, ETA {eta}",
            )
            .map(|style| style.progress_chars("#>-"))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        ProgressBar { what, started, last: None, shown: (0, 0), printed: (0, 0), bar }
    }

    /// Shows `done` events of `total`.
    pub fn show(&mut self, done: u64, total: u64) {
        self.shown = (done, total);
        if let Some(bar) = &self.bar {
            bar.set_length(total.max(done));
            bar.set_position(done);
            return;
        }
        let now = Instant::now();
        if self.last.is_some_and(|last| now - last < Duration::from_secs(1)) {
            return;
        }
        self.last = Some(now);
        self.line(done, total);
    }

    fn line(&mut self, done: u64, total: u64) {
        self.printed = (done, total);
        let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        let rate = done as f64 / seconds;
        let all = total.max(done).max(1);
        let eta = (all - done) as f64 / rate.max(1.0);
        let percent = done * 100 / all;
        eprintln!("{}: {percent:>3}% {done}/{total} events, {rate:.0} events/s, ETA {eta:.0}s", self.what);
    }

    /// Leaves the bar at its last state; off a terminal, prints the last figures when the
    /// last line did not show them.
    pub fn finish(&mut self) {
        match &self.bar {
            Some(bar) => bar.finish(),
            None if self.shown != self.printed => self.line(self.shown.0, self.shown.1),
            None => {}
        }
    }
}

/// `allframe verify A B`.
pub async fn verify(args: &VerifyArgs) -> Result<u8, CliError> {
    let (a, b) = (&args.a, &args.b);
    let left = address::open(a, Open::Existing).await?;
    let right = address::open(b, Open::Existing).await?;
    let report = verify_stores(&*left, &*right, args.page as usize).await.map_err(|error| {
        let mut cli = CliError::store(a, &error);
        cli.subject = format!("verify {a} {b}");
        cli
    })?;
    match report.difference {
        None => {
            println!(
                "same: {} streams, {} events, {} snapshots compared",
                report.streams, report.events, report.snapshots
            );
            Ok(0)
        }
        Some(difference) => {
            println!("different: {difference} ({} streams compared before it)", report.streams.saturating_sub(1));
            Ok(1)
        }
    }
}

/// `allframe inspect STORE`.
pub async fn inspect(args: &InspectArgs) -> Result<u8, CliError> {
    let store = &args.store;
    let backend = address::open(store, Open::Existing).await?;
    let fail = |error: allframe::Error| CliError::store(store, &error);
    let stats = backend.stats().await.map_err(fail)?;
    let streams = backend.list_streams(None, args.streams).await.map_err(fail)?;
    let last = match args.stream.as_deref() {
        Some(stream) => {
            let version = backend.stream_version(stream).await.map_err(fail)?;
            if version == 0 {
                return Err(CliError::new(
                    store,
                    format!("no stream `{stream}`"),
                    "list streams with `allframe inspect STORE`",
                ));
            }
            let count = args.last;
            Some((
                stream.to_owned(),
                backend.read_stream(stream, version.saturating_sub(count), count as usize).await.map_err(fail)?,
            ))
        }
        None => None,
    };
    if args.json {
        let events = last.as_ref().map(|(stream, events)| {
            json!({
                "stream": stream,
                "events": events.iter().map(|e| json!({
                    "version": e.version,
                    "position": e.position,
                    "type": e.event_type,
                    "schema_version": allframe::schema_version::of(&e.metadata),
                    "event_id": e.metadata.event_id.to_string(),
                    "timestamp_micros": e.metadata.timestamp.as_micros(),
                    "payload": serde_json::from_slice::<serde_json::Value>(&e.payload).unwrap_or_else(|_| json!({"bytes": e.payload.len()})),
                })).collect::<Vec<_>>(),
            })
        });
        let value = json!({
            "store": store.to_string(),
            "backend": stats.backend,
            "durability": stats.durability.to_string(),
            "events": stats.events,
            "streams": stats.streams,
            "snapshots": stats.snapshots,
            "head_position": stats.head_position,
            "details": stats.details,
            "first_streams": streams.iter().map(|(id, version)| json!({"stream": id.as_str(), "version": version})).collect::<Vec<_>>(),
            "last_events": events,
        });
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
        return Ok(0);
    }
    println!("store       {store}");
    println!("backend     {} ({})", stats.backend, stats.durability);
    println!("events      {}", stats.events);
    println!("streams     {}", stats.streams);
    println!("snapshots   {}", stats.snapshots);
    println!("head        position {}", stats.head_position);
    for (key, value) in &stats.details {
        println!("{key:<11} {value}");
    }
    println!("\nfirst {} streams (by id):", streams.len());
    for (id, version) in &streams {
        println!("  {id}  version {version}");
    }
    if let Some((stream, events)) = last {
        println!("\nlast {} events of `{stream}`:", events.len());
        for event in events {
            let payload = String::from_utf8_lossy(&event.payload);
            let preview: String = payload.chars().take(80).collect();
            let schema = format!("{} (schema v{})", event.event_type, allframe::schema_version::of(&event.metadata));
            println!("  v{:<6} @{:<8} {:<32} {}", event.version, event.position, schema, preview);
        }
    }
    Ok(0)
}

/// `allframe check STORE`.
pub async fn check(args: &CheckArgs) -> Result<u8, CliError> {
    let store = &args.store;
    let backend = match address::open(store, Open::Existing).await {
        Ok(backend) => backend,
        Err(error) if error.message.contains("corruption") => {
            println!("problem: {}", error.message);
            println!("1 problem found: the store does not open");
            return Ok(1);
        }
        Err(error) => return Err(error),
    };
    let mut problems = Vec::new();
    match scan(&backend).await {
        Ok(found) => problems.extend(found),
        Err(error) => problems.push(format!("reading the log failed: {error}")),
    }
    let mut chain_checked = false;
    match crate::schema::load(store, &backend).await {
        Ok(registry) => {
            if let Some((shape, _)) = registry.chain() {
                chain_checked = true;
                match unreadable(&backend, shape).await {
                    Ok(found) => problems.extend(found),
                    Err(error) => problems.push(format!("reading the log failed: {error}")),
                }
            }
        }
        Err(error) => problems.push(error.message),
    }
    if problems.is_empty() {
        let stats = backend.stats().await.map_err(|e| CliError::store(store, &e))?;
        println!(
            "ok: {} events in {} streams read; checksums, positions, versions and counts are consistent{}",
            stats.events,
            stats.streams,
            if chain_checked { "; the recorded chain of upcasters reads every event" } else { "" }
        );
        Ok(0)
    } else {
        for problem in &problems {
            println!("problem: {problem}");
        }
        println!("{} problem(s) found in {store}", problems.len());
        Ok(1)
    }
}

/// The stored events the recorded chain of upcasters cannot read, one line per (type, version)
/// with how many and where the first is.
async fn unreadable(backend: &DynBackend, shape: &allframe::cqrs::ChainShape) -> Result<Vec<String>, allframe::Error> {
    let mut found: std::collections::BTreeMap<(String, u32), (u64, String, String)> = Default::default();
    let mut after = 0;
    loop {
        let page = backend.read_all(after, 4096).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for event in page.iter().filter(|e| !allframe::is_system_stream(&e.stream_id)) {
            let version = allframe::schema_version::of(&event.metadata);
            if let Err(why) = shape.reads(&event.event_type, version) {
                let at =
                    format!("stream `{}` version {} (position {})", event.stream_id, event.version, event.position);
                found.entry((event.event_type.to_string(), version)).or_insert((0, at, why)).0 += 1;
            }
        }
    }
    Ok(found
        .into_iter()
        .map(|((event_type, version), (count, first, why))| {
            format!(
                "{count} `{event_type}` event(s) at schema version {version} cannot be read: {why} (first: {first})"
            )
        })
        .collect())
}

/// Reads every record: positions strictly increase, versions are contiguous per stream,
/// and the counts and stream heads agree with the log.
async fn scan(backend: &DynBackend) -> Result<Vec<String>, allframe::Error> {
    let mut problems = Vec::new();
    let mut versions: HashMap<StreamId, u64> = HashMap::new();
    let (mut after, mut count) = (0u64, 0u64);
    loop {
        let page = backend.read_all(after, 4096).await?;
        let Some(last) = page.last() else { break };
        let next_after = last.position;
        for event in page {
            if event.position <= after {
                problems.push(format!("position {} follows position {after}", event.position));
            }
            after = event.position;
            count += 1;
            let previous = versions.entry(event.stream_id.clone()).or_insert(0);
            if event.version != *previous + 1 {
                problems.push(format!(
                    "stream `{}`: version {} follows version {} (at position {})",
                    event.stream_id, event.version, previous, event.position
                ));
            }
            *previous = event.version;
        }
        after = after.max(next_after);
    }
    let stats = backend.stats().await?;
    if stats.events != count {
        problems.push(format!("stats count {} events, the log holds {count}", stats.events));
    }
    if stats.streams != versions.len() as u64 {
        problems.push(format!("stats count {} streams, the log holds {}", stats.streams, versions.len()));
    }
    let mut listed = 0u64;
    let mut after_stream: Option<StreamId> = None;
    loop {
        let streams = backend.list_streams(after_stream.as_deref(), 4096).await?;
        let Some((last, _)) = streams.last() else { break };
        after_stream = Some(last.clone());
        for (stream, version) in streams {
            listed += 1;
            if versions.get(&stream).copied().unwrap_or(0) != version {
                problems.push(format!(
                    "stream `{stream}`: head says version {version}, the log ends at {}",
                    versions.get(&stream).copied().unwrap_or(0)
                ));
            }
        }
    }
    if listed != versions.len() as u64 {
        problems.push(format!("{listed} streams listed, {} in the log", versions.len()));
    }
    Ok(problems)
}

/// `allframe demo`.
pub async fn demo(args: &DemoArgs) -> Result<u8, CliError> {
    let default = if cfg!(feature = "cqrs-allsource") { "allsource" } else { "memory" };
    let choice =
        args.backend.clone().or_else(|| std::env::var("ALLFRAME_BACKEND").ok()).unwrap_or_else(|| default.to_owned());
    let data = args.data.as_str();
    let address = match choice.as_str() {
        "memory" => Address::of(&choice, ""),
        "allsource" => Address::of(&choice, data),
        _ => None,
    }
    .ok_or_else(|| CliError::usage(format!("the demo runs on `allsource` or `memory`, not `{choice}`")))?;
    // The recorder goes in before the store is opened: metrics register with the recorder
    // installed when they are made.
    let exporter = match args.serve {
        Some(_) => Some(
            allframe::prometheus::Exporter::install()
                .map_err(|error| CliError::new(&address, error.to_string(), "run one exporter per process"))?,
        ),
        None => None,
    };
    let opened: DynBackend = address::open(&address, Open::CreateIfMissing).await?;
    let backend: DynBackend = match exporter {
        Some(_) => Arc::new(allframe::Metered::new(opened)),
        None => opened,
    };
    let _server = match (exporter, args.serve) {
        (Some(exporter), Some(at)) => {
            let checked = Arc::clone(&backend);
            let server = exporter
                .serve(at, move || {
                    let backend = Arc::clone(&checked);
                    async move { backend.health().await }
                })
                .await
                .map_err(|error| CliError::new(&address, error.to_string(), "choose a free address"))?;
            println!("(metrics: http://{0}/metrics, health: http://{0}/health)", server.local_addr());
            Some(server)
        }
        _ => None,
    };
    println!("(store: {address})");
    let failed = |error: Box<dyn std::error::Error + Send + Sync>| {
        CliError::new(&address, error.to_string(), "see the demo output above")
    };
    crate::bank::run_demo(Arc::clone(&backend)).await.map_err(failed)?;
    if let Some(seconds) = args.load {
        let duration = (seconds > 0).then(|| Duration::from_secs(seconds));
        println!(
            "\nload: 8 workers on 64 accounts{}",
            duration.map(|d| format!(" for {} s", d.as_secs())).unwrap_or_default()
        );
        crate::load::run_load(Arc::clone(&backend), duration).await.map_err(failed)?;
    }
    Ok(0)
}
