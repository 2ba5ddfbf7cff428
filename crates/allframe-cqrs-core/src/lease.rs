//! A power some backends add (PostgreSQL): a lease on a name, held by one process among all
//! those connected to one store, and freed when that process dies. Consumers of the log (a
//! projection's runner) take one so that each runs once across application instances.

use crate::error::Result;

/// A held lease; dropping it frees the name.
pub trait Lease: Send + Sync + std::fmt::Debug {}

/// Leases on names, shared by every process connected to one store.
///
/// Correctness never rests on a lease alone: checkpoints are compare-and-set (contract point
/// 14), so a holder that lost its lease without noticing fails its next save.
#[async_trait::async_trait]
pub trait Leases: Send + Sync + std::fmt::Debug {
    /// Takes the lease on `name` if no one holds it; `None` when someone does. A lease whose
    /// holder dies (its process killed, its connection lost) is free again within the
    /// backend's detection delay.
    async fn try_lease(&self, name: &str) -> Result<Option<Box<dyn Lease>>>;
}
