//! PostgreSQL at scale (issue 22): each append workload of this backend beside the same rows
//! written with raw SQL and with the write pattern of postgres-es, on the same server in the
//! same run; appenders in one process and in four; and the tail latency from an append's
//! acknowledgement to a subscriber's delivery, with the LISTEN hint and without.
//!
//! - `allframe`: this backend (`PostgresBackend`, group commit on, pool of 16; `_alone`:
//!   group commit off, each append its own statement as before decision 0203).
//! - `raw`: the ceiling: autocommit `INSERT`s of the same 200-byte JSON into a table with only
//!   a `bigserial` key and a `jsonb` column: one row per statement, or 100 per statement
//!   through `unnest`.
//! - `peer`: postgres-es's SQL traffic, emulated on its `events` table layout: `BEGIN`, one
//!   `INSERT` per event, `COMMIT` (not the postgres-es crate itself, which would bring a second
//!   sqlx into the build).
//!
//! `ALLFRAME_BENCH_PG_ONLY=pg_8,pg_4x16` runs only the workloads with those name prefixes.
//! `ALLFRAME_BENCH_PG_GROUPS=N` sets the groups in flight of the `allframe` writers (default
//! `DEFAULT_GROUPS_IN_FLIGHT`), to compare settings.
//!
//! The four-process workloads run this binary as `--pg-writer KIND SCHEMA TASKS SECONDS`
//! children, started together.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allframe::postgres::PostgresBackend;
use allframe::{EventStoreBackend, ExpectedVersion, NewEvent, RawSubscription, StartFrom, SubscriptionOptions};
use allframe_benches::order_placed;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection};

use crate::workloads::{median, step};
use crate::{Measurement, Scale, targets};

/// Connections of every pool here (the backend's, raw's, peer's), as in `targets::open`.
const POOL: u32 = 16;

/// Groups in flight per backend: the default, or `ALLFRAME_BENCH_PG_GROUPS` (to compare settings).
fn groups_in_flight() -> usize {
    std::env::var("ALLFRAME_BENCH_PG_GROUPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(allframe::postgres::DEFAULT_GROUPS_IN_FLIGHT)
}

/// Whether `workload` runs: all do, unless `ALLFRAME_BENCH_PG_ONLY` lists name prefixes
/// (comma-separated), to measure a few at a time.
fn selected(workload: &str) -> bool {
    match std::env::var("ALLFRAME_BENCH_PG_ONLY") {
        Ok(only) => only.split(',').any(|prefix| workload.starts_with(prefix.trim())),
        Err(_) => true,
    }
}

/// The workload's event as JSON (about 200 bytes).
fn payload() -> String {
    serde_json::to_string(&order_placed(42)).expect("json")
}

fn schema() -> String {
    format!("bench_scale_{}", std::process::id())
}

/// How the rows are written.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// This backend, group commit on.
    Allframe,
    /// This backend, group commit off.
    AllframeAlone,
    /// Autocommit INSERTs into a minimal table.
    Raw,
    /// postgres-es's pattern: BEGIN, an INSERT per event, COMMIT.
    Peer,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Allframe => "allframe",
            Kind::AllframeAlone => "allframe_alone",
            Kind::Raw => "raw",
            Kind::Peer => "peer",
        }
    }

    fn parse(name: &str) -> Option<Kind> {
        [Kind::Allframe, Kind::AllframeAlone, Kind::Raw, Kind::Peer].into_iter().find(|k| k.name() == name)
    }
}

/// A writer of one kind: a backend or a raw pool.
#[derive(Clone)]
enum Writer {
    Backend(Arc<PostgresBackend>),
    Sql { pool: PgPool, schema: String, kind: Kind },
}

async fn writer(kind: Kind, schema: &str) -> Result<Writer, String> {
    let url = targets::database_url();
    match kind {
        Kind::Allframe | Kind::AllframeAlone => {
            let groups = if kind == Kind::Allframe { groups_in_flight() } else { 0 };
            let backend = PostgresBackend::builder(&url)
                .schema(schema)
                .pool_size(POOL)
                .group_commit(groups)
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            Ok(Writer::Backend(Arc::new(backend)))
        }
        Kind::Raw | Kind::Peer => {
            let pool = PgPoolOptions::new().max_connections(POOL).connect(&url).await.map_err(|e| e.to_string())?;
            Ok(Writer::Sql { pool, schema: schema.to_owned(), kind })
        }
    }
}

