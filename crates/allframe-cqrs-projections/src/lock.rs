//! One runner per projection.
//!
//! Within a process, a table of the runners of this process refuses a second one: the
//! in-process backends (memory, AllSource, RocksDB) are opened by one process at a time
//! (AllSource and RocksDB lock their directory), so two registries on one store cannot both
//! run `orders`. Across processes, a backend's [`Leases`](allframe_cqrs_core::Leases)
//! (PostgreSQL's advisory locks) give the projection to one of them.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use allframe_cqrs_core::Lease;

use crate::error::ProjectionError;

static RUNNERS: Mutex<BTreeSet<(usize, String)>> = Mutex::new(BTreeSet::new());

/// A held claim on running one projection; released when dropped.
#[derive(Debug)]
pub(crate) enum RunnerLock {
    /// Claimed in this process's table.
    Local(#[allow(dead_code, reason = "held for its drop")] LocalClaim),
    /// A lease from the backend, shared by every process on the store.
    Leased(#[allow(dead_code, reason = "held for its drop")] Box<dyn Lease>),
}

#[derive(Debug)]
pub(crate) struct LocalClaim {
    key: (usize, String),
}

impl RunnerLock {
    /// Claims `name` on the store whose shared backend is at `store` (its address).
    pub(crate) fn local(store: usize, name: &str) -> Result<Self, ProjectionError> {
        let key = (store, name.to_owned());
        let mut runners = RUNNERS.lock().unwrap_or_else(PoisonError::into_inner);
        if !runners.insert(key.clone()) {
            return Err(ProjectionError::AlreadyRunning { name: name.to_owned() });
        }
        Ok(RunnerLock::Local(LocalClaim { key }))
    }
}

impl Drop for LocalClaim {
    fn drop(&mut self) {
        RUNNERS.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.key);
    }
}

/// Waits for the lease on `name` (a checkpoint name), trying every `poll` and showing
/// `Standby` meanwhile; `None` when the runner is stopped first.
pub(crate) async fn wait_for_lease(
    leases: &dyn allframe_cqrs_core::Leases,
    name: &str,
    control: &mut tokio::sync::watch::Receiver<crate::runner::Control>,
    shared: &crate::status::Shared,
    poll: std::time::Duration,
) -> Option<RunnerLock> {
    let mut shown = false;
    loop {
        if *control.borrow_and_update() == crate::runner::Control::Stop {
            return None;
        }
        match leases.try_lease(name).await {
            Ok(Some(lease)) => return Some(RunnerLock::Leased(lease)),
            Ok(None) => {
                if !shown {
                    tracing::info!(projection = shared.name, "another instance runs this projection; standing by");
                    shared.set_state(crate::status::ProjectionState::Standby);
                    shown = true;
                }
            }
            Err(error) => {
                tracing::warn!(projection = shared.name, %error, "taking the projection's lease failed; retrying")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            _ = control.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_refused_until_the_first_is_dropped() {
        let first = RunnerLock::local(1, "orders").unwrap();
        assert!(matches!(RunnerLock::local(1, "orders"), Err(ProjectionError::AlreadyRunning { .. })));
        let other_store = RunnerLock::local(2, "orders").unwrap();
        drop(first);
        let again = RunnerLock::local(1, "orders").unwrap();
        drop((again, other_store));
    }
}
