//! Reads from a streaming replica (`PostgresBuilder::read_replica`): appends go to the primary,
//! a subscriber reads the log on a hot standby. The standby replays commits in the primary's
//! commit order, which is position order (decision 0201), so the subscriber skips nothing: it
//! only lags. Needs the standby `scripts/postgres-replica-up.sh` starts (port 5433).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use allframe_backend_postgres::PostgresBackend;
use allframe_cqrs_core::{
    EventId, EventStoreBackend, ExpectedVersion, NewEvent, RawSubscription, StartFrom, SubscriptionOptions,
};
use sqlx::Connection;

const WRITERS: usize = 12;
const APPENDS_PER_WRITER: usize = 30;

fn batch_size(w: usize, i: usize) -> usize {
    if (w + i).is_multiple_of(11) { 150 } else { 1 + (w * 3 + i) % 4 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_on_a_hot_standby_skips_nothing_and_only_lags() {
    if !common::server_available().await || !common::replica_available().await {
        return;
    }
    let Some(primary) = common::fresh_with(|b| b.pool_size(8)).await else { return };
    common::wait_for_replica_schema(&primary.schema).await;
    let reader = Arc::new(
        PostgresBackend::builder(&common::database_url())
            .schema(&primary.schema)
            .read_replica(common::replica_url())
            .application_name("replica-reader")
            .pool_size(2)
            .run_migrations(false)
            .connect()
            .await
            .expect("a backend reading from the replica"),
    );
    let total: usize = (0..WRITERS).flat_map(|w| (0..APPENDS_PER_WRITER).map(move |i| batch_size(w, i))).sum();
    let options = SubscriptionOptions { page_size: 50, max_wait: Duration::from_millis(200) };
    let mut subscription =
        RawSubscription::start(Arc::clone(&reader), StartFrom::Beginning, options).await.expect("subscribe");
    let subscriber = tokio::spawn(async move {
        let mut seen: Vec<(u64, EventId)> = Vec::with_capacity(total);
        let mut last = 0;
        while seen.len() < total {
            let event = tokio::time::timeout(Duration::from_secs(10), subscription.next())
                .await
                .unwrap_or_else(|_| panic!("the subscriber saw {} of {total} events and then nothing", seen.len()))
                .expect("next event");
            assert!(event.position > last, "position {} after {last}: the log went backwards", event.position);
            last = event.position;
            seen.push((event.position, event.metadata.event_id));
        }
        seen
    });

    // Writers on the primary in three pools (as three processes would), each with several
    // groups in flight, while a sampler notes how far the replica is behind.
    let mut pools = Vec::new();
    for _ in 0..3 {
        let backend = PostgresBackend::builder(&common::database_url())
            .schema(&primary.schema)
            .group_commit(4)
            .pool_size(6)
            .run_migrations(false)
            .connect()
            .await
            .expect("a writer backend");
        pools.push(Arc::new(backend));
    }
    let writer_backend = Arc::new(primary.inner().clone());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let backend = Arc::clone(&pools[w % pools.len()]);
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0..APPENDS_PER_WRITER {
                    let events: Vec<NewEvent> = (0..batch_size(w, i))
                        .map(|k| NewEvent::new("Replicated", format!(r#"{{"w":{w},"i":{i},"k":{k}}}"#)))
                        .collect();
                    let ids: Vec<EventId> = events.iter().map(|e| e.metadata.event_id).collect();
                    let result = backend.append(&format!("order-{}", w / 3), ExpectedVersion::Any, events).await;
                    acknowledged.push((result.expect("append on the primary").first_position, ids));
                }
                acknowledged
            })
        })
        .collect();
    let sampler = {
        let (primary, replica) = (Arc::clone(&writer_backend), Arc::clone(&reader));
        tokio::spawn(async move {
            let mut max_behind = 0;
            for _ in 0..200 {
                let ahead = primary.head_position().await.expect("primary head");
                let behind = ahead.saturating_sub(replica.head_position().await.expect("replica head"));
                max_behind = max_behind.max(behind);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            max_behind
        })
    };
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.expect("writer"));
    }
    let seen = subscriber.await.expect("subscriber");
    let max_behind = sampler.await.expect("sampler");

    // Exactly once, in order, and what it saw is the primary's log.
    assert_eq!(seen.len(), total);
    let unique: HashSet<EventId> = seen.iter().map(|(_, id)| *id).collect();
    assert_eq!(unique.len(), total, "no event seen twice");
    let log = primary.get_all_events().await.expect("the primary's log");
    assert_eq!(log.iter().map(|e| (e.position, e.metadata.event_id)).collect::<Vec<_>>(), seen);
    let at: HashMap<u64, EventId> = seen.into_iter().collect();
    for (first, ids) in &acknowledged {
        for (offset, id) in ids.iter().enumerate() {
            assert_eq!(at.get(&(first + offset as u64)), Some(id), "an acknowledged event is where it was reported");
        }
    }

    // The reads went to the standby, and a write through the same backend goes to the primary.
    let mut standby = sqlx::PgConnection::connect(&common::replica_url()).await.expect("connect to the replica");
    let on_standby: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'replica-reader'")
            .fetch_one(&mut standby)
            .await
            .unwrap();
    assert!(on_standby >= 1, "the reader's connections are on the standby");
    let written = reader.append("through-reader", ExpectedVersion::NoStream, vec![NewEvent::new("W", "{}")]).await;
    let written = written.expect("an append through the replica-reading backend");
    assert!(written.first_position > log.last().expect("events").position, "it goes on after the log");
    eprintln!("{total} events tailed on the standby; the standby was up to {max_behind} positions behind the primary");
    reader.close().await;
}
