//! `allframe`: copy, verify, inspect and check AllFrame CQRS event stores, and run the demo.
//!
//! Every error is one line naming the store, what went wrong and what to do, with a
//! non-zero exit code: 1 when `verify` or `check` finds a problem, 2 for a usage error,
//! 3 when a store cannot be opened or read. Arguments are parsed by `clap` (help per
//! subcommand, suggestions for typos, shell completions with `allframe completions SHELL`).

mod address;
mod bank;
mod commands;
mod load;
mod projections;
mod sagas;
mod schema;
mod stats;

use std::fmt;
use std::process::ExitCode;

use address::Address;
use clap::{CommandFactory, Parser, Subcommand};

/// What `allframe help` prints after the list of commands.
const AFTER_HELP: &str = "stores:
  memory:                 a new, empty in-memory store (gone when the command ends)
  allsource:PATH          the embedded AllSource store in directory PATH
  rocksdb:PATH            a RocksDB store in directory PATH (build with --features cqrs-rocksdb)
  postgres://USER@HOST/DB[?schema=NAME]
                          a PostgreSQL database; the store lives in schema NAME (default allframe)

exit codes: 0 success, 1 verify/check found a problem, 2 usage error, 3 store error

`allframe help COMMAND` describes one command.";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "allframe",
    version,
    about = "Copy, verify, inspect and check AllFrame CQRS event stores, run the demo and its projections.",
    after_help = AFTER_HELP,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Copy every stream of FROM into TO, resumably.
    ///
    /// Events go in global order, keeping versions, event ids, types, payloads, metadata and
    /// timestamps, then the latest snapshots. Run it again after an interruption and it goes
    /// on where it stopped, storing nothing twice. A destination stream that holds other
    /// events is refused.
    Copy(commands::CopyArgs),
    /// Compare two stores; print the first difference (exit 1) or `same`.
    ///
    /// Streams are compared one by one: ids, versions, event ids, types, payloads, metadata
    /// and latest snapshots. Positions are not compared: each backend assigns its own.
    Verify(commands::VerifyArgs),
    /// Counts, sizes and durability of a store, and the last events of a stream.
    ///
    /// Lists the first streams by id; with --stream, the last events of that stream.
    Inspect(commands::InspectArgs),
    /// Read every record and check every invariant.
    ///
    /// Checksums (the backend's), positions, contiguous versions, counts and stream heads; and,
    /// when the store's schema registry records the application's chain of upcasters, events
    /// that chain cannot read.
    /// Prints each problem with its file and offset where the backend knows it (exit 1).
    Check(commands::CheckArgs),
    /// Run the bank demo (AllSource in ./allframe-data by default).
    Demo(commands::DemoArgs),
    /// The demo's projections on a store: list, status, rebuild NAME (with a progress bar).
    Projections(projections::ProjectionsArgs),
    /// The store's schema registry: list, show TYPE, check (every event against its schema and
    /// the recorded chain of upcasters).
    Schema(schema::SchemaArgs),
    /// Saga instances on a store: list (of one saga or all), show SAGA ID, resume SAGA ID (one stuck in a
    /// compensation).
    Sagas(sagas::SagasArgs),
    /// A store's figures and health on one screen: --json for scripts, --watch to refresh, --serve
    /// ADDRESS for Prometheus (/metrics) and load balancers (/health).
    ///
    /// Exits 1 when the store's health is `failed`. An embedded store (AllSource, RocksDB) is
    /// locked by the process that has it open: serve its metrics from that process instead.
    Stats(stats::StatsArgs),
    /// Print a completion script for a shell (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

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
            Error::Configuration { .. } => "correct the setting named above",
            _ if error.is_transient() => "the store may be unreachable; try again",
            _ => "see the message above",
        };
        CliError { subject: store.to_string(), message, hint: Some(hint.into()), code: 3 }
    }

    /// A usage error.
    pub fn usage(message: impl Into<String>) -> Self {
        CliError { subject: "usage".into(), message: message.into(), hint: Some("see `allframe help`".into()), code: 2 }
    }

    /// A parse error from clap, as one usage line (clap's own message and tip, without its
    /// usage block).
    fn from_clap(error: &clap::Error) -> Self {
        let rendered = error.render().to_string();
        let mut message = String::new();
        let lines = rendered.lines().map(str::trim);
        for line in
            lines.filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information"))
        {
            let line = line.strip_prefix("error: ").unwrap_or(line);
            if !message.is_empty() {
                message.push_str(if message.ends_with(':') { " " } else { "; " });
            }
            message.push_str(line);
        }
        CliError::usage(message)
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

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            use clap::error::ErrorKind;
            return match error.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    print!("{}", error.render());
                    ExitCode::SUCCESS
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    eprint!("{}", error.render());
                    eprintln!("{}", CliError::usage("no command given"));
                    ExitCode::from(2)
                }
                _ => {
                    eprintln!("{}", CliError::from_clap(&error));
                    ExitCode::from(2)
                }
            };
        }
    };
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "allframe", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("allframe: cannot start the async runtime: {error}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(error.code)
        }
    }
}

async fn dispatch(command: Command) -> Result<u8, CliError> {
    match command {
        Command::Copy(args) => commands::copy(&args).await,
        Command::Verify(args) => commands::verify(&args).await,
        Command::Inspect(args) => commands::inspect(&args).await,
        Command::Check(args) => commands::check(&args).await,
        Command::Demo(args) => commands::demo(&args).await,
        Command::Projections(args) => projections::projections(&args).await,
        Command::Schema(args) => schema::schema(&args).await,
        Command::Sagas(args) => sagas::sagas(&args).await,
        Command::Stats(args) => stats::stats(&args).await,
        Command::Completions { .. } => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own consistency checks of the command definition.
    #[test]
    fn command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
