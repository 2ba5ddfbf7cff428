//! One runner per projection and store within a process.
//!
//! The in-process backends (memory, AllSource, RocksDB) are opened by one process at a time
//! (AllSource and RocksDB lock their directory), so a table of the runners of this process is
//! enough to refuse a second one: two registries on one store cannot both run `orders`.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use crate::error::ProjectionError;

static RUNNERS: Mutex<BTreeSet<(usize, String)>> = Mutex::new(BTreeSet::new());

/// A held claim on running one projection on one store; released when dropped.
#[derive(Debug)]
pub(crate) struct RunnerLock {
    key: (usize, String),
}

impl RunnerLock {
    /// Claims `name` on the store whose shared backend is at `store` (its address).
    pub(crate) fn acquire(store: usize, name: &str) -> Result<Self, ProjectionError> {
        let key = (store, name.to_owned());
        let mut runners = RUNNERS.lock().unwrap_or_else(PoisonError::into_inner);
        if !runners.insert(key.clone()) {
            return Err(ProjectionError::AlreadyRunning { name: name.to_owned() });
        }
        Ok(RunnerLock { key })
    }
}

impl Drop for RunnerLock {
    fn drop(&mut self) {
        RUNNERS.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_refused_until_the_first_is_dropped() {
        let first = RunnerLock::acquire(1, "orders").unwrap();
        assert!(matches!(RunnerLock::acquire(1, "orders"), Err(ProjectionError::AlreadyRunning { .. })));
        let other_store = RunnerLock::acquire(2, "orders").unwrap();
        drop(first);
        let again = RunnerLock::acquire(1, "orders").unwrap();
        drop((again, other_store));
    }
}
