//! What only the PostgreSQL backend knows, reported through the `metrics` facade (feature
//! `metrics`): the appends of each group-commit transaction, each statement's time by name,
//! and the primary pool's connections. The names are the core's table
//! ([`metric_names`](allframe_cqrs_core::metric_names)); the store's operations are counted
//! once, by the core's `Metered` wrapper, not here.
//!
//! Every function compiles to nothing without the feature, so the backend calls them
//! unconditionally. Labels are literals (no allocation per call); the recorder looks each
//! metric up per call, which costs far less than the round trip it describes.

use std::time::Duration;

#[cfg(feature = "metrics")]
use allframe_cqrs_core::metric_names as names;
use sqlx::postgres::PgPool;

use crate::statements::Statement;

/// One group-commit transaction stored `appends` appends.
pub(crate) fn group_committed(appends: usize) {
    #[cfg(feature = "metrics")]
    ::metrics::histogram!(names::COMMIT_GROUP_APPENDS, "backend" => "postgres").record(appends as f64);
    #[cfg(not(feature = "metrics"))]
    let _ = appends;
}

/// `statement` answered (or failed, or was cancelled) after `elapsed`, waiting for a
/// connection included.
pub(crate) fn statement_finished(statement: Statement, elapsed: Duration) {
    #[cfg(feature = "metrics")]
    {
        // One literal label per arm: the key is static, nothing is allocated.
        macro_rules! record {
            ($($variant:ident => $name:literal),* $(,)?) => {
                match statement {
                    $(Statement::$variant => ::metrics::histogram!(names::POSTGRES_STATEMENT_DURATION, "statement" => $name),)*
                }
            };
        }
        let histogram = record! {
            Append => "append",
            AppendGroup => "append_group",
            ReadStream => "read_stream",
            ReadAll => "read_all",
            StreamVersion => "stream_version",
            HeadPosition => "head_position",
            FindEvent => "find_event",
            ListStreams => "list_streams",
            SaveSnapshot => "save_snapshot",
            GetSnapshot => "get_snapshot",
            LoadCheckpoint => "load_checkpoint",
            SaveCheckpoint => "save_checkpoint",
            CheckPayload => "check_payload",
            Flush => "flush",
            Stats => "stats",
            HorizonStatus => "horizon_status",
        };
        histogram.record(elapsed.as_secs_f64());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (statement, elapsed);
}

/// Sets the pool gauges from `pool`'s counts (atomic loads in sqlx): connections in use and
/// idle, and the most it opens.
pub(crate) fn pool_observed(pool: &PgPool) {
    #[cfg(feature = "metrics")]
    {
        let idle = pool.num_idle() as f64;
        let size = f64::from(pool.size());
        ::metrics::gauge!(names::POSTGRES_POOL_CONNECTIONS, "state" => "in_use").set((size - idle).max(0.0));
        ::metrics::gauge!(names::POSTGRES_POOL_CONNECTIONS, "state" => "idle").set(idle);
        ::metrics::gauge!(names::POSTGRES_POOL_MAX_CONNECTIONS).set(f64::from(pool.options().get_max_connections()));
    }
    #[cfg(not(feature = "metrics"))]
    let _ = pool;
}
