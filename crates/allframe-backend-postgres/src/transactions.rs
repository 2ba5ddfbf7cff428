//! Transactional projections: a consumer writes its read model in the transaction that moves
//! its checkpoint ([`CheckpointTransactions`]), so a crash never applies an event twice or
//! skips one.

use allframe_cqrs_core::{CheckpointTransactions, Error, EventStoreBackend, Result, async_trait};

use crate::{PostgresBackend, errors};

/// The transaction a transactional projection writes in: sqlx's, on this backend's pool.
pub type PgTransaction = sqlx::Transaction<'static, sqlx::Postgres>;

#[async_trait]
impl CheckpointTransactions for PostgresBackend {
    type Transaction = PgTransaction;

    async fn begin(&self) -> Result<PgTransaction> {
        self.inner.pool.begin().await.map_err(|e| errors::map("begin", e))
    }

    async fn commit_with_checkpoint(
        &self,
        mut transaction: PgTransaction,
        name: &str,
        expected: Option<u64>,
        position: u64,
    ) -> Result<()> {
        let head = self.head_position().await?;
        self.inner.limits.check_checkpoint(name, position, head)?;
        if !self.write_checkpoint(&mut *transaction, name, expected, position).await? {
            drop(transaction);
            let actual = self.load_checkpoint(name).await?;
            return Err(Error::CheckpointConflict { name: name.to_owned(), expected, actual });
        }
        transaction.commit().await.map_err(|e| errors::map("commit", e))
    }
}
