//! Driving one choreography instance: read its stream, take the next thing to react to
//! ([`Progress::next_reaction`]), record the intent (`Reacting`), react, record the state and
//! timers after it (`Reacted`) or the failure, until nothing is left to react to. Every record
//! is appended expecting the version read, as for orchestrations.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use futures_util::FutureExt;
use tokio::sync::Notify;

use crate::choreography::{Input, Reaction, Reactor};
use crate::context::StepError;
use crate::driver::{Ended, Then, drive_loop, ended, record_all};
use crate::error::SagaError;
use crate::orchestrator::Inner;
use crate::progress::NextReaction;
use crate::record::{Record, Trigger, now_micros, stream_of};

/// Drives instance `id` of choreography `reactor` until it has nothing to react to, is stuck
/// or completed, or the orchestrator stops (see [`drive_loop`]).
pub(crate) async fn drive(inner: Arc<Inner>, reactor: Arc<dyn Reactor>, id: String, wake: Arc<Notify>) -> Option<u64> {
    let what = stream_of(reactor.name(), &id);
    drive_loop(&inner, &wake, &what, || react_once(&inner, &*reactor, &id)).await
}

async fn react_once(inner: &Inner, reactor: &dyn Reactor, id: &str) -> Result<Then, SagaError> {
    let progress = match crate::inspect::load(&*inner.backend, reactor.name(), id).await {
        Ok(progress) => progress,
        Err(SagaError::NotFound { .. }) => return Ok(Then::Exit(0)),
        Err(error) => return Err(error),
    };
    inner.census.observe(reactor.name(), id, &progress.state());
    let stream = stream_of(reactor.name(), id);
    let mut version = progress.version;
    if progress.state().is_finished() {
        return Ok(Then::Exit(version));
    }
    let (trigger, attempt, begun) = match progress.next_reaction(now_micros()) {
        NextReaction::Idle => return Ok(Then::Exit(version)),
        NextReaction::Wait { until } => return Ok(Then::Until(until)),
        NextReaction::React { trigger, attempt, begun } => (trigger, attempt, begun),
    };
    let mut after = progress.clone();
    if !begun {
        let reacting = Record::Reacting { trigger: trigger.clone(), attempt };
        if !record_all(inner, &stream, version, std::slice::from_ref(&reacting)).await? {
            return Ok(Then::Now);
        }
        after.apply(reacting);
        version += 1;
    }
    let mut timers = progress.timers().clone();
    let event = match &trigger {
        Trigger::Event { position, .. } => Some(event_at(inner, *position).await?),
        Trigger::Timer { name, .. } => {
            // A timer fires once: the reaction may set it again.
            timers.remove(name);
            None
        }
        Trigger::Begin => None,
    };
    let input = match (&trigger, event) {
        (_, Some(Ok(event))) => Input::Event(event),
        (_, Some(Err(reason))) => {
            let failed = failure(reactor, &trigger, attempt, StepError::failed(reason));
            return record_all(inner, &stream, version, &[failed]).await.map(|_| Then::Now);
        }
        (Trigger::Timer { name, .. }, None) => Input::Timer(name),
        (_, None) => Input::Begin(&progress.input),
    };
    let mut ctx = Reaction {
        saga: reactor.name().into(),
        id: id.into(),
        trigger: trigger.clone(),
        attempt,
        bus: inner.bus.clone(),
        dispatched: AtomicU32::new(0),
        timers,
        completed: false,
    };
    let ended = {
        let _permit = inner.permits.acquire().await;
        let run = AssertUnwindSafe(reactor.react(&progress.data, input, inner.codec, &mut ctx)).catch_unwind();
        ended(run, None).await
    };
    let records = match ended {
        Ended::Done(state) => {
            let reacted = Record::Reacted { trigger, state, timers: ctx.timers };
            if ctx.completed { vec![reacted, Record::Completed] } else { vec![reacted] }
        }
        Ended::Error(error) => vec![failure(reactor, &trigger, attempt, error)],
        // A reaction runs without a deadline; were one given, its end would be a failure.
        Ended::TimedOut => vec![failure(reactor, &trigger, attempt, StepError::failed("it timed out"))],
    };
    record_result(inner, &stream, version, &with_next(after, records)).await
}

