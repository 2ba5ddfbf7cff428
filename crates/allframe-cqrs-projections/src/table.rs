//! A read model's rows with the lookup keys it declares: rows by primary key, and for each
//! declared index the rows by a value computed from them, kept in step on every change.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Rows by key `K`, with secondary indexes declared up front
/// ([`with_index`](Self::with_index)): a query finds rows by an indexed value without a scan.
///
/// ```
/// use allframe_cqrs_projections::IndexedTable;
///
/// #[derive(Clone, Debug, PartialEq)]
/// struct Account { owner: String, city: String, balance: u64 }
///
/// let mut accounts = IndexedTable::new()
///     .with_index("owner", |account: &Account| vec![account.owner.clone()])
///     .with_index("city", |account: &Account| vec![account.city.clone()]);
/// accounts.upsert("a-1", Account { owner: "ada".into(), city: "London".into(), balance: 5 });
/// accounts.upsert("a-2", Account { owner: "alan".into(), city: "London".into(), balance: 7 });
/// accounts.update(&"a-1", |account| account.city = "Paris".into());
///
/// let in_london: Vec<_> = accounts.find("city", "London").map(|(id, _)| *id).collect();
/// assert_eq!(in_london, ["a-2"]);
/// assert_eq!(accounts.find("owner", "ada").next().map(|(_, a)| a.city.as_str()), Some("Paris"));
/// ```
pub struct IndexedTable<K, V> {
    rows: BTreeMap<K, V>,
    indexes: Vec<Index<K, V>>,
}

/// The values a row is found under in one index.
type IndexKeys<V> = Box<dyn Fn(&V) -> Vec<String> + Send + Sync>;

struct Index<K, V> {
    name: &'static str,
    keys: IndexKeys<V>,
    entries: BTreeMap<String, BTreeSet<K>>,
}

impl<K: Ord + Clone, V> Default for IndexedTable<K, V> {
    fn default() -> Self {
        IndexedTable { rows: BTreeMap::new(), indexes: Vec::new() }
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for IndexedTable<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.indexes.iter().map(|index| index.name).collect();
        f.debug_struct("IndexedTable").field("rows", &self.rows).field("indexes", &names).finish()
    }
}

impl<K: Ord + Clone, V> IndexedTable<K, V> {
    /// An empty table without indexes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares the index `name`: each row is found under every value `keys` gives for it
    /// (none, one, or several). Declare indexes before adding rows, or the rows already there
    /// are indexed now.
    pub fn with_index(mut self, name: &'static str, keys: impl Fn(&V) -> Vec<String> + Send + Sync + 'static) -> Self {
        let mut index = Index { name, keys: Box::new(keys), entries: BTreeMap::new() };
        for (key, row) in &self.rows {
            index.insert(key, row);
        }
        self.indexes.push(index);
        self
    }

    /// The row of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.rows.get(key)
    }

    /// Stores `row` under `key`, replacing the row there; returns the one replaced.
    pub fn upsert(&mut self, key: impl Into<K>, row: V) -> Option<V> {
        let key = key.into();
        let old = self.remove(&key);
        for index in &mut self.indexes {
            index.insert(&key, &row);
        }
        self.rows.insert(key, row);
        old
    }

    /// Changes the row of `key` with `change`, keeping the indexes in step; whether there was
    /// one.
    pub fn update(&mut self, key: &K, change: impl FnOnce(&mut V)) -> bool {
        let Some(mut row) = self.remove(key) else { return false };
        change(&mut row);
        self.upsert(key.clone(), row);
        true
    }

    /// Removes the row of `key`.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let row = self.rows.remove(key)?;
        for index in &mut self.indexes {
            index.remove(key, &row);
        }
        Some(row)
    }

    /// The rows found under `value` in index `index`, in key order; none when the index was
    /// not declared.
    pub fn find<'a>(&'a self, index: &str, value: &str) -> impl Iterator<Item = (&'a K, &'a V)> + 'a {
        let keys =
            self.indexes.iter().find(|declared| declared.name == index).and_then(|index| index.entries.get(value));
        keys.into_iter().flatten().filter_map(move |key| self.rows.get_key_value(key))
    }

    /// Every row, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.rows.iter()
    }

    /// How many rows there are.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl<K: Ord + Clone, V> Index<K, V> {
    fn insert(&mut self, key: &K, row: &V) {
        for value in (self.keys)(row) {
            self.entries.entry(value).or_default().insert(key.clone());
        }
    }

    fn remove(&mut self, key: &K, row: &V) {
        for value in (self.keys)(row) {
            if let Some(keys) = self.entries.get_mut(&value) {
                keys.remove(key);
                if keys.is_empty() {
                    self.entries.remove(&value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Order {
        customer: String,
        tags: Vec<String>,
    }

    fn order(customer: &str, tags: &[&str]) -> Order {
        Order { customer: customer.into(), tags: tags.iter().map(|tag| (*tag).to_owned()).collect() }
    }

    fn found(table: &IndexedTable<u32, Order>, index: &str, value: &str) -> Vec<u32> {
        table.find(index, value).map(|(key, _)| *key).collect()
    }

    #[test]
    fn indexes_follow_every_change_and_match_a_scan() {
        let mut table = IndexedTable::new()
            .with_index("customer", |order: &Order| vec![order.customer.clone()])
            .with_index("tag", |order: &Order| order.tags.clone());
        table.upsert(1u32, order("ada", &["gift", "express"]));
        table.upsert(2u32, order("alan", &["express"]));
        table.upsert(3u32, order("ada", &[]));
        assert_eq!(found(&table, "customer", "ada"), [1, 3]);
        assert_eq!(found(&table, "tag", "express"), [1, 2]);

        table.update(&1, |order| order.tags.retain(|tag| tag != "express"));
        table.upsert(3u32, order("grace", &["express"]));
        assert!(table.remove(&2).is_some());
        assert!(!table.update(&9, |_| unreachable!("no row 9")));

        // Every index equals what a scan of the rows finds.
        for (index, keys) in [
            ("customer", Box::new(|o: &Order| vec![o.customer.clone()]) as Box<dyn Fn(&Order) -> Vec<String>>),
            ("tag", Box::new(|o: &Order| o.tags.clone())),
        ] {
            for value in ["ada", "alan", "grace", "gift", "express"] {
                let scanned: Vec<u32> =
                    table.iter().filter(|(_, row)| keys(row).iter().any(|v| v == value)).map(|(k, _)| *k).collect();
                assert_eq!(found(&table, index, value), scanned, "{index} = {value}");
            }
        }
        assert_eq!(found(&table, "no such index", "ada"), Vec::<u32>::new());
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn an_index_declared_late_covers_the_rows_already_there() {
        let mut table = IndexedTable::new();
        table.upsert(1u32, order("ada", &[]));
        let table = table.with_index("customer", |order: &Order| vec![order.customer.clone()]);
        assert_eq!(found(&table, "customer", "ada"), [1]);
    }
}
