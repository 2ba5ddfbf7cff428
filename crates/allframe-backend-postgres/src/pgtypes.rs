//! Wire encodings for the two PostgreSQL types the backend writes without enabling sqlx's
//! `uuid` or `chrono` features: `uuid` (16 raw bytes) and `timestamptz` (microseconds since
//! 2000-01-01 UTC, big-endian).

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo};
use sqlx::{Encode, Postgres, Type};

/// An event id sent as a PostgreSQL `uuid`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PgUuid(pub(crate) [u8; 16]);

impl Type<Postgres> for PgUuid {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(2950))
    }
}

impl PgHasArrayType for PgUuid {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(2951))
    }
}

impl Encode<'_, Postgres> for PgUuid {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        buf.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }

    fn size_hint(&self) -> usize {
        16
    }
}

/// A time sent as a PostgreSQL `timestamptz`, clamped into PostgreSQL's range.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PgTimestamp(i64);

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 UTC).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
/// PostgreSQL's earliest timestamptz (4714-11-24 BC), in its own epoch.
const PG_MIN_US: i64 = -211_813_488_000_000_000;
/// PostgreSQL's latest timestamptz (294276-12-31), in its own epoch.
const PG_MAX_US: i64 = 9_223_371_331_199_999_999;

impl PgTimestamp {
    /// From microseconds since the Unix epoch (the core's `Timestamp`); times outside
    /// PostgreSQL's range are clamped (the exact time stays in the metadata column).
    pub(crate) fn from_unix_micros(micros: i64) -> Self {
        PgTimestamp(micros.saturating_sub(PG_EPOCH_OFFSET_US).clamp(PG_MIN_US, PG_MAX_US))
    }
}

impl Type<Postgres> for PgTimestamp {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(1184))
    }
}

impl PgHasArrayType for PgTimestamp {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(1185))
    }
}

impl Encode<'_, Postgres> for PgTimestamp {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        buf.extend_from_slice(&self.0.to_be_bytes());
        Ok(IsNull::No)
    }

    fn size_hint(&self) -> usize {
        8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_shift_to_the_postgres_epoch_and_clamp() {
        assert_eq!(PgTimestamp::from_unix_micros(PG_EPOCH_OFFSET_US).0, 0);
        assert_eq!(PgTimestamp::from_unix_micros(0).0, -PG_EPOCH_OFFSET_US);
        assert_eq!(PgTimestamp::from_unix_micros(i64::MAX).0, i64::MAX - PG_EPOCH_OFFSET_US);
        assert!(PgTimestamp::from_unix_micros(i64::MAX).0 <= PG_MAX_US);
        assert_eq!(PgTimestamp::from_unix_micros(i64::MIN).0, PG_MIN_US);
    }
}
