//! The saga workloads (issue 21): the three-step example (reserve, charge, ship: one keyed
//! command each) run by the orchestrator with 64 instances in flight, beside the same three
//! keyed commands sent by 64 tasks without a saga (what the effects cost alone); and the time
//! from a step's stored deadline to its compensation being recorded, for 64 instances whose
//! second step hangs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use allframe::cqrs::sagas::{Record, instance_of};
use allframe::cqrs::{
    CommandBus, CommandOptions, Saga, SagaDefinition, SagaOrchestrator, Step, StepContext, StepError,
};
use allframe::{Codec, DynBackend, EventStoreBackend, RawSubscription, StartFrom, SubscriptionOptions};
use allframe_benches::{Bump, counter_bus};
use tokio::sync::oneshot;

use crate::workloads::{concurrently, median, step};
use crate::{Measurement, Scale, targets};

/// Instances in flight.
const IN_FLIGHT: u32 = 64;

fn error(reason: impl std::fmt::Display) -> allframe::Error {
    allframe::Error::Configuration { reason: reason.to_string() }
}

/// One step that bumps counter `3n + offset` of order `n` (the saga's input), undone by
/// another bump of the same counter.
fn bump_step(name: &str, offset: u32) -> Step {
    Step::new(name, move |ctx: StepContext| async move {
        let n: u32 = ctx.input()?;
        ctx.dispatch(Bump { counter: 3 * n + offset }).await?;
        Ok(())
    })
    .compensate(move |ctx: StepContext| async move {
        let n: u32 = ctx.input()?;
        ctx.dispatch(Bump { counter: 3 * n + offset }).await?;
        Ok(())
    })
}

/// Reserve, charge, ship; with `hang`, charging never ends and times out after `hang`.
fn order_saga(hang: Option<Duration>) -> SagaDefinition {
    let charge = match hang {
        None => bump_step("charge", 1),
        Some(timeout) => Step::new("charge", |_ctx: StepContext| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, StepError>(())
        })
        .compensate(|_ctx: StepContext| async { Ok::<_, StepError>(()) })
        .timeout(timeout),
    };
    Saga::new("order").step(bump_step("reserve", 0)).step(charge).step(bump_step("ship", 2)).build().expect("a saga")
}

/// Tells waiters when their instance's last record is in the log.
#[derive(Clone, Default)]
struct Finished(Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>);

impl Finished {
    /// Follows the log from `head` and fires the waiter of each instance that completes or
    /// rolls back.
    fn follow(&self, backend: DynBackend, head: u64) -> tokio::task::JoinHandle<()> {
        let waiters = self.clone();
        tokio::spawn(async move {
            let options = SubscriptionOptions { page_size: 1024, ..SubscriptionOptions::default() };
            let Ok(mut log) = RawSubscription::start(backend, StartFrom::After(head), options).await else { return };
            while let Ok(event) = log.next().await {
                if matches!(&*event.event_type, "allframe.SagaCompleted" | "allframe.SagaRolledBack")
                    && let Some((_, id)) = instance_of(event.stream_id.as_str())
                    && let Some(waiter) = waiters.0.lock().expect("waiters").remove(id)
                {
                    let _ = waiter.send(());
                }
            }
        })
    }

    fn wait(&self, id: &str) -> oneshot::Receiver<()> {
        let (sender, receiver) = oneshot::channel();
        self.0.lock().expect("waiters").insert(id.to_owned(), sender);
        receiver
    }
}

/// Runs the saga workloads on a fresh store of `target`.
pub async fn run(target: &str, scale: Scale) -> Result<Vec<Measurement>, allframe::Error> {
    let backend = targets::open_extra(target, "sagas", false).await.map_err(error)?;
    let result = measure(target, &backend, scale).await;
    drop(backend);
    targets::cleanup_extra(target, "sagas").await;
    result
}