impl Writer {
    /// Writes `batch` events for `task` (its own stream or aggregate), the `n`th write of it.
    async fn write(&self, task: usize, n: u64, batch: usize, payload: &str) -> Result<(), String> {
        match self {
            Writer::Backend(backend) => {
                let events = (0..batch).map(|_| NewEvent::new("OrderPlaced", payload.to_owned())).collect();
                backend
                    .append(&format!("scale-{}-{task}", std::process::id()), ExpectedVersion::Any, events)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Writer::Sql { pool, schema, kind: Kind::Raw } => if batch == 1 {
                sqlx::query(AssertSqlSafe(format!("INSERT INTO {schema}.raw_events (payload) VALUES ($1::jsonb)")))
                    .bind(payload)
                    .execute(pool)
                    .await
            } else {
                let payloads = vec![payload; batch];
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {schema}.raw_events (payload) SELECT p::jsonb FROM unnest($1::text[]) AS p"
                )))
                .bind(&payloads)
                .execute(pool)
                .await
            }
            .map(drop)
            .map_err(|e| e.to_string()),
            Writer::Sql { pool, schema, .. } => {
                let run = async {
                    let mut tx = pool.begin().await?;
                    for k in 0..batch as u64 {
                        sqlx::query(AssertSqlSafe(format!(
                            "INSERT INTO {schema}.peer_events (aggregate_type, aggregate_id, sequence, event_type, \
                             event_version, payload, metadata) VALUES ($1, $2, $3, $4, $5, $6::json, $7::json)"
                        )))
                        .bind("Order")
                        .bind(format!("order-{}-{task}", std::process::id()))
                        .bind((n * batch as u64 + k) as i64)
                        .bind("OrderPlaced")
                        .bind("1.0")
                        .bind(payload)
                        .bind("{}")
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await
                };
                run.await.map_err(|e: sqlx::Error| e.to_string())
            }
        }
    }

    async fn close(self) {
        match self {
            Writer::Backend(backend) => backend.close().await,
            Writer::Sql { pool, .. } => pool.close().await,
        }
    }
}

/// `tasks` tasks write batches of `batch` events until `duration` ends: events/s and the
/// latency of each write in microseconds.
async fn run_writers(
    writer: &Writer,
    tasks: usize,
    batch: usize,
    duration: Duration,
    first_n: u64,
) -> Result<(f64, Vec<f64>), String> {
    let payload = Arc::new(payload());
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let (writer, payload) = (writer.clone(), Arc::clone(&payload));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = first_n;
                while Instant::now() < deadline {
                    let begin = Instant::now();
                    writer.write(task, n, batch, &payload).await?;
                    latencies.push(begin.elapsed().as_secs_f64() * 1e6);
                    n += 1;
                }
                Ok::<_, String>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await.map_err(|e| e.to_string())??);
    }
    Ok((latencies.len() as f64 * batch as f64 / start.elapsed().as_secs_f64(), latencies))
}

