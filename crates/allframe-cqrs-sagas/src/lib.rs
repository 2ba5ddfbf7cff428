//! Sagas: durable process managers.
//!
//! A saga ([`Saga`]) is ordered [`Step`]s, each an action that dispatches commands through the
//! command bus, a compensation that undoes it, a timeout and a [`Retry`] policy. Each instance
//! is event-sourced: its history is the stream `$allframe-saga:NAME:ID` ([`Record`]), so it
//! survives restarts, its timeouts are kept in the store (a deadline that passes while no
//! process runs fires at the next start), two runners never both act on what one saw (every
//! record is appended expecting the version read), and anyone can read what it did.
//!
//! Effects happen once as seen from outside: a step's commands carry idempotency keys derived
//! from the instance, the step and the command's place in it ([`StepContext::dispatch`]), so
//! a step run again after a crash, or after a timeout, is answered with the first outcome.
//! A step that fails for good makes the saga undo the steps done (and the one that timed out,
//! which may have partly run), last first; a compensation that keeps failing leaves the
//! instance stuck, visible, until an operator resumes it ([`SagaOrchestrator::resume`]).
//!
//! A saga can also be written as reactions ([`Choreography`]): a handler that the orchestrator
//! gives the events it correlates to an instance (and the instance's own timers), which decides
//! the next commands; its state is kept in the instance's stream with each reaction. Either
//! kind starts from a command ([`SagaOrchestrator::begin`]) or from an event
//! ([`Saga::start_on`], [`Correlation::Start`]), correlated by an id the application chooses;
//! either can wait without holding a process ([`Step::delay`], [`Reaction::schedule`]).
//!
//! ```
//! # use allframe_cqrs_sagas::{Saga, Step, StepError, Retry};
//! # use std::time::Duration;
//! let saga = Saga::new("order-fulfilment")
//!     .step(
//!         Step::new("reserve-stock", |ctx| async move { Ok::<_, StepError>(ctx.saga_id().to_owned()) })
//!             .compensate(|_ctx| async move { Ok::<_, StepError>(()) })
//!             .timeout(Duration::from_secs(30))
//!             .retry(Retry::times(3, Duration::from_millis(100))),
//!     )
//!     .build()?;
//! assert_eq!(saga.steps().collect::<Vec<_>>(), ["reserve-stock"]);
//! # Ok::<(), allframe_cqrs_sagas::SagaError>(())
//! ```

mod census;
mod choreography;
mod context;
mod definition;
mod driver;
mod error;
mod health;
mod inspect;
mod metrics;
mod orchestrator;
mod progress;
mod reactions;
mod record;
mod route;

pub use choreography::{Choreography, Correlation, Reaction};
pub use context::{StepContext, StepError};
pub use definition::{Retry, Saga, SagaDefinition, Step};
pub use error::SagaError;
pub use inspect::{Instance, list, load, resume};
pub use orchestrator::{RouterStatus, SagaOrchestrator, SagaOrchestratorBuilder};
pub use progress::{Progress, SagaState};
pub use record::{Record, SAGA_STREAM_PREFIX, Trigger, instance_of, stream_of};
