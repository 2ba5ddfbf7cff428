//! `allframe sagas list [SAGA] | show SAGA ID | resume SAGA ID`: saga instances as their streams
//! record them, read from the store alone (no definitions needed), and an operator's resume of
//! one stuck in a compensation (the application's orchestrator then tries it again).

use allframe::Timestamp;
use allframe::cqrs::SagaError;
use allframe::cqrs::sagas::{self, Record};

use crate::CliError;
use crate::address::{self, Address, Open};

/// Arguments of `allframe sagas`.
#[derive(Debug, clap::Args)]
pub struct SagasArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
    /// The store (default: the demo's, `allsource:./allframe-data`).
    #[arg(long, value_name = "STORE", global = true)]
    pub store: Option<Address>,
}

/// What `allframe sagas` does.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Every saga instance (of one saga: SAGA) with its state, steps done and last record.
    List {
        /// Only this saga's instances.
        saga: Option<String>,
    },
    /// One instance's history, record by record.
    Show {
        /// The saga's name.
        saga: String,
        /// The instance's id.
        id: String,
    },
    /// Resume an instance stuck in a compensation: its orchestrator tries it again.
    Resume {
        /// The saga's name.
        saga: String,
        /// The instance's id.
        id: String,
    },
}

/// `allframe sagas ...`.
pub async fn sagas(args: &SagasArgs) -> Result<u8, CliError> {
    let store = crate::projections::store_or_demo(args.store.as_ref())?;
    let backend = address::open(&store, Open::Existing).await?;
    let error = |error: SagaError| match error {
        SagaError::Store(error) => CliError::store(&store, &error),
        SagaError::NotFound { .. } => CliError::new(&store, error.to_string(), "list them with `allframe sagas list`"),
        SagaError::NotStuck { .. } => CliError::new(
            &store,
            error.to_string(),
            "only an instance whose compensation (or, for a choreography, reaction) failed every attempt waits for a resume",
        ),
        other => CliError::new(&store, other.to_string(), "saga instances are the streams `$allframe-saga:SAGA:ID`"),
    };
    match &args.action {
        Action::List { saga } => {
            let instances = sagas::list(&*backend, saga.as_deref()).await.map_err(error)?;
            if instances.is_empty() {
                println!("no saga instances in {store}");
                return Ok(0);
            }
            println!("{:<24} {:<20} {:<12} {:>5}  LAST", "SAGA", "ID", "STATE", "DONE");
            for instance in &instances {
                let progress = &instance.progress;
                let last = progress.history.last().map_or("", Record::event_type);
                // Steps done, or a choreography's reactions.
                let done = match progress.is_choreography() {
                    true => progress.history.iter().filter(|record| matches!(record, Record::Reacted { .. })).count(),
                    false => progress.outputs.len(),
                };
                println!(
                    "{:<24} {:<20} {:<12} {:>5}  {}",
                    instance.saga,
                    instance.id,
                    progress.state().label(),
                    done,
                    last.trim_start_matches("allframe.Saga")
                );
            }
            println!("{} instances", instances.len());
            Ok(0)
        }
        Action::Show { saga, id } => {
            let progress = sagas::load(&*backend, saga, id).await.map_err(error)?;
            println!("{saga} {id}: {}", describe(&progress));
            println!("input: {}", progress.input);
            if progress.is_choreography() {
                println!("state: {}", progress.data);
                for (timer, when) in progress.timers() {
                    println!("timer `{timer}` at {}", Timestamp::from_micros(*when).to_rfc3339());
                }
            }
            for (version, record) in (1..).zip(&progress.history) {
                println!("{version:>4}  {}", line(record));
            }
            Ok(0)
        }
        Action::Resume { saga, id } => {
            sagas::resume(&*backend, saga, id).await.map_err(error)?;
            println!("{saga} {id}: resumed; its orchestrator tries the failed compensation or reaction again");
            Ok(0)
        }
    }
}

fn describe(progress: &allframe::cqrs::sagas::Progress) -> String {
    use allframe::cqrs::SagaState;
    match &progress.state() {
        SagaState::Waiting { until } => format!("waiting until {}", Timestamp::from_micros(*until).to_rfc3339()),
        SagaState::Stuck { step, error } if progress.is_choreography() => {
            format!("stuck reacting to {step}: {error} (resume it when fixed)")
        }
        SagaState::Stuck { step, error } => format!("stuck undoing `{step}`: {error} (resume it when fixed)"),
        SagaState::RolledBack { step, reason } => format!("rolled back at `{step}`: {reason}"),
        other => other.label().to_owned(),
    }
}

fn at(micros: &Option<i64>) -> String {
    micros.map_or(String::new(), |micros| format!(", until {}", Timestamp::from_micros(micros).to_rfc3339()))
}

/// One record, as a line of `show`.
fn line(record: &Record) -> String {
    match record {
        Record::Started { .. } => "started".into(),
        Record::StepStarted { step, attempt, deadline } => format!("{step}: attempt {attempt} began{}", at(deadline)),
        Record::StepCompleted { step, output } => format!("{step}: done, {output}"),
        Record::StepFailed { step, attempt, error, retry_at: Some(when) } => {
            format!(
                "{step}: attempt {attempt} failed ({error}); again at {}",
                Timestamp::from_micros(*when).to_rfc3339()
            )
        }
        Record::StepFailed { step, attempt, error, retry_at: None } => {
            format!("{step}: attempt {attempt} failed ({error})")
        }
        Record::StepTimedOut { step, attempt } => format!("{step}: attempt {attempt} timed out"),
        Record::CompensationStarted { step, attempt, deadline } => {
            format!("{step}: undoing, attempt {attempt}{}", at(deadline))
        }
        Record::Compensated { step } => format!("{step}: undone"),
        Record::CompensationFailed { step, attempt, error, retry_at } => match retry_at {
            Some(when) => format!(
                "{step}: undoing failed, attempt {attempt} ({error}); again at {}",
                Timestamp::from_micros(*when).to_rfc3339()
            ),
            None => format!("{step}: undoing failed, attempt {attempt} ({error}); stuck"),
        },
        Record::Resumed => "resumed by an operator".into(),
        Record::Sleeping { step, until } => format!("{step}: asleep{}", at(&Some(*until))),
        Record::Received { trigger } => format!("received {trigger}"),
        Record::Reacting { trigger, attempt } => format!("reacting to {trigger}, attempt {attempt}"),
        Record::Reacted { trigger, state, timers } => {
            let timers: Vec<&str> = timers.keys().map(String::as_str).collect();
            format!("reacted to {trigger}: state {state}, timers {timers:?}")
        }
        Record::ReactionFailed { trigger, attempt, error, retry_at } => match retry_at {
            Some(when) => format!(
                "reacting to {trigger} failed, attempt {attempt} ({error}); again at {}",
                Timestamp::from_micros(*when).to_rfc3339()
            ),
            None => format!("reacting to {trigger} failed, attempt {attempt} ({error}); stuck"),
        },
        Record::Completed => "completed".into(),
        Record::RolledBack { step, reason } => format!("rolled back at `{step}`: {reason}"),
    }
}
