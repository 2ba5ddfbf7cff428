//! Contract point 14 in one place: a named checkpoint is saved only over the position its
//! saver expected. Backends store and read positions (their primitive: a map, a small file, a
//! key, a row); [`compare_and_set`] checks a save (the policy), so every backend refuses the
//! same saves with the same error.

use crate::error::{Error, Result};
use crate::types::Limits;

/// Checks a save of checkpoint `name` from `expected` to `position`, where `actual` is what
/// it holds now and `head` is the log's last position. Call it with the checkpoint locked
/// (or in the transaction that writes it); store `position` only when it returns `Ok`.
pub fn compare_and_set(
    limits: &Limits,
    name: &str,
    expected: Option<u64>,
    actual: Option<u64>,
    position: u64,
    head: u64,
) -> Result<()> {
    limits.check_checkpoint(name, position, head)?;
    if actual != expected {
        return Err(Error::CheckpointConflict { name: name.to_owned(), expected, actual });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_save_needs_the_expected_position_a_good_name_and_a_position_within_the_log() {
        let limits = Limits::default();
        assert!(compare_and_set(&limits, "orders", None, None, 5, 10).is_ok());
        assert!(compare_and_set(&limits, "orders", Some(5), Some(5), 10, 10).is_ok());
        assert!(compare_and_set(&limits, "orders", Some(5), Some(5), 0, 10).is_ok(), "a reset to 0");
        let conflict = compare_and_set(&limits, "orders", None, Some(5), 6, 10).unwrap_err();
        assert!(
            matches!(&conflict, Error::CheckpointConflict { name, expected: None, actual: Some(5) } if name == "orders"),
            "{conflict:?}"
        );
        assert_eq!(
            conflict.to_string(),
            "checkpoint `orders` holds Some(5), not the expected None (None: never saved)"
        );
        for (name, position) in [("", 1), ("a\0b", 1), ("orders", 11)] {
            let refused = compare_and_set(&limits, name, None, None, position, 10).unwrap_err();
            assert!(matches!(refused, Error::InvalidCheckpoint { .. }), "{name:?} at {position}: {refused:?}");
        }
    }
}