async fn measure(target: &str, backend: &DynBackend, scale: Scale) -> Result<Vec<Measurement>, allframe::Error> {
    let duration = Duration::from_secs_f64(scale.seconds);
    let bus = counter_bus(Arc::clone(backend), Codec::Json, Some(4096));
    let mut out = Vec::new();

    step("saga_commands_64");
    let mut runs = Vec::new();
    for run in 0..scale.runs {
        runs.push(commands_alone(&bus, duration, run).await?);
    }
    out.push(median(target, "saga_commands_64", "3 keyed commands, no saga (64 tasks)", runs));

    step("saga_three_steps_64");
    let sagas = SagaOrchestrator::builder(bus.clone()).saga(order_saga(None)).build().map_err(error)?;
    sagas.start().await.map_err(error)?;
    let mut runs = Vec::new();
    for run in 0..scale.runs {
        runs.push(completed(&sagas, backend, duration, &format!("r{run}")).await?);
    }
    sagas.stop();
    out.push(median(target, "saga_three_steps_64", "saga of 3 steps, begun to completed (64 in flight)", runs));

    step("saga_timeout_to_compensation");
    let sagas =
        SagaOrchestrator::builder(bus).saga(order_saga(Some(Duration::from_millis(200)))).build().map_err(error)?;
    sagas.start().await.map_err(error)?;
    let mut runs = Vec::new();
    for run in 0..scale.runs {
        runs.push(deadline_to_compensation(&sagas, backend, &format!("t{run}")).await?);
    }
    sagas.stop();
    out.push(median(target, "saga_timeout_to_compensation", "deadline to its compensation recorded", runs));
    Ok(out)
}

/// 64 tasks each send the three keyed commands of one order after another, for `duration`.
async fn commands_alone(bus: &CommandBus, duration: Duration, run: u32) -> Result<(f64, Vec<f64>), allframe::Error> {
    let bus = bus.clone();
    concurrently(IN_FLIGHT, duration, move |task, n| {
        let bus = bus.clone();
        async move {
            let order = 1_000_000 + run * 100_000 + task * 1_000 + n;
            for (offset, step) in [(0, "reserve"), (1, "charge"), (2, "ship")] {
                let key = format!("alone:{order}:{step}");
                let bump = Bump { counter: 3 * order + offset };
                bus.dispatch_with(bump, CommandOptions::new().idempotency_key(key)).await.map_err(error)?;
            }
            Ok(())
        }
    })
    .await
}

/// 64 tasks each begin an order's saga and wait for it to complete, for `duration`.
async fn completed(
    sagas: &SagaOrchestrator,
    backend: &DynBackend,
    duration: Duration,
    label: &str,
) -> Result<(f64, Vec<f64>), allframe::Error> {
    let finished = Finished::default();
    let follower = finished.follow(Arc::clone(backend), backend.head_position().await?);
    let (sagas, label) = (sagas.clone(), label.to_owned());
    let measured = concurrently(IN_FLIGHT, duration, move |task, n| {
        let (sagas, finished, id) = (sagas.clone(), finished.clone(), format!("{label}-{task}-{n}"));
        async move {
            let done = finished.wait(&id);
            sagas.begin("order", &id, &(task * 10_000 + n)).await.map_err(error)?;
            tokio::time::timeout(Duration::from_secs(60), done)
                .await
                .map_err(|_| error(format!("saga {id} did not complete in 60 s")))?
                .map_err(error)
        }
    })
    .await;
    follower.abort();
    measured
}

/// Begins 64 sagas whose second step hangs past its timeout; for each, the time from the
/// stored deadline to the `Compensated` record of that step (its append time).
async fn deadline_to_compensation(
    sagas: &SagaOrchestrator,
    backend: &DynBackend,
    label: &str,
) -> Result<(f64, Vec<f64>), allframe::Error> {
    let finished = Finished::default();
    let follower = finished.follow(Arc::clone(backend), backend.head_position().await?);
    let start = Instant::now();
    let mut waiting = Vec::new();
    for n in 0..IN_FLIGHT {
        let id = format!("{label}-{n}");
        waiting.push((id.clone(), finished.wait(&id)));
        sagas.begin("order", &id, &(2_000_000 + n)).await.map_err(error)?;
    }
    let mut latencies = Vec::new();
    for (id, done) in waiting {
        tokio::time::timeout(Duration::from_secs(60), done)
            .await
            .map_err(|_| error(format!("{id} hung")))?
            .map_err(error)?;
        let records = backend.read_stream(&allframe::cqrs::sagas::stream_of("order", &id), 0, 64).await?;
        let mut deadline = None;
        for event in &records {
            match serde_json::from_slice::<Record>(&event.payload).map_err(error)? {
                Record::StepStarted { step, deadline: Some(at), .. } if step == "charge" => deadline = Some(at),
                Record::Compensated { step } if step == "charge" => {
                    let at = deadline.ok_or_else(|| error("no deadline before the compensation"))?;
                    latencies.push((event.metadata.timestamp.as_micros() - at) as f64);
                }
                _ => {}
            }
        }
    }
    follower.abort();
    Ok((latencies.len() as f64 / start.elapsed().as_secs_f64(), latencies))
}
