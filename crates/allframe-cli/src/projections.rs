//! `allframe projections list | status | rebuild NAME`: the projections this binary runs (the
//! demo's, `crate::bank::projections`) on a store: what they are, where they are against the
//! log, and a rebuild with a progress bar. An application offers the same for its own
//! projections with the registry's `names`, `status` and `rebuild`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use allframe::cqrs::{ProjectionError, ProjectionState, Resume};
use allframe::{EventStore, EventStoreBackend};

use crate::CliError;
use crate::address::{self, Address, Open};
use crate::commands::ProgressBar;

/// Arguments of `allframe projections`.
#[derive(Debug, clap::Args)]
pub struct ProjectionsArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
    /// The store (default: the demo's, `allsource:./allframe-data`).
    #[arg(long, value_name = "STORE", global = true)]
    pub store: Option<Address>,
}

/// What `allframe projections` does.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// The projections, with their versions, the events they handle and where they keep state.
    List,
    /// Each projection brought up to the head of the store: position, lag, rate, dead letters.
    Status,
    /// Rebuild one projection from position 0, with a progress bar.
    Rebuild {
        /// The projection.
        name: String,
    },
}

/// The store a `--store` option names, else the demo's (`allsource:./allframe-data`).
pub fn store_or_demo(store: Option<&Address>) -> Result<Address, CliError> {
    match store {
        Some(store) => Ok(store.clone()),
        None => Address::of("allsource", "./allframe-data").ok_or_else(|| {
            CliError::usage("this build has no AllSource backend: give --store memory: or another address")
        }),
    }
}

/// `allframe projections ...`.
pub async fn projections(args: &ProjectionsArgs) -> Result<u8, CliError> {
    if let Action::List = args.action {
        return list().await;
    }
    let address = store_or_demo(args.store.as_ref())?;
    // Read through the demo's upcasters: a store an earlier build wrote reads as today's events.
    let backend = crate::bank::upcasting(address::open(&address, Open::Existing).await?);
    let store: EventStore<crate::bank::BankEvent, dyn EventStoreBackend> =
        EventStore::from_shared(Arc::clone(&backend));
    let (registry, _) = crate::bank::projections(&store);
    let failed = |error: ProjectionError| match error {
        ProjectionError::Store(error) => CliError::store(&address, &error),
        other => CliError::new(&address, other.to_string(), "see `allframe projections list`"),
    };
    match &args.action {
        Action::List => unreachable!("answered above"),
        Action::Status => {
            registry.start_all().await.map_err(failed)?;
            let head = backend.head_position().await.map_err(|e| CliError::store(&address, &e))?;
            for name in registry.names() {
                wait_until(&registry, name, head, None).await.map_err(failed)?;
            }
            println!(
                "| projection | version | state | position | head | lag (events) | lag (time) | events/s | dead letters |"
            );
            println!("|---|---:|---|---:|---:|---:|---:|---:|---:|");
            for status in registry.statuses().await.map_err(failed)? {
                println!(
                    "| {} | {} | {:?} | {} | {} | {} | {:.1?} | {:.0} | {} |",
                    status.name,
                    status.version,
                    status.state,
                    status.position,
                    status.head,
                    status.lag_events,
                    status.lag,
                    status.events_per_second,
                    status.dead_letters
                );
            }
            registry.stop_all().await;
            Ok(0)
        }
        Action::Rebuild { name } => {
            let head = backend.head_position().await.map_err(|e| CliError::store(&address, &e))?;
            let started = Instant::now();
            registry.rebuild(name).await.map_err(failed)?;
            let mut bar = ProgressBar::new("rebuild", started);
            wait_until(&registry, name, head, Some(&mut bar)).await.map_err(failed)?;
            bar.finish();
            let seconds = started.elapsed().as_secs_f64();
            let status = registry.status(name).await.map_err(failed)?;
            println!(
                "rebuilt `{name}` from position 0 to {} in {seconds:.2}s ({:.0} events/s, {} applied)",
                status.position,
                status.position as f64 / seconds.max(1e-9),
                status.applied
            );
            registry.stop_all().await;
            Ok(0)
        }
    }
}

/// Waits until projection `name` has passed `head`, showing progress on `bar`.
async fn wait_until<E: allframe::Event, B: EventStoreBackend + ?Sized + 'static>(
    registry: &allframe::cqrs::ProjectionRegistry<E, B>,
    name: &str,
    head: u64,
    mut bar: Option<&mut ProgressBar>,
) -> Result<(), ProjectionError> {
    loop {
        let status = registry.status(name).await?;
        if let Some(bar) = bar.as_deref_mut() {
            bar.show(status.position, head);
        }
        if let ProjectionState::Failed { position, reason } = status.state {
            return Err(ProjectionError::Failed { name: name.to_owned(), position, reason });
        }
        if status.position >= head {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The projections and what they are; nothing is read from a store.
async fn list() -> Result<u8, CliError> {
    let store: EventStore<crate::bank::BankEvent, dyn EventStoreBackend> =
        EventStore::from_shared(Arc::new(allframe::cqrs::InMemoryBackend::new()));
    let (registry, _) = crate::bank::projections(&store);
    println!("| projection | version | handles | state kept |");
    println!("|---|---:|---|---|");
    for status in registry.statuses().await.map_err(|e| CliError::usage(e.to_string()))? {
        let kept = match status.resume {
            Resume::FromScratch => "in memory (replayed at each start)",
            _ => "elsewhere (resumes from its checkpoint)",
        };
        let handles = if status.handles.is_empty() { "every event".to_owned() } else { status.handles.join(", ") };
        println!("| {} | {} | {handles} | {kept} |", status.name, status.version);
    }
    Ok(0)
}
