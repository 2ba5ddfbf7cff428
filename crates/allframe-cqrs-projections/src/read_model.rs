//! What an application writes: a read model, fed events in global order.

use allframe_cqrs_core::{BoxError, Envelope, Event, async_trait};

/// Where a read model's state lives, which decides where its runner starts and what delivery
/// it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// The state lives in this process's memory and is gone after a restart, so every start
    /// replays the log from position 0 into a fresh instance. No checkpoint is written.
    FromScratch,
    /// The state lives somewhere durable (a file, a database): the runner starts after the
    /// projection's checkpoint and saves it after [`ReadModel::commit`]. Delivery is
    /// at-least-once: after a crash, the events since the last saved checkpoint come again, and
    /// [`Envelope::position`] lets the model skip what it already has.
    FromCheckpoint,
}

/// A named, versioned read model that a [`ProjectionRegistry`](crate::ProjectionRegistry) runs.
///
/// ```
/// use allframe_cqrs_core::{BoxError, Envelope, Event};
/// use allframe_cqrs_projections::ReadModel;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, Serialize, Deserialize)]
/// enum AccountEvent { Opened { owner: String }, Deposited { amount: u64 } }
/// impl Event for AccountEvent {}
///
/// /// Money deposited, over all accounts.
/// #[derive(Default)]
/// struct Deposits { total: u64 }
///
/// impl ReadModel<AccountEvent> for Deposits {
///     const NAME: &'static str = "deposits";
///     const EVENTS: &'static [&'static str] = &["Deposited"];
///
///     fn apply(&mut self, event: &Envelope<AccountEvent>) -> Result<(), BoxError> {
///         if let AccountEvent::Deposited { amount } = event.event {
///             self.total += amount;
///         }
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait ReadModel<E: Event>: Send + Sync + 'static {
    /// The projection's stable name: its checkpoint, status and dead letters are kept under it.
    const NAME: &'static str;
    /// The version of the projection's logic. A new version is a new read model, built from
    /// position 0 (see [`ProjectionRegistry::rebuild_beside`](crate::ProjectionRegistry::rebuild_beside));
    /// its checkpoint is its own (`NAME@vVERSION`).
    const VERSION: u32 = 1;
    /// The event types it handles, by stored name; empty means every type. Other events are
    /// passed over without being decoded, so a projection of a few types replays fast.
    const EVENTS: &'static [&'static str] = &[];
    /// Where its state lives (see [`Resume`]).
    const RESUME: Resume = Resume::FromScratch;

    /// Applies one event. An error (or a panic) is a failure, handled by the projection's
    /// [`FailurePolicy`](crate::FailurePolicy); an event whose apply failed half-way may be
    /// applied again under a retry, so change the state only once nothing can fail.
    fn apply(&mut self, event: &Envelope<E>) -> Result<(), BoxError>;

    /// Makes everything applied up to `position` durable, before the registry saves that
    /// position as the checkpoint. Only called under [`Resume::FromCheckpoint`]. The default
    /// does nothing.
    async fn commit(&mut self, position: u64) -> Result<(), BoxError> {
        let _ = position;
        Ok(())
    }
}

/// The name of the checkpoint of version `version` of projection `name`.
pub fn checkpoint_name(name: &str, version: u32) -> String {
    format!("{name}@v{version}")
}
