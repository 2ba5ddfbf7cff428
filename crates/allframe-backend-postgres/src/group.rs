//! Group commit: the appends that callers of one backend make at the same time go to the
//! server together, as one call of `append_group` (one statement, one transaction, one WAL
//! flush), while each is still checked on its own (docs/decisions/0203-postgres-group-commit.md).
//!
//! A background task takes appends from a queue. It keeps at most `groups_in_flight` groups
//! running; while they run, new appends wait in the queue, and the next group takes all of
//! them (up to [`MAX_GROUP_APPENDS`] appends and [`MAX_GROUP_EVENTS`] events). So a lone
//! appender pays one round trip per append, and many appenders share each commit.
//!
//! Each append gets its own outcome: stored (with its positions), a version conflict (the
//! caller then checks whether it was a retry of a stored append), or [`Outcome::Failed`] when
//! the group as a whole failed (a duplicate event id, a payload the server refuses, a lost
//! connection). Then nothing of the group is stored, or (a lost connection) all of it may be,
//! and each caller does its append alone on the single-append path, whose errors and
//! idempotent retries are exact: an append at fault fails alone, the others are stored (or
//! recognised as stored) as if they had never been grouped.

use std::sync::Arc;

use allframe_cqrs_core::{AppendResult, CommitSignal, NewEvent};
use sqlx::postgres::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::Sql;
use crate::horizon::Seen;
use crate::pgtypes::{PgTimestamp, PgUuid};
use crate::statements::{Statement, Statements};

/// A row of `append_events`: stream version, first and last positions, visible_below, txid,
/// older_running.
pub(crate) type AppendRow = (i64, i64, i64, i64, i64, Option<Vec<i64>>);

/// A row of `append_group`: stored, then as [`AppendRow`].
type GroupRow = (bool, i64, i64, i64, i64, i64, Option<Vec<i64>>);

/// Most appends in one group.
pub(crate) const MAX_GROUP_APPENDS: usize = 512;

/// Most events in one group (a larger single append forms a group alone).
pub(crate) const MAX_GROUP_EVENTS: usize = 10_000;

/// One caller's append, waiting for its group.
pub(crate) struct Pending {
    pub(crate) stream: String,
    /// The expected version as `append_group` takes it (-1 any, -2 exists, n exact).
    pub(crate) expected: i64,
    pub(crate) events: Arc<Vec<NewEvent>>,
    /// Each event's metadata in the core's binary form.
    pub(crate) metadata: Vec<Vec<u8>>,
    pub(crate) reply: oneshot::Sender<Outcome>,
}

/// What became of one append of a group.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Stored, at these positions.
    Stored(AppendResult),
    /// Not stored: the stream's version did not match; this is its actual version.
    Conflict { actual: u64 },
    /// The group failed as a whole; the caller does the append alone. `lost` holds the error
    /// when the connection was lost, so that the group may or may not have committed.
    Failed { lost: Option<Arc<sqlx::Error>> },
}

/// What the group task needs, fixed for the backend's life.
pub(crate) struct GroupContext {
    pub(crate) pool: PgPool,
    /// `append_group`, for groups of several appends.
    pub(crate) sql: Sql,
    /// `append_events`, for a group of one (cheaper: no per-append bookkeeping).
    pub(crate) single_sql: Sql,
    pub(crate) json: bool,
    pub(crate) signal: Arc<CommitSignal>,
    pub(crate) visibility: Arc<crate::horizon::Visibility>,
    /// Wakes other processes' subscribers after the commit, when live notifications are on.
    pub(crate) notifier: Option<Arc<crate::horizon::Notifier>>,
    /// The statements running, for their times and the pool's gauges.
    pub(crate) statements: Arc<Statements>,
}

/// The queue into the group task. Dropping it (with the backend) ends the task once the
/// groups in flight are done.
#[derive(Debug)]
pub(crate) struct GroupCommitter {
    queue: mpsc::UnboundedSender<Pending>,
}

impl GroupCommitter {
    /// Starts the group task on the current tokio runtime.
    pub(crate) fn start(context: GroupContext, groups_in_flight: usize) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(receiver, Arc::new(context), groups_in_flight.max(1)));
        GroupCommitter { queue }
    }

    /// Queues an append and waits for its outcome. A dropped caller leaves its append queued:
    /// it is stored whole or not at all, as with any append dropped part-way.
    pub(crate) async fn submit(
        &self,
        stream: &str,
        expected: i64,
        events: Arc<Vec<NewEvent>>,
        metadata: Vec<Vec<u8>>,
    ) -> Outcome {
        let (reply, outcome) = oneshot::channel();
        let pending = Pending { stream: stream.to_owned(), expected, events, metadata, reply };
        if self.queue.send(pending).is_err() {
            return Outcome::Failed { lost: None };
        }
        outcome.await.unwrap_or(Outcome::Failed { lost: None })
    }
}

