//! The projection workloads (issue 19): a catch-up replay into a counting read model, with
//! JSON and with postcard, each on a store of its own; the lag from an append's
//! acknowledgement to a projection having applied it, under 64 appenders; and, on
//! PostgreSQL, a transactional projection beside the append rate of the same events.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use allframe::cqrs::{BoxError, Envelope, ProjectionRegistry, ReadModel, Resume};
use allframe::{Codec, DynBackend, EventStore, EventStoreBackend};
use allframe_benches::{OrderPlaced, order_placed};

use crate::workloads::{median, step};
use crate::{Measurement, Scale, targets};

type Store = EventStore<OrderPlaced, DynBackend>;

/// Counts the orders and their lines: the read model of the catch-up workload. Decoding each
/// event is the work measured.
#[derive(Default)]
struct OrderCount {
    orders: u64,
    lines: u64,
}

impl ReadModel<OrderPlaced> for OrderCount {
    const NAME: &'static str = "order-count";
    const EVENTS: &'static [&'static str] = &["OrderPlaced"];

    fn apply(&mut self, event: &Envelope<OrderPlaced>) -> Result<(), BoxError> {
        self.orders += 1;
        self.lines += event.event.lines.len() as u64;
        Ok(())
    }
}

/// Notes when each position was applied, for the lag workload. It starts at the head (from
/// a checkpoint saved there), so it sees only the events appended while it is measured.
struct AppliedAt {
    base: u64,
    at: Arc<Mutex<Vec<(u64, Instant)>>>,
}

impl ReadModel<OrderPlaced> for AppliedAt {
    const NAME: &'static str = "applied-at";
    const RESUME: Resume = Resume::FromCheckpoint;

    fn apply(&mut self, event: &Envelope<OrderPlaced>) -> Result<(), BoxError> {
        let now = Instant::now();
        self.at.lock().expect("lag samples").push((event.position - self.base, now));
        Ok(())
    }
}

/// Fills a fresh store of `target` with `events` events in `codec`, in batches of 1,000.
async fn filled(target: &str, codec: Codec, events: u64) -> Result<Store, allframe::Error> {
    let label = format!("projection-{}", codec.name());
    let backend = targets::open_extra(target, &label, codec == Codec::Postcard)
        .await
        .map_err(|reason| allframe::Error::Configuration { reason })?;
    let store: Store = EventStore::with_backend(backend).with_codec(codec);
    let mut n = 0;
    while n < events {
        let batch: Vec<OrderPlaced> = (n..(n + 1000).min(events)).map(order_placed).collect();
        store.append(&format!("orders-{}", n / 1000 % 997), batch).await?;
        n += 1000;
        if n % 1_000_000 == 0 {
            step(&format!(
                "fill the {} projection store: {}M of {}M events",
                codec.name(),
                n / 1_000_000,
                events / 1_000_000
            ));
        }
    }
    Ok(store)
}

/// Time for a fresh registry to bring a counting read model from position 0 to the head.
async fn catch_up_once(store: &Store) -> Result<(f64, Vec<f64>), allframe::Error> {
    let head = store.backend().head_position().await?;
    // Positions are sparse on PostgreSQL (they follow transaction ids): count the events.
    let events = store.backend().stats().await?.events;
    let registry = ProjectionRegistry::new(store.clone());
    let count = registry.register(OrderCount::default).map_err(to_store)?;
    let start = Instant::now();
    registry.start_all().await.map_err(to_store)?;
    let model = count.read_at_least(head, Duration::from_secs(3_600)).await.map_err(to_store)?;
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(model.orders, events, "every event counted once");
    drop(model);
    registry.stop_all().await;
    Ok((events as f64 / seconds, Vec::new()))
}

fn to_store(error: allframe::cqrs::ProjectionError) -> allframe::Error {
    match error {
        allframe::cqrs::ProjectionError::Store(error) => error,
        other => allframe::Error::Configuration { reason: other.to_string() },
    }
}

/// The catch-up replay, with JSON and with postcard.
pub async fn catch_up(target: &str, scale: Scale) -> Result<Vec<Measurement>, allframe::Error> {
    let mut out = Vec::new();
    for codec in [Codec::Json, Codec::Postcard] {
        step(&format!("projection_catch_up_{}: fill", codec.name()));
        let store = filled(target, codec, scale.projection_events).await?;
        step(&format!("projection_catch_up_{}", codec.name()));
        let mut runs = Vec::new();
        for _ in 0..scale.runs {
            runs.push(catch_up_once(&store).await?);
        }
        out.push(median(
            target,
            &format!("projection_catch_up_{}", codec.name()),
            &format!(
                "event replayed into a counting projection ({} events, {})",
                scale.projection_events,
                codec.name()
            ),
            runs,
        ));
        drop(store);
        targets::cleanup_extra(target, &format!("projection-{}", codec.name())).await;
    }
    Ok(out)
}

