//! A small map kept sorted by key, for what the buses register at start-up (a few to a few
//! hundred entries, written once, then only read). A lookup is a binary search, and the binary
//! carries one short search per key type instead of a hash map's code for every key and value
//! type (the command bus is budgeted in kilobytes, `xtask/size-budgets.toml`).

use std::borrow::Borrow;

/// Entries sorted by key, each key once.
#[derive(Clone)]
pub(crate) struct Table<K, V>(Vec<(K, V)>);

impl<K, V> Default for Table<K, V> {
    fn default() -> Self {
        Table(Vec::new())
    }
}

impl<K: Ord + Copy, V> Table<K, V> {
    /// The value under `key` (any form the key borrows as: a `&str` for `&'static str` keys).
    pub(crate) fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.0.binary_search_by(|(k, _)| k.borrow().cmp(key)).ok().map(|at| &self.0[at].1)
    }

    /// Whether `key` has a value.
    pub(crate) fn contains<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.get(key).is_some()
    }

    /// Puts `value` under `key`, returning the value it replaces.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.0.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, value)),
            Err(at) => {
                self.0.insert(at, (key, value));
                None
            }
        }
    }

    /// The keys, in order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = K> + '_ {
        self.0.iter().map(|(k, _)| *k)
    }

    /// The values, in key order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }

    /// How many entries there are.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn finds_what_was_inserted_in_any_order_and_replaces() {
        let mut table = Table::default();
        for key in [5, 1, 9, 3, 7] {
            assert_eq!(table.insert(key, key * 10), None);
        }
        assert_eq!(table.insert(3, 33), Some(30));
        assert_eq!(table.keys().collect::<Vec<_>>(), [1, 3, 5, 7, 9]);
        assert_eq!((table.get(&3), table.get(&4), table.len()), (Some(&33), None, 5));
        assert!(table.contains(&9) && !table.contains(&0));
    }
}