async fn run(mut queue: mpsc::UnboundedReceiver<Pending>, context: Arc<GroupContext>, groups_in_flight: usize) {
    let slots = Arc::new(Semaphore::new(groups_in_flight));
    let mut carried: Option<Pending> = None;
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
        let first = match carried.take() {
            Some(pending) => pending,
            None => match queue.recv().await {
                Some(pending) => pending,
                None => return,
            },
        };
        let mut events = first.events.len();
        let mut group = vec![first];
        while group.len() < MAX_GROUP_APPENDS && events < MAX_GROUP_EVENTS {
            let Ok(pending) = queue.try_recv() else { break };
            if events + pending.events.len() > MAX_GROUP_EVENTS {
                carried = Some(pending);
                break;
            }
            events += pending.events.len();
            group.push(pending);
        }
        let context = Arc::clone(&context);
        tokio::spawn(async move { execute(&context, group, slot).await });
    }
}

/// Runs one group and answers each of its callers once its appends are visible. The group's
/// slot is given back as soon as it has committed.
async fn execute(context: &GroupContext, group: Vec<Pending>, slot: tokio::sync::OwnedSemaphorePermit) {
    let called = call(context, &group).await;
    drop(slot);
    let outcomes = match called {
        Ok((outcomes, seen)) => {
            crate::metrics::group_committed(group.len());
            context.visibility.committed(seen.xid);
            let last = outcomes
                .iter()
                .filter_map(|outcome| match outcome {
                    Outcome::Stored(result) => Some(result.last_position),
                    _ => None,
                })
                .max();
            if let Some(last) = last {
                context.visibility.wait(last, seen).await;
            }
            outcomes
        }
        Err(error) => {
            tracing::debug!(%error, appends = group.len(), "postgres: group append failed; its appends go alone");
            let lost = crate::errors::connection_lost(&error).then(|| Arc::new(error));
            group.iter().map(|_| Outcome::Failed { lost: lost.clone() }).collect()
        }
    };
    let last = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            Outcome::Stored(result) => Some(result.last_position),
            _ => None,
        })
        .max();
    if let Some(last) = last {
        context.signal.publish(last);
        if let Some(notifier) = &context.notifier {
            notifier.announce(last);
        }
    }
    for (pending, outcome) in group.into_iter().zip(outcomes) {
        // A caller that went away needs no answer.
        let _ = pending.reply.send(outcome);
    }
}

/// A group of one append: one call of `append_events`, which raises on a wrong expected version.
#[allow(clippy::too_many_arguments)]
async fn call_alone(
    context: &GroupContext,
    pending: &Pending,
    ids: Vec<PgUuid>,
    types: Vec<&str>,
    json: Vec<&str>,
    bytes: Vec<&[u8]>,
    metadata: Vec<&[u8]>,
    created: Vec<PgTimestamp>,
) -> Result<(Vec<Outcome>, Seen), sqlx::Error> {
    let running = context.statements.start(Statement::Append, &context.pool, true);
    let rows: Result<Vec<AppendRow>, sqlx::Error> = sqlx::query_as(context.single_sql.clone())
        .bind(&pending.stream)
        .bind(pending.expected)
        .bind(&ids)
        .bind(&types)
        .bind(context.json.then_some(&json))
        .bind((!context.json).then_some(&bytes))
        .bind(&metadata)
        .bind(&created)
        .bind(None::<&str>)
        .fetch_all(&context.pool)
        .await;
    drop(running);
    match rows {
        Ok(rows) => {
            let Some((version, first, last, visible_below, xid, older)) = rows.first() else {
                return Err(sqlx::Error::Protocol("append_events answered no row".into()));
            };
            let (version, first, last) = (*version, *first, *last);
            let stored = AppendResult {
                stream_version: version.max(0) as u64,
                first_position: first.max(0) as u64,
                last_position: last.max(0) as u64,
                deduplicated: false,
            };
            Ok((vec![Outcome::Stored(stored)], seen(*visible_below, *xid, older)))
        }
        Err(error) if crate::errors::sqlstate(&error).as_deref() == Some(crate::errors::WRONG_EXPECTED_VERSION) => {
            let actual = crate::errors::detail(&error).and_then(|d| d.parse::<u64>().ok()).unwrap_or(0);
            Ok((vec![Outcome::Conflict { actual }], Seen::default()))
        }
        Err(error) => Err(error),
    }
}