/// Creates the schema with the backend's tables and the raw and peer tables.
async fn prepare(schema: &str) -> Result<(), String> {
    // Migrations run on connect.
    let backend =
        PostgresBackend::builder(&targets::database_url()).schema(schema).connect().await.map_err(|e| e.to_string())?;
    backend.close().await;
    let mut conn = sqlx::PgConnection::connect(&targets::database_url()).await.map_err(|e| e.to_string())?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE {schema}.raw_events (id bigserial PRIMARY KEY, payload jsonb NOT NULL);
         CREATE TABLE {schema}.peer_events (
             aggregate_type text NOT NULL, aggregate_id text NOT NULL,
             sequence bigint CHECK (sequence >= 0) NOT NULL, event_type text NOT NULL,
             event_version text NOT NULL, payload json NOT NULL, metadata json NOT NULL,
             PRIMARY KEY (aggregate_type, aggregate_id, sequence));"
    )))
    .execute(&mut conn)
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// Every PostgreSQL scale workload, each kind side by side.
pub async fn scale(target: &str, scale: Scale) -> Result<Vec<Measurement>, allframe::Error> {
    let fail = |reason: String| allframe::Error::Configuration { reason };
    let schema = schema();
    targets::drop_schema(&schema).await;
    prepare(&schema).await.map_err(fail)?;
    let duration = Duration::from_secs_f64(scale.seconds);
    let mut out = Vec::new();
    let shapes: [(&str, usize, usize, &[Kind]); 4] = [
        ("8", 8, 1, &[Kind::Allframe, Kind::AllframeAlone, Kind::Raw, Kind::Peer]),
        ("64", 64, 1, &[Kind::Allframe, Kind::AllframeAlone, Kind::Raw, Kind::Peer]),
        ("1", 1, 1, &[Kind::Allframe, Kind::Raw, Kind::Peer]),
        ("batch100", 1, 100, &[Kind::Allframe, Kind::Raw, Kind::Peer]),
    ];
    let mut first_n = 0;
    for (shape, tasks, batch, kinds) in shapes {
        for &kind in kinds {
            let workload = format!("pg_{shape}_{}", kind.name());
            if !selected(&workload) {
                continue;
            }
            step(&workload);
            let writer = writer(kind, &schema).await.map_err(fail)?;
            let mut runs = Vec::new();
            for _ in 0..scale.runs {
                runs.push(run_writers(&writer, tasks, batch, duration, first_n).await.map_err(fail)?);
                first_n += 1_000_000;
            }
            writer.close().await;
            let unit = if batch == 1 {
                format!("write of 1 event, {tasks} task(s)")
            } else {
                format!("write of {batch} events, {tasks} task(s)")
            };
            out.push(median(target, &workload, &unit, runs));
        }
    }
    for kind in [Kind::Allframe, Kind::Raw, Kind::Peer] {
        let workload = format!("pg_4x16_{}", kind.name());
        if !selected(&workload) {
            continue;
        }
        step(&workload);
        let mut runs = Vec::new();
        for _ in 0..scale.runs {
            runs.push(processes(kind, &schema, 4, 16, scale.seconds).map_err(fail)?);
        }
        out.push(median(target, &workload, "write of 1 event, 4 processes x 16 tasks", runs));
    }
    for listen in [true, false] {
        let workload = if listen { "pg_tail_listen" } else { "pg_tail_poll" };
        if !selected(workload) {
            continue;
        }
        step(workload);
        let mut runs = Vec::new();
        for _ in 0..scale.runs {
            runs.push(tail(&schema, listen, duration).await?);
        }
        let unit = if listen {
            "event delivered to a subscriber in another pool; latency: acknowledgement to delivery (LISTEN)"
        } else {
            "event delivered to a subscriber in another pool; latency: acknowledgement to delivery (polling, no LISTEN)"
        };
        out.push(median(target, workload, unit, runs));
    }
    targets::drop_schema(&schema).await;
    Ok(out)
}

