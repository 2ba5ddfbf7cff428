//! What the store's health answer checks: the log writer (a poisoned store, a stopped writer
//! thread: `Failed`) and the Parquet converter (stopped, or a full backlog that makes appends
//! wait: `Degraded`). Every check reads state the engine keeps anyway; none does I/O.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use allframe_cqrs_core::Health;

use crate::AllSourceBackend;

/// The component of findings about the log writer.
const WRITER: &str = "allsource.writer";
/// The component of findings about the Parquet converter.
const CONVERTER: &str = "allsource.converter";

impl AllSourceBackend {
    /// The store's health (see [`EventStoreBackend::health`](allframe_cqrs_core::EventStoreBackend::health)).
    pub(crate) fn check_health(&self) -> Health {
        let mut health = Health::ok();
        if let Some(poison) = &self.read().poisoned {
            health = health.merge(Health::failed(
                WRITER,
                format!(
                    "poisoned by an I/O failure; nothing more is acknowledged until the store is reopened: {}",
                    poison.reason()
                ),
            ));
        } else if self.writer.as_ref().is_some_and(|writer| writer.is_finished()) {
            health = health.merge(Health::failed(WRITER, "the log writer thread stopped; appends are refused"));
        }
        if self.converter.is_none() {
            return health;
        }
        let shared = &self.shared;
        let error = shared.conversion_error.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let backlog = shared.conversion_backlog.load(Ordering::SeqCst);
        let limit = self.config.max_conversion_backlog.max(1) as u64;
        if let Some(error) = error {
            health = health.merge(Health::degraded(
                CONVERTER,
                format!("Parquet conversion stopped ({backlog} sealed log segments wait until the store is reopened): {error}"),
            ));
        } else if !shared.converter_running.load(Ordering::SeqCst) {
            health = health.merge(Health::degraded(CONVERTER, "the Parquet converter thread stopped"));
        }
        if backlog >= limit {
            health = health.merge(Health::degraded(
                CONVERTER,
                format!(
                    "{backlog} sealed log segments wait for conversion to Parquet (limit {limit}): appends wait for the converter beyond it"
                ),
            ));
        }
        health
    }
}
