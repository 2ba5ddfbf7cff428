//! `allframe`: copy, verify, inspect and check AllFrame CQRS event stores, and run the demo.
//!
//! Every error is one line naming the store, what went wrong and what to do, with a
//! non-zero exit code: 1 when `verify` or `check` finds a problem, 2 for a usage error,
//! 3 when a store cannot be opened or read.

mod address;
#[allow(dead_code, unreachable_pub)]
#[path = "../../allframe/examples/bank.rs"]
mod bank;
mod commands;

use std::fmt;
use std::process::ExitCode;

use address::Address;

const HELP: &str = "allframe: copy, verify, inspect and check AllFrame CQRS event stores

usage: allframe <command> [options]

commands:
  copy FROM TO [--page N] [--no-snapshots]
      Copy every stream of FROM into TO, in global order, keeping versions, event ids,
      types, payloads, metadata and timestamps, then the latest snapshots. Resumable: run it
      again after an interruption and it goes on where it stopped, storing nothing twice.
  verify A B [--page N]
      Compare two stores stream by stream; print the first difference (exit 1) or `same`.
  inspect STORE [--stream ID] [--last N] [--streams N] [--json]
      Counts, sizes and durability of a store, its first streams, and with --stream the
      last N events (default 10) of one stream. --json prints one JSON object.
  check STORE
      Read every record; check checksums (the backend's), positions, contiguous versions
      and counts. Prints each problem with its file and offset where the backend knows it.
  demo [--backend allsource|memory] [--data DIR]
      Run the bank demo (AllSource in ./allframe-data by default).
  help
      This text.

stores:
  memory:                 a new, empty in-memory store (gone when the command ends)
  allsource:PATH          the embedded AllSource store in directory PATH
  rocksdb:PATH            a RocksDB store in directory PATH (build with --features cqrs-rocksdb)
  postgres://USER@HOST/DB[?schema=NAME]
                          a PostgreSQL database; the store lives in schema NAME (default allframe)

exit codes: 0 success, 1 verify/check found a problem, 2 usage error, 3 store error";

/// A failure, printed as one line.
#[derive(Debug)]
pub struct CliError {
    /// The store (or `usage`) the error is about.
    pub subject: String,
    /// What went wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// The exit code.
    pub code: u8,
}

impl CliError {
    /// An error about a store, with a hint.
    pub fn new(store: &Address, message: impl Into<String>, hint: impl Into<String>) -> Self {
        CliError { subject: store.to_string(), message: message.into(), hint: Some(hint.into()), code: 3 }
    }

    /// An error from a store's backend, with a hint that fits it.
    pub fn store(store: &Address, error: &allframe::Error) -> Self {
        use allframe::Error;
        let mut message = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        let hint = match error {
            Error::Locked { .. } => "another process has this store open; stop it first",
            Error::NotAStore { .. } => "point at a store directory, or at an empty or new one",
            Error::Corruption { .. } => "run `allframe check` on the store; restore the damaged file from a backup",
            Error::Io { .. } => "check the path and its permissions",
            Error::Conflict { .. } | Error::DuplicateEventId { .. } => {
                "the destination holds other events for this stream; copy into an empty store"
            }
            _ if error.is_transient() => "the store may be unreachable; try again",
            _ => "see the message above",
        };
        CliError { subject: store.to_string(), message, hint: Some(hint.into()), code: 3 }
    }

    /// A usage error.
    pub fn usage(message: impl Into<String>) -> Self {
        CliError { subject: "usage".into(), message: message.into(), hint: Some("see `allframe help`".into()), code: 2 }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "allframe: {}: {}", self.subject, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// Command-line arguments: positionals plus `--flag [value]` options.
#[derive(Debug, Default)]
pub struct Args {
    positional: Vec<String>,
    options: Vec<(String, Option<String>)>,
}

impl Args {
    fn parse(args: &[String], with_value: &[&str], switches: &[&str]) -> Result<Self, CliError> {
        let mut parsed = Args::default();
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            if let Some(name) = arg.strip_prefix("--") {
                let (name, inline) = match name.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_owned())),
                    None => (name, None),
                };
                if with_value.contains(&name) {
                    let value = inline.or_else(|| iter.next().cloned());
                    let value = value.ok_or_else(|| CliError::usage(format!("--{name} needs a value")))?;
                    parsed.options.push((name.to_owned(), Some(value)));
                } else if switches.contains(&name) {
                    parsed.options.push((name.to_owned(), None));
                } else {
                    return Err(CliError::usage(format!("unknown option --{name}")));
                }
            } else {
                parsed.positional.push(arg.clone());
            }
        }
        Ok(parsed)
    }

    /// The value of `--name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.options.iter().rev().find(|(n, _)| n == name).and_then(|(_, v)| v.as_deref())
    }

    /// Whether `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.options.iter().any(|(n, _)| n == name)
    }

    /// A numeric option with a default.
    pub fn number(&self, name: &str, default: usize) -> Result<usize, CliError> {
        match self.value(name) {
            None => Ok(default),
            Some(text) => text.parse().map_err(|_| CliError::usage(format!("--{name} wants a number, not `{text}`"))),
        }
    }

    /// Exactly `count` store addresses.
    pub fn addresses(&self, count: usize, what: &str) -> Result<Vec<Address>, CliError> {
        if self.positional.len() != count {
            return Err(CliError::usage(format!("expected {what}")));
        }
        self.positional.iter().map(|text| text.parse().map_err(CliError::usage)).collect()
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("allframe: cannot start the async runtime: {error}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(dispatch(&args)) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(error.code)
        }
    }
}

async fn dispatch(args: &[String]) -> Result<u8, CliError> {
    let Some((command, rest)) = args.split_first() else {
        eprintln!("{HELP}");
        return Err(CliError::usage("no command given"));
    };
    match command.as_str() {
        "copy" => commands::copy(&Args::parse(rest, &["page"], &["no-snapshots"])?).await,
        "verify" => commands::verify(&Args::parse(rest, &["page"], &[])?).await,
        "inspect" => commands::inspect(&Args::parse(rest, &["stream", "last", "streams"], &["json"])?).await,
        "check" => commands::check(&Args::parse(rest, &[], &[])?).await,
        "demo" => commands::demo(&Args::parse(rest, &["backend", "data"], &[])?).await,
        "help" | "--help" | "-h" => {
            println!("{HELP}");
            Ok(0)
        }
        other => Err(CliError::usage(format!("unknown command `{other}`"))),
    }
}
