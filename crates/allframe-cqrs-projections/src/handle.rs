//! How queries read a read model: shared, never copied, and never half-built.

use std::sync::{Arc, PoisonError, RwLock as StdRwLock};
use std::time::Duration;

use tokio::sync::{OwnedRwLockReadGuard, RwLock};

use crate::error::ProjectionError;
use crate::status::{ProjectionState, Shared};

/// The read model queries see. A rebuild beside the live model replaces it here in one step,
/// once the new one has caught up, so a query sees the old model or the new one, whole.
pub(crate) struct Slot<P> {
    current: StdRwLock<Arc<RwLock<P>>>,
}

impl<P> Slot<P> {
    pub(crate) fn new(model: P) -> Self {
        Slot { current: StdRwLock::new(Arc::new(RwLock::new(model))) }
    }

    pub(crate) fn current(&self) -> Arc<RwLock<P>> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn replace(&self, model: Arc<RwLock<P>>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = model;
    }
}

/// A registered read model, for queries: [`read`](Self::read) it as it is, or
/// [`read_at_least`](Self::read_at_least) a position a command wrote (read your own writes).
/// Cheap to clone; register it on a `QueryBus` as state.
pub struct ReadModelHandle<P> {
    pub(crate) slot: Arc<Slot<P>>,
    pub(crate) shared: Arc<Shared>,
}

impl<P> Clone for ReadModelHandle<P> {
    fn clone(&self) -> Self {
        ReadModelHandle { slot: Arc::clone(&self.slot), shared: Arc::clone(&self.shared) }
    }
}

impl<P> std::fmt::Debug for ReadModelHandle<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadModelHandle")
            .field("name", &self.shared.name)
            .field("position", &self.shared.position())
            .finish()
    }
}

impl<P: Send + Sync + 'static> ReadModelHandle<P> {
    /// The projection's name.
    pub fn name(&self) -> &'static str {
        self.shared.name
    }

    /// The position of the last event the read model has passed.
    pub fn position(&self) -> u64 {
        self.shared.position()
    }

    /// The read model as it is now, shared with its runner (which waits while this is held:
    /// hold it briefly).
    pub async fn read(&self) -> OwnedRwLockReadGuard<P> {
        self.slot.current().read_owned().await
    }

    /// The read model once it has passed `position` (for example a command's
    /// `Outcome::last_position`), waiting up to `timeout` for it.
    ///
    /// # Errors
    ///
    /// [`ProjectionError::Timeout`] when it is not there in time, [`ProjectionError::Failed`]
    /// at once when its runner has stopped on an event it could not apply.
    pub async fn read_at_least(
        &self,
        position: u64,
        timeout: Duration,
    ) -> Result<OwnedRwLockReadGuard<P>, ProjectionError> {
        let mut marks = self.shared.mark.subscribe();
        let reached = async {
            loop {
                let mark = *marks.borrow_and_update();
                if mark.position >= position {
                    return Ok(());
                }
                if mark.failed
                    && let ProjectionState::Failed { position, reason } = self.shared.state()
                {
                    return Err(ProjectionError::Failed { name: self.shared.name.to_owned(), position, reason });
                }
                // The sender lives in `shared`, which this handle holds: never closed here.
                let _ = marks.changed().await;
            }
        };
        match tokio::time::timeout(timeout, reached).await {
            Ok(Ok(())) => Ok(self.read().await),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ProjectionError::Timeout {
                name: self.shared.name.to_owned(),
                position: self.position(),
                wanted: position,
                waited: timeout,
            }),
        }
    }
}