/// `records` (a reaction's result) and, when what the instance reacts to next is already there
/// (something received, a timer due), the intent to react to it: one append per reaction
/// rather than two. The next attempt finds that intent recorded and acts on it.
fn with_next(mut progress: crate::progress::Progress, mut records: Vec<Record>) -> Vec<Record> {
    for record in &records {
        progress.apply(record.clone());
    }
    if progress.state().is_finished() {
        return records;
    }
    if let NextReaction::React { trigger, attempt, begun: false } = progress.next_reaction(now_micros()) {
        records.push(Record::Reacting { trigger, attempt });
    }
    records
}

/// Records a reaction's result after `version`. When the router appended events to the
/// instance meanwhile (only `Received` records after `version`), the result still holds and is
/// appended after them; anything else (a second runner's result) means reading again.
async fn record_result(inner: &Inner, stream: &str, mut version: u64, records: &[Record]) -> Result<Then, SagaError> {
    loop {
        if record_all(inner, stream, version, records).await? {
            return Ok(Then::Now);
        }
        let newer = inner.backend.read_stream(stream, version, 64).await?;
        let only_received = !newer.is_empty()
            && newer.iter().all(|event| matches!(Record::from_event(event), Ok(Record::Received { .. })));
        if !only_received || newer.len() == 64 {
            return Ok(Then::Now);
        }
        version = newer.last().map_or(version, |event| event.version);
    }
}

/// The record of a failed reaction: retried later when transient and attempts are left,
/// otherwise stuck until an operator resumes it.
fn failure(reactor: &dyn Reactor, trigger: &Trigger, attempt: u32, error: StepError) -> Record {
    let retry = reactor.retry();
    let again = matches!(error, StepError::Transient(_)) && attempt < retry.attempts;
    let retry_at = again.then(|| now_micros() + retry.wait_after(attempt).as_micros() as i64);
    if retry_at.is_none() {
        tracing::error!(saga = reactor.name(), %trigger, %error, "a reaction failed for good; the instance waits for an operator (resume)");
    }
    Record::ReactionFailed { trigger: trigger.clone(), attempt, error: error.to_string(), retry_at }
}

/// The event stored at `position`: `Err` with a reason when the log has none there (it was
/// routed from this log, so that means the store was changed under the saga).
async fn event_at(
    inner: &Inner,
    position: u64,
) -> Result<Result<allframe_cqrs_core::RecordedEvent, String>, SagaError> {
    let page = inner.backend.read_all(position.saturating_sub(1), 1).await?;
    Ok(match page.into_iter().next() {
        Some(event) if event.position == position => Ok(event),
        _ => Err(format!("the log has no event at position {position}")),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::Value;

    use super::*;
    use crate::progress::Progress;

    fn event(position: u64) -> Trigger {
        Trigger::Event { position, event_type: "Opened".into() }
    }

    #[test]
    fn a_reaction_is_recorded_with_the_intent_to_react_to_what_waits_next() {
        let reacted =
            |position| Record::Reacted { trigger: event(position), state: Value::Null, timers: BTreeMap::new() };
        let mut progress = Progress::fold([
            Record::Started { input: Value::Null },
            Record::Received { trigger: event(1) },
            Record::Received { trigger: event(2) },
            Record::Reacting { trigger: event(1), attempt: 1 },
        ]);
        let records = with_next(progress.clone(), vec![reacted(1)]);
        assert_eq!(records, [reacted(1), Record::Reacting { trigger: event(2), attempt: 1 }]);
        // Nothing waits after the last one; nothing follows a completion.
        progress.apply(reacted(1));
        progress.apply(Record::Reacting { trigger: event(2), attempt: 1 });
        assert_eq!(with_next(progress.clone(), vec![reacted(2)]), [reacted(2)]);
        progress.apply(Record::Received { trigger: event(3) });
        assert_eq!(with_next(progress, vec![reacted(2), Record::Completed]), [reacted(2), Record::Completed]);
    }
}
