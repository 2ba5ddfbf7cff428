//! Mapping sqlx errors to the core's [`Error`].

use allframe_cqrs_core::Error;

use crate::BACKEND_NAME;

/// SQLSTATE raised by `append_events` when the expected-version check fails.
pub(crate) const WRONG_EXPECTED_VERSION: &str = "AFC01";

/// SQLSTATEs with which PostgreSQL refuses a text as `jsonb`: invalid_text_representation
/// (bad JSON, a lone surrogate), untranslatable_character (`\u0000`, an escape the server
/// encoding cannot hold), numeric_value_out_of_range (a number beyond `numeric`, such as
/// `1e999999`), invalid_json_text, and program_limit_exceeded (a string or container over
/// `jsonb`'s size limits).
const PAYLOAD_REFUSED: &[&str] = &["22P02", "22P05", "22003", "22032", "54000"];

/// Whether `error` is one with which PostgreSQL refuses a `jsonb` value. The same codes can
/// come from elsewhere in a statement, so callers confirm that a payload is the cause.
pub(crate) fn payload_refused(error: &sqlx::Error) -> bool {
    sqlstate(error).is_some_and(|code| PAYLOAD_REFUSED.contains(&code.as_str()))
}

/// A configuration mistake (bad URL, bad schema name): found before anything is sent.
pub(crate) fn config(message: impl Into<String>) -> Error {
    Error::Configuration { reason: format!("{BACKEND_NAME}: {}", message.into()) }
}

/// Whether `error` is a unique-key violation (sqlx's own error kind, not a SQLSTATE string).
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// The SQLSTATE of a database error.
pub(crate) fn sqlstate(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) => db.code().map(|code| code.into_owned()),
        _ => None,
    }
}

/// The constraint a database error names.
pub(crate) fn constraint(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}

/// The DETAIL field of a PostgreSQL error.
pub(crate) fn detail(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(db) => {
            db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().and_then(|pg| pg.detail())
        }
        _ => None,
    }
}

/// Whether the error means the connection is gone (or the server is going away), so the same
/// operation on another connection may succeed.
pub(crate) fn connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(_) => matches!(
            sqlstate(error).as_deref(),
            Some(code) if code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        ),
        _ => false,
    }
}

/// Whether the same operation may succeed at once on another try: the connection was lost, or
/// a hot standby cancelled a read that conflicted with the replay of the primary's changes
/// (SQLSTATE 40001; appends, in READ COMMITTED, never get it).
pub(crate) fn retryable(error: &sqlx::Error) -> bool {
    connection_lost(error) || sqlstate(error).as_deref() == Some("40001")
}

/// Whether retrying later may succeed.
fn transient(error: &sqlx::Error) -> bool {
    connection_lost(error)
        || matches!(error, sqlx::Error::PoolTimedOut)
        || matches!(sqlstate(error).as_deref(), Some("40001" | "40P01" | "53300" | "55P03" | "53400"))
}

/// Maps a sqlx error met during `operation`.
pub(crate) fn map(operation: &'static str, error: sqlx::Error) -> Error {
    match &error {
        sqlx::Error::PoolTimedOut => {
            return Error::Timeout { backend: BACKEND_NAME, operation: "acquiring a connection from the pool" };
        }
        sqlx::Error::PoolClosed => return Error::Closed { backend: BACKEND_NAME, reason: Some("pool closed".into()) },
        _ => {}
    }
    if sqlstate(&error).as_deref() == Some("57014") {
        return Error::Timeout { backend: BACKEND_NAME, operation };
    }
    let transient = transient(&error);
    Error::backend(BACKEND_NAME, transient, error)
}

/// Maps a migration error.
pub(crate) fn migrate(error: sqlx::migrate::MigrateError) -> Error {
    match error {
        sqlx::migrate::MigrateError::Execute(inner) | sqlx::migrate::MigrateError::ExecuteMigration(inner, _) => {
            map("running migrations", inner)
        }
        other => Error::backend(BACKEND_NAME, false, other),
    }
}
