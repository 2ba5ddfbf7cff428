//! Driving one instance: read its stream, decide the next thing ([`Progress::next`]), record
//! the intent, do it, record the result, until it is finished, stuck, or waits. Every record is
//! appended expecting the version read, so a second runner (or an operator's resume) is noticed
//! as a conflict and the driver reads again instead of acting on what it saw.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use allframe_cqrs_core::{Error, ExpectedVersion};
use futures_util::FutureExt;
use serde_json::Value;

use crate::context::{Direction, StepContext, StepError};
use crate::definition::{Action, SagaDefinition, Step};
use crate::error::SagaError;
use crate::orchestrator::Inner;
use crate::progress::{Next, Progress};
use crate::record::{Record, now_micros, stream_of};

/// How an attempt ended.
enum Ended {
    Done(Value),
    Error(StepError),
    TimedOut,
}

/// Appends `record` at `version + 1` of the instance's stream: `Ok(false)` when someone else
/// wrote there first (read again and decide again).
async fn record(inner: &Inner, stream: &str, version: u64, record: &Record) -> Result<bool, SagaError> {
    let expected = if version == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(version) };
    match inner.backend.append(stream, expected, vec![record.to_event()]).await {
        Ok(_) => Ok(true),
        // Another writer (a second runner, an operator's resume): read again.
        Err(Error::Conflict { .. }) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Runs `action` with `context` until `deadline` (µs since the epoch), a panic counting as a
/// failure.
async fn attempt(action: &Action, context: StepContext, deadline: Option<i64>) -> Ended {
    let run = AssertUnwindSafe(action(context)).catch_unwind();
    let outcome = match deadline {
        Some(deadline) => {
            let left = Duration::from_micros(deadline.saturating_sub(now_micros()).max(0) as u64);
            match tokio::time::timeout(left, run).await {
                Ok(outcome) => outcome,
                Err(_) => return Ended::TimedOut,
            }
        }
        None => run.await,
    };
    match outcome {
        Ok(Ok(output)) => Ended::Done(output),
        Ok(Err(error)) => Ended::Error(error),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Ended::Error(StepError::failed(format!("the step panicked: {message}")))
        }
    }
}

/// Drives instance `id` of `saga` until it is finished, stuck, or the orchestrator stops.
pub(crate) async fn drive(inner: Arc<Inner>, saga: SagaDefinition, id: String) {
    let mut stopped = inner.stopped.subscribe();
    loop {
        if *stopped.borrow() {
            return;
        }
        match step_once(&inner, &saga, &id).await {
            Ok(Some(until)) => {
                let wait = Duration::from_micros(until.saturating_sub(now_micros()).max(0) as u64);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stopped.changed() => return,
                }
            }
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(saga = %saga.name, id, %error, "driving a saga instance failed; trying again");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = stopped.changed() => return,
                }
            }
        }
    }
}

