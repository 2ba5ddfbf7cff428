//! Driving one instance: read its stream, decide the next thing ([`Progress::next`]), record
//! the intent, do it, record the result, until it is finished, stuck, or waits. Every record is
//! appended expecting the version read, so a second runner (or an operator's resume) is noticed
//! as a conflict and the driver reads again instead of acting on what it saw.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use allframe_cqrs_core::{Error, ExpectedVersion};
use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::Notify;

use crate::context::{Direction, StepContext, StepError};
use crate::definition::{Action, SagaDefinition, Step};
use crate::error::SagaError;
use crate::orchestrator::Inner;
use crate::progress::{Next, Progress};
use crate::record::{Record, instance_of, now_micros, stream_of};

/// How an attempt ended.
pub(crate) enum Ended {
    Done(Value),
    Error(StepError),
    TimedOut,
}

/// Appends `records` after `version` of the instance's stream: `Ok(false)` when someone else
/// wrote there first (read again and decide again).
pub(crate) async fn record_all(
    inner: &Inner,
    stream: &str,
    version: u64,
    records: &[Record],
) -> Result<bool, SagaError> {
    let expected = if version == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(version) };
    let events = records.iter().map(Record::to_event).collect();
    match inner.backend.append(stream, expected, events).await {
        Ok(_) => {
            if let Some((saga, _)) = instance_of(stream) {
                inner.metrics.recorded(saga, records);
            }
            Ok(true)
        }
        // Another writer (a second runner, an operator's resume, the router): read again.
        Err(Error::Conflict { .. }) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// [`record_all`] of one record.
async fn record(inner: &Inner, stream: &str, version: u64, record: &Record) -> Result<bool, SagaError> {
    record_all(inner, stream, version, std::slice::from_ref(record)).await
}

/// What a driver does after one decision.
pub(crate) enum Then {
    /// Decide again at once.
    Now,
    /// Decide again at this time (µs since the epoch), or when woken.
    Until(i64),
    /// Nothing more to do for now: the stream's version it last saw.
    Exit(u64),
}

/// Runs `once` until it exits or the orchestrator stops: `Some(version)` it saw last, `None`
/// when stopped. A wait ends early when `wake` is notified (something new for the instance).
pub(crate) async fn drive_loop<F, Fut>(inner: &Inner, wake: &Notify, what: &str, mut once: F) -> Option<u64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Then, SagaError>>,
{
    let mut stopped = inner.stopped.subscribe();
    loop {
        if *stopped.borrow() {
            return None;
        }
        let wait = match once().await {
            Ok(Then::Now) => continue,
            Ok(Then::Until(until)) => Duration::from_micros(until.saturating_sub(now_micros()).max(0) as u64),
            Ok(Then::Exit(version)) => return Some(version),
            Err(error) => {
                tracing::warn!(instance = what, %error, "driving a saga instance failed; trying again");
                Duration::from_millis(200)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
            _ = stopped.changed() => return None,
        }
    }
}

/// Runs `action` with `context` until `deadline` (µs since the epoch), a panic counting as a
/// failure.
async fn attempt(action: &Action, context: StepContext, deadline: Option<i64>) -> Ended {
    let run = AssertUnwindSafe(action(context)).catch_unwind();
    ended(run, deadline).await
}

/// How `run` ends by `deadline`: done, failed (a panic is a failure), or timed out.
pub(crate) async fn ended<F>(run: F, deadline: Option<i64>) -> Ended
where
    F: Future<Output = std::thread::Result<Result<Value, StepError>>>,
{
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

/// Drives instance `id` of `saga` until it is finished, stuck, or the orchestrator stops (see
/// [`drive_loop`]).
pub(crate) async fn drive(inner: Arc<Inner>, saga: SagaDefinition, id: String, wake: Arc<Notify>) -> Option<u64> {
    let what = stream_of(&saga.name, &id);
    drive_loop(&inner, &wake, &what, || step_once(&inner, &saga, &id)).await
}

/// Does the next thing.
async fn step_once(inner: &Inner, saga: &SagaDefinition, id: &str) -> Result<Then, SagaError> {
    let progress = match crate::inspect::load(&*inner.backend, &saga.name, id).await {
        Ok(progress) => progress,
        Err(SagaError::NotFound { .. }) => return Ok(Then::Exit(0)),
        Err(error) => return Err(error),
    };
    inner.census.observe(&saga.name, id, &progress.state());
    let stream = stream_of(&saga.name, id);
    let now = now_micros();
    let version = progress.version;
    let step_named = |name: &str| saga.step(name).ok_or_else(|| unknown_step(&stream, version, name));
    match progress.next(saga, now) {
        Next::Finished | Next::Stuck => Ok(Then::Exit(version)),
        Next::Wait { until } => Ok(Then::Until(until)),
        Next::Complete => record(inner, &stream, version, &Record::Completed).await.map(|_| Then::Now),
        Next::RollBack { step, reason } => {
            record(inner, &stream, version, &Record::RolledBack { step, reason }).await.map(|_| Then::Now)
        }
        Next::TimeOut { step, attempt } => {
            let records = with_next(saga, progress.clone(), None, Record::StepTimedOut { step, attempt });
            record_all(inner, &stream, version, &records).await.map(|_| Then::Now)
        }
        Next::Sleep { step, until } => {
            record(inner, &stream, version, &Record::Sleeping { step, until }).await.map(|_| Then::Now)
        }
        Next::Wake { step } => {
            let records = with_next(saga, progress.clone(), None, Record::StepCompleted { step, output: Value::Null });
            record_all(inner, &stream, version, &records).await.map(|_| Then::Now)
        }
        Next::Run { step, attempt, deadline, begun } => {
            let definition = step_named(&step)?;
            let (deadline, version, started) = match begun {
                true => (deadline, version, None),
                false => {
                    let deadline = definition.timeout.map(|timeout| now + timeout.as_micros() as i64);
                    let started = Record::StepStarted { step: step.clone(), attempt, deadline };
                    if !record(inner, &stream, version, &started).await? {
                        return Ok(Then::Now);
                    }
                    (deadline, version + 1, Some(started))
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
            let records = with_next(saga, progress, started, result);
            record_all(inner, &stream, version, &records).await.map(|_| Then::Now)
        }
        Next::Undo { step, attempt, deadline, begun } => {
            let definition = step_named(&step)?;
            let Some(compensation) = &definition.compensation else {
                return Err(unknown_step(&stream, version, &step));
            };
            let (deadline, version, started) = match begun {
                true => (deadline, version, None),
                false => {
                    let deadline = definition.timeout.map(|timeout| now + timeout.as_micros() as i64);
                    let started = Record::CompensationStarted { step: step.clone(), attempt, deadline };
                    if !record(inner, &stream, version, &started).await? {
                        return Ok(Then::Now);
                    }
                    (deadline, version + 1, Some(started))
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
            let records = with_next(saga, progress, started, result);
            record_all(inner, &stream, version, &records).await.map(|_| Then::Now)
        }
    }
}

/// The records to append after `result`: it, and the intent of what comes next when that is
/// already decided (the next step's or compensation's start, a delay's sleep, the end), so that
/// a saga takes one append per step rather than two. The next runner, or this one, finds the
/// intent recorded and acts on it as on any begun attempt.
fn with_next(saga: &SagaDefinition, mut progress: Progress, started: Option<Record>, result: Record) -> Vec<Record> {
    if let Some(started) = started {
        progress.apply(started);
    }
    progress.apply(result.clone());
    let now = now_micros();
    let deadline = |step: &str| saga.step(step).and_then(|s| s.timeout).map(|t| now + t.as_micros() as i64);
    let next = match progress.next(saga, now) {
        Next::Run { step, attempt, begun: false, .. } => {
            Some(Record::StepStarted { deadline: deadline(&step), step, attempt })
        }
        Next::Undo { step, attempt, begun: false, .. } => {
            Some(Record::CompensationStarted { deadline: deadline(&step), step, attempt })
        }
        Next::Complete => Some(Record::Completed),
        Next::RollBack { step, reason } => Some(Record::RolledBack { step, reason }),
        Next::Sleep { step, until } => Some(Record::Sleeping { step, until }),
        _ => None,
    };
    std::iter::once(result).chain(next).collect()
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
