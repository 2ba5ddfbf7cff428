//! A power some backends add (PostgreSQL): a consumer of the log writes its own data in the
//! transaction that moves its checkpoint, so that a crash never applies an event twice or
//! skips one (exactly-once where the read model lives with the store).

use crate::backend::EventStoreBackend;
use crate::error::Result;

/// A backend whose checkpoints can be saved in a transaction the caller also writes in.
///
/// Dropping a transaction without [`commit_with_checkpoint`](Self::commit_with_checkpoint)
/// rolls it back.
#[async_trait::async_trait]
pub trait CheckpointTransactions: EventStoreBackend {
    /// The open transaction handed to the consumer (for PostgreSQL, sqlx's).
    type Transaction: Send + 'static;

    /// Opens a transaction.
    async fn begin(&self) -> Result<Self::Transaction>;

    /// Saves checkpoint `name` from `expected` to `position` in `transaction` (compare-and-set
    /// as contract point 14 says, with the same errors), then commits it: the consumer's
    /// writes and the checkpoint land together or not at all.
    async fn commit_with_checkpoint(
        &self,
        transaction: Self::Transaction,
        name: &str,
        expected: Option<u64>,
        position: u64,
    ) -> Result<()>;
}
