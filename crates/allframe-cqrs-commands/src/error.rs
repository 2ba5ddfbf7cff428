//! The errors of the command bus: one [`DispatchError`] for everything a dispatch can meet,
//! with a stable machine code and an HTTP status each, [`ValidationErrors`] for field-level
//! problems, and [`RegistrationError`] for a bus wired wrongly at start-up.

use std::fmt;

use serde::Serialize;
use serde::ser::SerializeStruct;

use crate::command::DomainError;

/// One field's problem: which field, a stable code, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field's path (`owner`, `lines.2.quantity`; garde's own notation for its rules);
    /// empty for the command as a whole.
    pub field: String,
    /// A stable code: `invalid` (a garde rule), `schema` (the JSON Schema), `type` (a JSON
    /// body that does not decode), or the application's own.
    pub code: String,
    /// What is wrong.
    pub message: String,
}

/// Every field-level problem of a command, found before any state was loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    /// No problems.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a problem.
    pub fn push(&mut self, field: impl Into<String>, code: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { field: field.into(), code: code.into(), message: message.into() });
    }

    /// One problem.
    pub fn single(field: impl Into<String>, code: impl Into<String>, message: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.push(field, code, message);
        errors
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when there is none.
    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            if error.field.is_empty() {
                write!(f, "{}", error.message)?;
            } else {
                write!(f, "{}: {}", error.field, error.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// garde's report as field errors (`#[command(validate)]`).
#[cfg(feature = "validation")]
impl From<garde::Report> for ValidationErrors {
    fn from(report: garde::Report) -> Self {
        ValidationErrors(
            report
                .iter()
                .map(|(path, error)| FieldError {
                    field: path.to_string(),
                    code: "invalid".to_owned(),
                    message: error.message().to_string(),
                })
                .collect(),
        )
    }
}

/// Everything a dispatch can fail with. `E` is the command's own refusal type
/// ([`Command::Error`](crate::Command::Error)); by-name JSON dispatch uses `serde_json::Value`.
///
/// Each variant has a stable [`code`](Self::code) and an [`http_status`](Self::http_status),
/// and the whole error serializes as `{"code", "status", "message", "details"}`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError<E> {
    /// The command is malformed; nothing was loaded or written.
    #[error("invalid command {command}: {errors}")]
    Invalid {
        /// The command's name.
        command: &'static str,
        /// Every field-level problem.
        errors: ValidationErrors,
    },
    /// The handler refused the command (a business rule); nothing was written.
    #[error("command {command} refused: {error}")]
    Rejected {
        /// The command's name.
        command: &'static str,
        /// The handler's own error.
        error: E,
    },
    /// Other writers kept changing the stream: the command was decided `attempts` times and
    /// lost each race; nothing was written.
    #[error("command {command} on {stream} lost {attempts} races with other writers")]
    Conflict {
        /// The command's name.
        command: &'static str,
        /// The contended stream.
        stream: String,
        /// How many times it was decided.
        attempts: u32,
    },
    /// The idempotency key was already used by a different command (another name or stream;
    /// the payload is not compared); nothing ran.
    #[error("idempotency key `{key}` was already used by another command ({first})")]
    DuplicateCommand {
        /// The key.
        key: String,
        /// What the first command with this key was (`Name on stream`).
        first: String,
    },
    /// No command of this name is registered (by-name dispatch).
    #[error("unknown command `{name}`")]
    UnknownCommand {
        /// The name asked for.
        name: String,
    },
    /// The command type is known but no handler is registered for it.
    #[error("no handler is registered for command {command}")]
    NoHandler {
        /// The command's name.
        command: &'static str,
    },
    /// The store failed (its own error says whether a retry may succeed).
    #[error("store error: {0}")]
    Store(#[from] allframe_cqrs_core::Error),
}

impl<E> DispatchError<E> {
    /// A stable, machine-readable code for the error.
    pub fn code(&self) -> &'static str
    where
        E: ErrorCode,
    {
        match self {
            DispatchError::Invalid { .. } => "invalid_command",
            DispatchError::Rejected { error, .. } => error.error_code(),
            DispatchError::Conflict { .. } => "conflict",
            DispatchError::DuplicateCommand { .. } => "duplicate_command",
            DispatchError::UnknownCommand { .. } => "unknown_command",
            DispatchError::NoHandler { .. } => "no_handler",
            DispatchError::Store(error) if error.is_transient() => "store_unavailable",
            DispatchError::Store(_) => "store_error",
        }
    }

    /// The HTTP status an API answers with.
    pub fn http_status(&self) -> u16
    where
        E: ErrorCode,
    {
        match self {
            DispatchError::Invalid { .. } => 400,
            DispatchError::Rejected { error, .. } => error.error_status(),
            DispatchError::Conflict { .. } | DispatchError::DuplicateCommand { .. } => 409,
            DispatchError::UnknownCommand { .. } => 404,
            DispatchError::NoHandler { .. } => 500,
            DispatchError::Store(error) if error.is_transient() => 503,
            DispatchError::Store(_) => 500,
        }
    }

    /// The same error with the refusal mapped by `f` (to erase it, for example).
    pub fn map_rejection<F, T>(self, f: F) -> DispatchError<T>
    where
        F: FnOnce(E) -> T,
    {
        match self {
            DispatchError::Invalid { command, errors } => DispatchError::Invalid { command, errors },
            DispatchError::Rejected { command, error } => DispatchError::Rejected { command, error: f(error) },
            DispatchError::Conflict { command, stream, attempts } => {
                DispatchError::Conflict { command, stream, attempts }
            }
            DispatchError::DuplicateCommand { key, first } => DispatchError::DuplicateCommand { key, first },
            DispatchError::UnknownCommand { name } => DispatchError::UnknownCommand { name },
            DispatchError::NoHandler { command } => DispatchError::NoHandler { command },
            DispatchError::Store(error) => DispatchError::Store(error),
        }
    }
}

/// The code and status of a refusal inside a [`DispatchError`]: every [`DomainError`], and
/// the erased refusal of by-name dispatch ([`ErasedRejection`]).
pub trait ErrorCode {
    /// See [`DomainError::code`].
    fn error_code(&self) -> &'static str;
    /// See [`DomainError::http_status`].
    fn error_status(&self) -> u16;
}

impl<E: DomainError> ErrorCode for E {
    fn error_code(&self) -> &'static str {
        self.code()
    }

    fn error_status(&self) -> u16 {
        self.http_status()
    }
}

/// A refusal whose type was erased by by-name dispatch: its code, status, message and
/// serialized form.
///
/// It serializes as the refusal did (its `details`), so the body of a by-name dispatch's
/// error is the typed dispatch's.
#[derive(Debug, Clone, PartialEq)]
pub struct ErasedRejection {
    /// [`DomainError::code`].
    pub code: &'static str,
    /// [`DomainError::http_status`].
    pub status: u16,
    /// The refusal's message.
    pub message: String,
    /// The refusal, serialized.
    pub details: serde_json::Value,
}

impl ErasedRejection {
    /// Erases `error`.
    pub fn new<E: DomainError>(error: &E) -> Self {
        ErasedRejection {
            code: error.code(),
            status: error.http_status(),
            message: error.to_string(),
            details: serde_json::to_value(error).unwrap_or(serde_json::Value::Null),
        }
    }
}

impl fmt::Display for ErasedRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ErasedRejection {}

impl Serialize for ErasedRejection {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.details.serialize(serializer)
    }
}

impl DomainError for ErasedRejection {
    fn code(&self) -> &'static str {
        self.code
    }

    fn http_status(&self) -> u16 {
        self.status
    }
}

