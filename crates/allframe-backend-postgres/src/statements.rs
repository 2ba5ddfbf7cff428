//! The statements the backend runs, each under a short fixed name (the bounded `statement`
//! label of `allframe_postgres_statement_duration_seconds`), and how many of them are running:
//! more running than the pool has connections means some wait for one (the health check's
//! `postgres.pool` finding; sqlx does not count its waiters).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use sqlx::postgres::PgPool;

/// One kind of statement, by what it is for (its label value is in `metrics::statement_finished`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Statement {
    /// `append_events`: one append alone (or a group of one).
    Append,
    /// `append_group`: one group commit of several appends.
    AppendGroup,
    /// The events of one stream.
    ReadStream,
    /// The events of the log.
    ReadAll,
    /// A stream's version.
    StreamVersion,
    /// The readable head of the log.
    HeadPosition,
    /// Where event ids are stored (`find_event`, idempotent retries).
    FindEvent,
    /// A page of stream ids.
    ListStreams,
    /// A snapshot save.
    SaveSnapshot,
    /// A snapshot read.
    GetSnapshot,
    /// A checkpoint read.
    LoadCheckpoint,
    /// A checkpoint's compare-and-set.
    SaveCheckpoint,
    /// Which payload of a refused append the server refuses.
    CheckPayload,
    /// The synchronous commit of `flush`.
    Flush,
    /// The figures of `stats`.
    Stats,
    /// What holds readers back.
    HorizonStatus,
}

impl Statement {
    /// Whether a read replica, when one is configured, runs it (the reads of the log).
    pub(crate) fn served_by_replica(self) -> bool {
        matches!(
            self,
            Statement::ReadStream
                | Statement::ReadAll
                | Statement::HeadPosition
                | Statement::ListStreams
                | Statement::GetSnapshot
        )
    }
}

/// The statements running now, shared by the backend and its group-commit task.
#[derive(Debug, Default)]
pub(crate) struct Statements {
    /// Those on the primary's pool.
    running: AtomicUsize,
}

impl Statements {
    /// Marks `statement` as running until the returned guard is dropped (when it has
    /// answered, failed or was cancelled); then its time is recorded, and the gauges of
    /// `primary` (the primary's pool) are brought up to date. `on_primary`: whether it runs on
    /// that pool (not on a read replica's).
    pub(crate) fn start<'a>(&'a self, statement: Statement, primary: &'a PgPool, on_primary: bool) -> Running<'a> {
        if on_primary {
            self.running.fetch_add(1, Ordering::SeqCst);
        }
        Running { statements: self, statement, pool: primary, on_primary, started: Instant::now() }
    }

    /// How many statements on the primary's pool are running or waiting for a connection.
    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }
}

/// A statement running; see [`Statements::start`].
pub(crate) struct Running<'a> {
    statements: &'a Statements,
    statement: Statement,
    pool: &'a PgPool,
    on_primary: bool,
    started: Instant,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.on_primary {
            self.statements.running.fetch_sub(1, Ordering::SeqCst);
        }
        crate::metrics::statement_finished(self.statement, self.started.elapsed());
        crate::metrics::pool_observed(self.pool);
    }
}