/// `count` processes of `tasks` writers each, started together: total events/s and every
/// write's latency.
fn processes(kind: Kind, schema: &str, count: usize, tasks: usize, seconds: f64) -> Result<(f64, Vec<f64>), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut children = Vec::new();
    for _ in 0..count {
        let mut child = Command::new(&exe)
            .args(["--pg-writer", kind.name(), schema, &tasks.to_string(), &seconds.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start a writer process: {e}"))?;
        let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
        match lines.next() {
            Some(Ok(line)) if line == "READY" => {}
            other => return Err(format!("a writer process did not get ready: {other:?}")),
        }
        children.push((child, lines));
    }
    for (child, _) in &mut children {
        let stdin = child.stdin.as_mut().ok_or("no stdin")?;
        stdin.write_all(b"GO\n").and_then(|()| stdin.flush()).map_err(|e| e.to_string())?;
    }
    let mut rate = 0.0;
    let mut latencies = Vec::new();
    for (mut child, mut lines) in children {
        let line = lines.next().ok_or("a writer process printed no result")?.map_err(|e| e.to_string())?;
        let result: (f64, Vec<f64>) =
            serde_json::from_str(line.strip_prefix("RESULT ").ok_or(line.clone())?).map_err(|e| e.to_string())?;
        rate += result.0;
        latencies.extend(result.1);
        child.wait().map_err(|e| e.to_string())?;
    }
    Ok((rate, latencies))
}

/// The `--pg-writer KIND SCHEMA TASKS SECONDS` child: connects, prints `READY`, waits for
/// `GO` on stdin, writes for SECONDS, prints `RESULT [events/s, [latencies]]`.
pub fn writer_process(args: &[String]) {
    let (Some(kind), Some(schema), Some(tasks), Some(seconds)) = (
        args.first().and_then(|k| Kind::parse(k)),
        args.get(1),
        args.get(2).and_then(|t| t.parse::<usize>().ok()),
        args.get(3).and_then(|s| s.parse::<f64>().ok()),
    ) else {
        eprintln!("usage: --pg-writer allframe|raw|peer SCHEMA TASKS SECONDS");
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let outcome = runtime.block_on(async {
        let writer = writer(kind, schema).await?;
        // Open the pool's connections before the clock starts.
        run_writers(&writer, tasks, 1, Duration::from_millis(100), u64::from(std::process::id()) << 32).await?;
        println!("READY");
        let _ = std::io::stdout().flush();
        let mut go = String::new();
        std::io::stdin().read_line(&mut go).map_err(|e| e.to_string())?;
        let first = (u64::from(std::process::id()) << 32) + 1_000_000;
        let result = run_writers(&writer, tasks, 1, Duration::from_secs_f64(seconds), first).await?;
        writer.close().await;
        Ok::<_, String>(result)
    });
    match outcome {
        Ok(result) => println!("RESULT {}", serde_json::to_string(&result).expect("json")),
        Err(error) => {
            eprintln!("pg-writer: {error}");
            std::process::exit(1);
        }
    }
}

/// One appender (a backend of its own, as another process would be) appends single events,
/// 1 ms apart, while a subscriber on another backend delivers them: delivered events/s and,
/// per event, the time from the append's acknowledgement to its delivery.
async fn tail(schema: &str, listen: bool, duration: Duration) -> Result<(f64, Vec<f64>), allframe::Error> {
    let url = targets::database_url();
    let appender = PostgresBackend::builder(&url).schema(schema).pool_size(4).run_migrations(false).connect().await?;
    let reader = Arc::new(
        PostgresBackend::builder(&url)
            .schema(schema)
            .pool_size(4)
            .run_migrations(false)
            .live_notifications(listen)
            .connect()
            .await?,
    );
    let options = SubscriptionOptions { page_size: 256, max_wait: Duration::from_secs(1) };
    let mut subscription = RawSubscription::start(Arc::clone(&reader), StartFrom::End, options).await?;
    let stream = format!("tail-{}-{listen}", std::process::id());
    let payload = payload();
    let mut acks = Vec::new();
    let (deliveries_tx, deliveries_rx) = tokio::sync::oneshot::channel();
    let (last_tx, last_rx) = tokio::sync::watch::channel(u64::MAX);
    let subscriber = tokio::spawn(async move {
        let mut delivered = Vec::new();
        loop {
            let event = subscription.next().await?;
            delivered.push((event.position, Instant::now()));
            if event.position >= *last_rx.borrow() {
                break;
            }
        }
        let _ = deliveries_tx.send(delivered);
        Ok::<_, allframe::Error>(())
    });
    let start = Instant::now();
    let deadline = start + duration;
    while Instant::now() < deadline {
        let result =
            appender.append(&stream, ExpectedVersion::Any, vec![NewEvent::new("OrderPlaced", payload.clone())]).await?;
        acks.push((result.last_position, Instant::now()));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let last = acks.last().map_or(0, |a| a.0);
    let _ = last_tx.send(last);
    // A no-op append wakes a subscriber that read the last event before the watch was set.
    appender.append(&format!("{stream}-end"), ExpectedVersion::Any, vec![NewEvent::new("End", "{}")]).await?;
    subscriber.await.map_err(|e| allframe::Error::Configuration { reason: e.to_string() })??;
    let delivered: std::collections::HashMap<u64, Instant> = deliveries_rx
        .await
        .map_err(|e| allframe::Error::Configuration { reason: e.to_string() })?
        .into_iter()
        .collect();
    let elapsed = start.elapsed().as_secs_f64();
    let latencies: Vec<f64> = acks
        .iter()
        .filter_map(|(position, acked)| {
            delivered.get(position).map(|at| at.saturating_duration_since(*acked).as_secs_f64() * 1e6)
        })
        .collect();
    if latencies.len() != acks.len() {
        return Err(allframe::Error::Configuration {
            reason: format!("the subscriber delivered {} of {} events", latencies.len(), acks.len()),
        });
    }
    appender.close().await;
    reader.close().await;
    Ok((acks.len() as f64 / elapsed, latencies))
}