/// One call of `append_group`: every append's outcome, in the group's order, and the horizon
/// its events are below once committed (if nothing older was running).
async fn call(context: &GroupContext, group: &[Pending]) -> Result<(Vec<Outcome>, Seen), sqlx::Error> {
    let total: usize = group.iter().map(|p| p.events.len()).sum();
    let mut streams = Vec::with_capacity(group.len());
    let mut expected = Vec::with_capacity(group.len());
    let mut counts = Vec::with_capacity(group.len());
    let mut app = Vec::with_capacity(total);
    let mut ids = Vec::with_capacity(total);
    let mut types = Vec::with_capacity(total);
    let mut json: Vec<&str> = Vec::with_capacity(if context.json { total } else { 0 });
    let mut bytes: Vec<&[u8]> = Vec::with_capacity(if context.json { 0 } else { total });
    let mut metadata: Vec<&[u8]> = Vec::with_capacity(total);
    let mut created = Vec::with_capacity(total);
    for (index, pending) in group.iter().enumerate() {
        streams.push(pending.stream.as_str());
        expected.push(pending.expected);
        counts.push(i32::try_from(pending.events.len()).unwrap_or(i32::MAX));
        for (event, meta) in pending.events.iter().zip(&pending.metadata) {
            app.push(i32::try_from(index + 1).unwrap_or(i32::MAX));
            ids.push(PgUuid(event.metadata.event_id.0));
            types.push(&*event.event_type);
            if context.json {
                // Checked before queueing; a payload that is not text fails the group, and the
                // single-append path then refuses it with its exact error.
                json.push(std::str::from_utf8(&event.payload).map_err(|e| sqlx::Error::Encode(Box::new(e)))?);
            } else {
                bytes.push(&event.payload);
            }
            metadata.push(meta.as_slice());
            created.push(PgTimestamp::from_unix_micros(event.metadata.timestamp.as_micros()));
        }
    }
    if let [alone] = group {
        return call_alone(context, alone, ids, types, json, bytes, metadata, created).await;
    }
    let running = context.statements.start(Statement::AppendGroup, &context.pool, true);
    let rows: Vec<GroupRow> = sqlx::query_as(context.sql.clone())
        .bind(&streams)
        .bind(&expected)
        .bind(&counts)
        .bind(&app)
        .bind(&ids)
        .bind(&types)
        .bind(context.json.then_some(&json))
        .bind((!context.json).then_some(&bytes))
        .bind(&metadata)
        .bind(&created)
        // NOTIFY is sent after the commit, outside the group (`horizon::Notifier`).
        .bind(None::<&str>)
        // Read up to ReadyForQuery, which the server sends after the commit.
        .fetch_all(&context.pool)
        .await?;
    drop(running);
    if rows.len() != group.len() {
        return Err(sqlx::Error::Protocol(format!(
            "append_group answered {} rows for {} appends",
            rows.len(),
            group.len()
        )));
    }
    let seen = rows.first().map_or_else(Seen::default, |row| seen(row.4, row.5, &row.6));
    let outcomes = rows
        .into_iter()
        .map(|(stored, version, first, last, ..)| {
            if stored {
                Outcome::Stored(AppendResult {
                    stream_version: version.max(0) as u64,
                    first_position: first.max(0) as u64,
                    last_position: last.max(0) as u64,
                    deduplicated: false,
                })
            } else {
                Outcome::Conflict { actual: version.max(0) as u64 }
            }
        })
        .collect();
    Ok((outcomes, seen))
}

/// What the append functions say about visibility, as the horizon keeps it. Older running
/// transactions not known (`None`) are waited for through the horizon alone.
pub(crate) fn seen(visible_below: i64, xid: i64, older: &Option<Vec<i64>>) -> Seen {
    Seen {
        visible_below: visible_below.max(0) as u64,
        xid: xid.max(0) as u64,
        older: match older {
            Some(older) => older.iter().map(|x| (*x).max(0) as u64).collect(),
            None => vec![crate::horizon::UNKNOWN_OLDER],
        },
    }
}
