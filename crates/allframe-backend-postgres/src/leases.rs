//! Leases across processes ([`Leases`]): a session-level advisory lock per name, held on a
//! connection of its own. PostgreSQL frees it when that session ends, which it sees at once
//! when the holder's process dies (its socket is closed), so a standby takes over within its
//! polling interval.

use allframe_cqrs_core::{EventId, Lease, Leases, Result, async_trait};
use sqlx::PgConnection;
use sqlx::postgres::PgPool;

use crate::{PostgresBackend, errors};

/// The leases of one schema: every application connected to it shares them.
#[derive(Clone, Debug)]
pub struct PgLeases {
    pool: PgPool,
    schema: String,
}

/// A held advisory lock; dropping it closes its connection, which frees the lock.
#[derive(Debug)]
struct PgLease {
    _connection: PgConnection,
}

impl Lease for PgLease {}

impl PostgresBackend {
    /// The leases of this backend's schema, for a projection registry
    /// (`ProjectionRegistry::with_leases`): each projection then runs in one application
    /// instance at a time, and another takes it over when that one dies.
    pub fn leases(&self) -> PgLeases {
        PgLeases { pool: self.inner.pool.clone(), schema: self.inner.schema.clone() }
    }
}

/// The advisory lock key of `name` in `schema`: 64 bits of a hash that never changes.
pub(crate) fn lock_key(schema: &str, name: &str) -> i64 {
    let id = EventId::derived("allframe.lease.v1", &format!("{schema}\0{name}"), 0);
    let mut first = [0u8; 8];
    first.copy_from_slice(&id.as_bytes()[..8]);
    i64::from_be_bytes(first)
}

#[async_trait]
impl Leases for PgLeases {
    async fn try_lease(&self, name: &str) -> Result<Option<Box<dyn Lease>>> {
        let mut connection = self.pool.acquire().await.map_err(|e| errors::map("try_lease", e))?;
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(lock_key(&self.schema, name))
            .fetch_one(&mut *connection)
            .await
            .map_err(|e| errors::map("try_lease", e))?;
        if !taken {
            return Ok(None);
        }
        // The lock lives as long as this session: take the connection out of the pool.
        Ok(Some(Box::new(PgLease { _connection: connection.detach() })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_schema_and_name_and_never_change() {
        // Every version of the library must lock the same key, or two would both run.
        assert_eq!(lock_key("allframe", "orders"), -9_065_180_758_487_759_456);
        assert_ne!(lock_key("allframe", "orders"), lock_key("other", "orders"));
        assert_ne!(lock_key("allframe", "orders"), lock_key("allframe", "orders2"));
    }
}