/// 64 tasks append one event at a time for `duration`; each acknowledgement's lag until the
/// projection has applied the event, in microseconds.
pub async fn live_lag(store: &Store, target: &str, duration: Duration) -> Result<Measurement, allframe::Error> {
    step("projection_lag_64");
    let backend = store.backend();
    let head = backend.head_position().await?;
    let held = backend.load_checkpoint("applied-at@v1").await?;
    backend.save_checkpoint("applied-at@v1", held, head).await?;
    let at = Arc::new(Mutex::new(Vec::with_capacity(1 << 20)));
    let registry = ProjectionRegistry::new(store.clone());
    let samples = Arc::clone(&at);
    let handle = registry.register(move || AppliedAt { base: head, at: Arc::clone(&samples) }).map_err(to_store)?;
    registry.start_all().await.map_err(to_store)?;

    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut acks = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let written = store.append(&format!("lag-{task}"), vec![order_placed(n)]).await?;
                    acks.push((written.last_position, Instant::now()));
                    n += 1;
                }
                Ok::<_, allframe::Error>(acks)
            })
        })
        .collect();
    let mut acks = Vec::new();
    for task in tasks {
        acks.extend(task.await.expect("appender task")?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let last = acks.iter().map(|ack| ack.0).max().unwrap_or(head);
    drop(handle.read_at_least(last, Duration::from_secs(60)).await.map_err(to_store)?);
    registry.stop_all().await;

    let applied = at.lock().expect("lag samples");
    let mut when = vec![None; (last - head) as usize + 1];
    for &(offset, instant) in applied.iter() {
        if let Some(slot) = when.get_mut(offset as usize) {
            *slot = Some(instant);
        }
    }
    let lags: Vec<f64> = acks
        .iter()
        .filter_map(|&(position, acked)| {
            let applied = when.get((position - head) as usize).copied().flatten()?;
            Some(applied.saturating_duration_since(acked).as_secs_f64() * 1e6)
        })
        .collect();
    assert_eq!(lags.len(), acks.len(), "every acknowledged event was applied");
    Ok(median(
        target,
        "projection_lag_64",
        "event appended by 64 tasks; latency: acknowledgement to applied by a projection",
        vec![(acks.len() as f64 / elapsed, lags)],
    ))
}

/// PostgreSQL: a transactional projection writing one row per event, beside the append rate
/// of the same events.
#[cfg(feature = "postgres")]
pub async fn transactional(target: &str, scale: Scale) -> Result<Vec<Measurement>, allframe::Error> {
    use allframe::cqrs::{FailurePolicy, PgTransaction, PostgresBackend, TransactionalReadModel};

    struct Rows {
        table: String,
    }

    #[allframe::cqrs::async_trait]
    impl TransactionalReadModel<OrderPlaced, PgTransaction> for Rows {
        const NAME: &'static str = "order-rows";

        async fn apply(
            &mut self,
            transaction: &mut PgTransaction,
            event: &Envelope<OrderPlaced>,
        ) -> Result<(), BoxError> {
            let statement = format!("INSERT INTO {} (position, order_id) VALUES ($1, $2)", self.table);
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .bind(event.position as i64)
                .bind(&event.event.order_id)
                .execute(&mut **transaction)
                .await?;
            Ok(())
        }
    }

    step("projection_transactional: fill");
    let schema = format!("bench_tx_{}", std::process::id());
    let url = targets::database_url();
    let backend = PostgresBackend::builder(&url).schema(&schema).pool_size(8).connect().await?;
    let table = format!("{schema}.order_rows");
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&url)
            .await
            .map_err(|e| allframe::Error::Configuration { reason: e.to_string() })?;
        let sql = format!("CREATE TABLE {table} (position bigint PRIMARY KEY, order_id text NOT NULL)");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .map_err(|e| allframe::Error::Configuration { reason: e.to_string() })?;
    }
    let store: EventStore<OrderPlaced, PostgresBackend> = EventStore::with_backend(backend.clone());
    let events = scale.transactional_events;
    let start = Instant::now();
    let mut n = 0;
    while n < events {
        let batch: Vec<OrderPlaced> = (n..(n + 1000).min(events)).map(order_placed).collect();
        store.append(&format!("orders-{}", n / 1000), batch).await?;
        n += 1000;
    }
    let fill = events as f64 / start.elapsed().as_secs_f64();

    step("projection_transactional");
    let registry = ProjectionRegistry::new(store.clone());
    let handle = registry
        .register_transactional(move || Rows { table: table.clone() }, FailurePolicy::stop())
        .map_err(to_store)?;
    let head = backend.head_position().await?;
    let start = Instant::now();
    registry.start_all().await.map_err(to_store)?;
    drop(handle.read_at_least(head, Duration::from_secs(3_600)).await.map_err(to_store)?);
    let applied = head as f64 / start.elapsed().as_secs_f64();
    registry.stop_all().await;
    drop(store);
    drop(backend);
    targets::drop_schema(&schema).await;
    Ok(vec![
        median(
            target,
            "projection_transactional_append",
            "event appended in batches of 1,000 (the projection's input)",
            vec![(fill, Vec::new())],
        ),
        median(
            target,
            "projection_transactional",
            "event applied by a transactional projection (one row each, one transaction per page)",
            vec![(applied, Vec::new())],
        ),
    ])
}

/// Whether `target` gets the transactional workload (it needs PostgreSQL's transactions).
#[cfg(feature = "postgres")]
pub fn has_transactions(target: &str) -> bool {
    target == "postgres"
}
