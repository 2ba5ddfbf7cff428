//! PostgreSQL backend throughput against the raw ceiling of the same server, in one run.
//!
//! ```text
//! cargo bench -p allframe-backend-postgres --bench postgres
//! ```
//!
//! Needs a server at `ALLFRAME_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! each run works in a fresh schema and drops it at the end. Every payload is the same
//! 200-byte JSON document. Groups:
//!
//! - `allframe/*`: this backend: one appender of single events; 8 concurrent appenders on
//!   distinct streams; appends of 100 events; reading a 1,000-event stream.
//! - `raw/*`: the ceiling: plain `INSERT`s of the same rows into a table with only a
//!   `bigserial` key, autocommit: one row per statement (1 and 8 connections) and 100 rows
//!   per statement through `unnest` (1 connection).
//! - `peer/*`: the write pattern of postgres-es (cqrs-es), emulated on its table layout:
//!   `BEGIN`, one `INSERT` per event, `COMMIT` (this is not the postgres-es crate itself).

use std::time::{Duration, Instant};

use allframe_backend_postgres::PostgresBackend;
use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, NewEvent};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection};

fn url() -> String {
    std::env::var("ALLFRAME_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A 200-byte JSON document.
fn payload() -> String {
    let head = r#"{"account":"acct-0000042","amount":12345,"currency":"EUR","memo":""#;
    let tail = r#""}"#;
    let text = format!("{head}{}{tail}", "m".repeat(200 - head.len() - tail.len()));
    assert_eq!(text.len(), 200);
    text
}

fn events(count: usize, payload: &str) -> Vec<NewEvent> {
    (0..count).map(|_| NewEvent::new("Deposited", payload.to_owned())).collect()
}

struct Fixture {
    schema: String,
    backend: PostgresBackend,
    /// The same store without NOTIFY on append (`live_notifications(false)`).
    quiet: PostgresBackend,
    raw: PgPool,
}

async fn fixture() -> Option<Fixture> {
    let url = url();
    if let Err(e) = sqlx::PgConnection::connect(&url).await {
        eprintln!("NOTICE: no PostgreSQL server at {url} ({e}); benchmarks skipped");
        return None;
    }
    let schema = format!("afbench_{}", std::process::id());
    let backend = PostgresBackend::builder(&url).schema(&schema).pool_size(10).connect().await.expect("connect");
    let quiet = PostgresBackend::builder(&url)
        .schema(&schema)
        .pool_size(10)
        .live_notifications(false)
        .connect()
        .await
        .expect("connect");
    let raw = PgPoolOptions::new().max_connections(10).connect(&url).await.expect("raw pool");
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE {schema}.raw_events (id bigserial PRIMARY KEY, payload jsonb NOT NULL);
         CREATE TABLE {schema}.peer_events (
             aggregate_type text NOT NULL, aggregate_id text NOT NULL,
             sequence bigint CHECK (sequence >= 0) NOT NULL, event_type text NOT NULL,
             event_version text NOT NULL, payload json NOT NULL, metadata json NOT NULL,
             PRIMARY KEY (aggregate_type, aggregate_id, sequence));"
    )))
    .execute(&raw)
    .await
    .expect("raw tables");
    Some(Fixture { schema, backend, quiet, raw })
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let Some(fixture) = runtime.block_on(fixture()) else { return };
    let payload = payload();
    let schema = fixture.schema.clone();

    let mut group = c.benchmark_group("allframe");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));

    group.throughput(Throughput::Elements(1));
    group.bench_function("append_single", |b| {
        b.to_async(&runtime).iter(|| async {
            fixture.backend.append("single", ExpectedVersion::Any, events(1, &payload)).await.expect("append")
        })
    });

    group.bench_function("append_single_without_notify", |b| {
        b.to_async(&runtime).iter(|| async {
            fixture.quiet.append("single", ExpectedVersion::Any, events(1, &payload)).await.expect("append")
        })
    });

    group.throughput(Throughput::Elements(8));
    group.bench_function("append_8_concurrent", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let (backend, payload) = (fixture.backend.clone(), payload.clone());
            async move {
                let start = Instant::now();
                let tasks: Vec<_> = (0..8)
                    .map(|t| {
                        let (backend, payload) = (backend.clone(), payload.clone());
                        tokio::spawn(async move {
                            for _ in 0..iters {
                                backend
                                    .append(&format!("concurrent-{t}"), ExpectedVersion::Any, events(1, &payload))
                                    .await
                                    .expect("append");
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("task");
                }
                start.elapsed()
            }
        })
    });

    group.throughput(Throughput::Elements(100));
    group.bench_function("append_batch_100", |b| {
        b.to_async(&runtime).iter(|| async {
            fixture.backend.append("batched", ExpectedVersion::Any, events(100, &payload)).await.expect("append")
        })
    });

    runtime.block_on(async {
        for chunk in 0..10 {
            let expected = ExpectedVersion::Exact(chunk * 100);
            fixture.backend.append("read-1000", expected, events(100, &payload)).await.expect("seed");
        }
    });
    group.throughput(Throughput::Elements(1000));
    group.bench_function("read_stream_1000", |b| {
        b.to_async(&runtime).iter(|| async {
            let read = fixture.backend.read_stream("read-1000", 0, 1000).await.expect("read");
            assert_eq!(read.len(), 1000);
            read
        })
    });
    group.finish();

    let mut group = c.benchmark_group("raw");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    let insert_one = format!("INSERT INTO {schema}.raw_events (payload) VALUES ($1::jsonb)");
    let insert_many =
        format!("INSERT INTO {schema}.raw_events (payload) SELECT p::jsonb FROM unnest($1::text[]) AS t (p)");

    group.throughput(Throughput::Elements(1));
    group.bench_function("insert_single", |b| {
        b.to_async(&runtime).iter(|| async {
            sqlx::query(AssertSqlSafe(insert_one.clone())).bind(&payload).execute(&fixture.raw).await.expect("insert")
        })
    });

    group.throughput(Throughput::Elements(8));
    group.bench_function("insert_single_8_concurrent", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let (raw, payload, sql) = (fixture.raw.clone(), payload.clone(), insert_one.clone());
            async move {
                let start = Instant::now();
                let tasks: Vec<_> = (0..8)
                    .map(|_| {
                        let (raw, payload, sql) = (raw.clone(), payload.clone(), sql.clone());
                        tokio::spawn(async move {
                            for _ in 0..iters {
                                sqlx::query(AssertSqlSafe(sql.clone()))
                                    .bind(&payload)
                                    .execute(&raw)
                                    .await
                                    .expect("insert");
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("task");
                }
                start.elapsed()
            }
        })
    });

    let rows: Vec<&str> = vec![payload.as_str(); 100];
    group.throughput(Throughput::Elements(100));
    group.bench_function("unnest_100", |b| {
        b.to_async(&runtime).iter(|| async {
            sqlx::query(AssertSqlSafe(insert_many.clone())).bind(&rows).execute(&fixture.raw).await.expect("insert")
        })
    });
    group.finish();

    let mut group = c.benchmark_group("peer");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    let peer_insert = format!(
        "INSERT INTO {schema}.peer_events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ($1, $2, $3, $4, $5, $6::json, $7::json)"
    );
    let sequence = std::sync::atomic::AtomicI64::new(0);
    for (name, count) in [("postgres_es_pattern_single", 1usize), ("postgres_es_pattern_batch_100", 100)] {
        group.throughput(Throughput::Elements(count as u64));
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                let mut tx = fixture.raw.begin().await.expect("begin");
                for _ in 0..count {
                    let seq = sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    sqlx::query(AssertSqlSafe(peer_insert.clone()))
                        .bind("Account")
                        .bind(name)
                        .bind(seq)
                        .bind("Deposited")
                        .bind("1.0")
                        .bind(&payload)
                        .bind("{}")
                        .execute(&mut *tx)
                        .await
                        .expect("insert");
                }
                tx.commit().await.expect("commit");
            })
        });
    }
    group.finish();

    runtime.block_on(async {
        fixture.backend.close().await;
        fixture.quiet.close().await;
        let _ = sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE"))).execute(&fixture.raw).await;
    });
}

criterion_group!(postgres, benches);
criterion_main!(postgres);