/// Does the next thing: `Some(until)` to wait until then (or to go on at once: `until` now),
/// `None` when there is nothing more to do (finished or stuck).
async fn step_once(inner: &Inner, saga: &SagaDefinition, id: &str) -> Result<Option<i64>, SagaError> {
    let progress = match crate::inspect::load(&*inner.backend, &saga.name, id).await {
        Ok(progress) => progress,
        Err(SagaError::NotFound { .. }) => return Ok(None),
        Err(error) => return Err(error),
    };
    let stream = stream_of(&saga.name, id);
    let now = now_micros();
    let version = progress.version;
    let step_named = |name: &str| saga.step(name).ok_or_else(|| unknown_step(&stream, version, name));
    match progress.next(saga, now) {
        Next::Finished | Next::Stuck => Ok(None),
        Next::Wait { until } => Ok(Some(until)),
        Next::Complete => record(inner, &stream, version, &Record::Completed).await.map(|_| Some(now)),
        Next::RollBack { step, reason } => {
            record(inner, &stream, version, &Record::RolledBack { step, reason }).await.map(|_| Some(now))
        }
        Next::TimeOut { step, attempt } => {
            record(inner, &stream, version, &Record::StepTimedOut { step, attempt }).await.map(|_| Some(now))
        }
        Next::Run { step, attempt, deadline, begun } => {
            let definition = step_named(&step)?;
            let (deadline, version) = match begun {
                true => (deadline, version),
                false => {
                    let deadline = definition.timeout.map(|timeout| now + timeout.as_micros() as i64);
                    let started = Record::StepStarted { step: step.clone(), attempt, deadline };
                    if !record(inner, &stream, version, &started).await? {
                        return Ok(Some(now));
                    }
                    (deadline, version + 1)
                }
            };
            let context = context(inner, saga, id, definition, Direction::Do, attempt, &progress);
            let ended = {
                let _permit = inner.permits.acquire().await;
                self::attempt(&definition.action, context, deadline).await
            };
            let result = match ended {
                Ended::Done(output) => Record::StepCompleted { step, output },
                Ended::TimedOut => Record::StepTimedOut { step, attempt },
                Ended::Error(error) => {
                    let retry = matches!(error, StepError::Transient(_)) && attempt < definition.retry.attempts;
                    let retry_at =
                        retry.then(|| now_micros() + definition.retry.wait_after(attempt).as_micros() as i64);
                    Record::StepFailed { step, attempt, error: error.to_string(), retry_at }
                }
            };
            record(inner, &stream, version, &result).await.map(|_| Some(now))
        }
        Next::Undo { step, attempt, deadline, begun } => {
            let definition = step_named(&step)?;
            let Some(compensation) = &definition.compensation else {
                return Err(unknown_step(&stream, version, &step));
            };
            let (deadline, version) = match begun {
                true => (deadline, version),
                false => {
                    let deadline = definition.timeout.map(|timeout| now + timeout.as_micros() as i64);
                    let started = Record::CompensationStarted { step: step.clone(), attempt, deadline };
                    if !record(inner, &stream, version, &started).await? {
                        return Ok(Some(now));
                    }
                    (deadline, version + 1)
                }
            };
            let context = context(inner, saga, id, definition, Direction::Undo, attempt, &progress);
            let ended = {
                let _permit = inner.permits.acquire().await;
                self::attempt(compensation, context, deadline).await
            };
            let result = match ended {
                Ended::Done(_) => Record::Compensated { step },
                ended => {
                    // Whatever the failure, a compensation is tried again, then waits for an operator.
                    let error = match ended {
                        Ended::Error(error) => error.to_string(),
                        _ => format!("attempt {attempt} timed out"),
                    };
                    let retry = definition.compensation_retry;
                    let retry_at =
                        (attempt < retry.attempts).then(|| now_micros() + retry.wait_after(attempt).as_micros() as i64);
                    if retry_at.is_none() {
                        tracing::error!(saga = %saga.name, id, step, %error, "a compensation failed every attempt; the instance waits for an operator (resume)");
                    }
                    Record::CompensationFailed { step, attempt, error, retry_at }
                }
            };
            record(inner, &stream, version, &result).await.map(|_| Some(now))
        }
    }
}

fn unknown_step(stream: &str, version: u64, step: &str) -> SagaError {
    SagaError::Corrupt {
        stream: stream.to_owned(),
        version,
        reason: format!("the saga's definition has no step `{step}` (with a compensation) that its records name"),
    }
}

fn context(
    inner: &Inner,
    saga: &SagaDefinition,
    id: &str,
    step: &Step,
    direction: Direction,
    attempt: u32,
    progress: &Progress,
) -> StepContext {
    StepContext {
        saga: Arc::clone(&saga.name),
        id: id.into(),
        step: step.name.clone(),
        direction,
        attempt,
        input: Arc::new(progress.input.clone()),
        outputs: Arc::new(progress.outputs.clone()),
        bus: inner.bus.clone(),
        dispatched: AtomicU32::new(0),
    }
}