/// `{"code", "status", "message", "details"}`: what an API sends back.
impl<E: ErrorCode + Serialize + fmt::Display> Serialize for DispatchError<E> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("DispatchError", 4)?;
        out.serialize_field("code", self.code())?;
        out.serialize_field("status", &self.http_status())?;
        out.serialize_field("message", &self.to_string())?;
        match self {
            DispatchError::Invalid { errors, .. } => out.serialize_field("details", errors)?,
            DispatchError::Rejected { error, .. } => out.serialize_field("details", error)?,
            DispatchError::Conflict { stream, attempts, .. } => {
                out.serialize_field("details", &serde_json::json!({ "stream": stream, "attempts": attempts }))?
            }
            _ => out.serialize_field("details", &serde_json::Value::Null)?,
        }
        out.end()
    }
}

/// A bus wired wrongly, found when it is built (never a panic at dispatch).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    /// Two handlers for one command type.
    #[error("command {command} has two handlers ({first} and {second}); a command has exactly one")]
    DuplicateHandler {
        /// The command's name.
        command: &'static str,
        /// Where the first was registered.
        first: String,
        /// Where the second was registered.
        second: String,
    },
    /// Two command types with one name (by-name dispatch could not tell them apart).
    #[error("two command types are named `{name}` ({first} and {second})")]
    DuplicateName {
        /// The name.
        name: &'static str,
        /// The first type.
        first: &'static str,
        /// The second type.
        second: &'static str,
    },
    /// A handler takes a shared service the bus was not given.
    #[error("a handler of {command} takes State<{type_name}>, which the bus was not given (CommandBusBuilder::state)")]
    MissingState {
        /// The command's name.
        command: &'static str,
        /// The missing type.
        type_name: &'static str,
    },
    /// Two query handlers for one query type.
    #[error("query {query} has two handlers")]
    DuplicateQueryHandler {
        /// The query's name.
        query: &'static str,
    },
}
