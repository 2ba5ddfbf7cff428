//! Hot aggregates kept in memory between commands: bounded, checked against the stream's
//! version before use, dropped after a conflict.
//!
//! An entry is taken out while a command runs and put back with the new state and version
//! after its append succeeds, so two concurrent commands on one aggregate never share a state
//! (the second loads from the store). Before an entry is used its version is compared with the
//! stream's: a stream that moved on (another process, another bus) has its new events applied
//! on top, so a cached state is never stale.
//!
//! The map itself is not generic and sits behind a trait object made only by
//! [`AggregateCache::new`], which only `CommandBusBuilder::aggregate_cache` calls: a program
//! whose bus has no cache links none of it.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

/// A type-erased aggregate state: a `Box<Option<A>>`, empty while a command runs on it.
type Slot = Box<dyn Any + Send>;

/// A bounded map from stream id to the aggregate state last written there. The typed half:
/// each method is a few lines around one call into the untyped map.
pub(crate) struct AggregateCache {
    map: Box<dyn Slots>,
}

/// The untyped half: the map, its clock and its counters.
trait Slots: Send + Sync {
    /// Calls `take` on the slot of `stream`; when it took the state, returns the slot's version.
    fn take(&self, stream: &str, take: &mut dyn FnMut(&mut Slot) -> bool) -> Option<u64>;
    /// Calls `fill` on the slot of `stream` (a new, empty one if there is none), which puts
    /// the state at `version` in it.
    fn put(&self, stream: &str, version: u64, fill: &mut dyn FnMut(&mut Slot));
    /// (hits, misses, aggregates held, capacity).
    fn counters(&self) -> (u64, u64, usize, usize);
}

impl AggregateCache {
    /// A cache of at most `capacity` aggregates (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        AggregateCache { map: Box::new(Lru { capacity: capacity.max(1), inner: Mutex::new(Inner::default()) }) }
    }

    /// Takes the state of `stream` out of the cache, with the version it includes.
    pub(crate) fn take<A: Send + 'static>(&self, stream: &str) -> Option<(A, u64)> {
        let mut state = None;
        let version = self.map.take(stream, &mut |slot| {
            state = slot.downcast_mut::<Option<A>>().and_then(Option::take);
            state.is_some()
        })?;
        state.map(|state| (state, version))
    }

    /// Puts the state of `stream` at `version` back, evicting the least recently stored entry
    /// when full.
    pub(crate) fn put<A: Send + 'static>(&self, stream: &str, state: A, version: u64) {
        let mut state = Some(state);
        self.map.put(stream, version, &mut |slot| match slot.downcast_mut::<Option<A>>() {
            Some(typed) => *typed = state.take(),
            None => *slot = Box::new(state.take()),
        });
    }

    /// (hits, misses, aggregates held) so far; a slot whose state is out does not count.
    pub(crate) fn counters(&self) -> (u64, u64, usize) {
        let (hits, misses, held, _) = self.map.counters();
        (hits, misses, held)
    }
}

impl std::fmt::Debug for AggregateCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (hits, misses, entries, capacity) = self.map.counters();
        f.debug_struct("AggregateCache")
            .field("capacity", &capacity)
            .field("entries", &entries)
            .field("hits", &hits)
            .field("misses", &misses)
            .finish()
    }
}

/// One cached aggregate. The entry and its box stay while the state is out, so that putting
/// it back allocates nothing.
struct Entry {
    state: Slot,
    /// Whether the box holds a state (false while a command has it, or after a conflict).
    occupied: bool,
    version: u64,
    used: u64,
}

/// The map, evicting the least recently stored entry when full.
struct Lru {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Every entry's stream by when it was last stored (`Entry::used`), oldest first: an
    /// eviction takes the first, whatever the capacity.
    by_age: BTreeMap<u64, String>,
    clock: u64,
    hits: u64,
    misses: u64,
}

impl Slots for Lru {
    fn take(&self, stream: &str, take: &mut dyn FnMut(&mut Slot) -> bool) -> Option<u64> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let taken = inner.entries.get_mut(stream).filter(|entry| entry.occupied).and_then(|entry| {
            take(&mut entry.state).then(|| {
                entry.occupied = false;
                entry.version
            })
        });
        if taken.is_some() {
            inner.hits += 1;
        } else {
            inner.misses += 1;
        }
        taken
    }

    fn put(&self, stream: &str, version: u64, fill: &mut dyn FnMut(&mut Slot)) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Inner { entries, by_age, clock, .. } = &mut *inner;
        *clock += 1;
        let used = *clock;
        if let Some(entry) = entries.get_mut(stream) {
            fill(&mut entry.state);
            entry.occupied = true;
            entry.version = version;
            if let Some(key) = by_age.remove(&entry.used) {
                by_age.insert(used, key);
            }
            entry.used = used;
            return;
        }
        if entries.len() >= self.capacity
            && let Some((_, oldest)) = by_age.pop_first()
        {
            entries.remove(&oldest);
        }
        let mut state: Slot = Box::new(());
        fill(&mut state);
        entries.insert(stream.to_owned(), Entry { state, occupied: true, version, used });
        by_age.insert(used, stream.to_owned());
    }

    fn counters(&self) -> (u64, u64, usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let held = inner.entries.values().filter(|entry| entry.occupied).count();
        (inner.hits, inner.misses, held, self.capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_taken_out_and_the_oldest_is_evicted() {
        let cache = AggregateCache::new(2);
        cache.put("a", 1u32, 1);
        cache.put("b", 2u32, 2);
        assert_eq!(cache.take::<u32>("a"), Some((1, 1)));
        assert_eq!(cache.take::<u32>("a"), None, "taken out while a command runs");
        cache.put("a", 10u32, 3);
        cache.put("c", 3u32, 1);
        assert_eq!(cache.take::<u32>("b"), None, "b was the least recently stored");
        assert_eq!(cache.take::<u64>("c"), None, "another type is a miss");
        assert_eq!(cache.take::<u32>("a"), Some((10, 3)));
    }

    #[test]
    fn eviction_follows_the_order_of_storing_over_many_entries() {
        let capacity = 64;
        let cache = AggregateCache::new(capacity);
        for round in 0..10u64 {
            for n in 0..100u64 {
                // Each round stores the streams in another order; the last `capacity` stored stay.
                let stream = format!("s{}", (n * 37 + round * 11) % 100);
                cache.put(&stream, n, round);
            }
            let stored_last: Vec<String> =
                (100 - capacity as u64..100).map(|n| format!("s{}", (n * 37 + round * 11) % 100)).collect();
            let (_, _, held) = cache.counters();
            assert_eq!(held, capacity, "round {round}");
            for stream in &stored_last {
                let (_, version) = cache.take::<u64>(stream).expect("one of the last stored");
                assert_eq!(version, round);
            }
            for n in 0..100 - capacity as u64 {
                let stream = format!("s{}", (n * 37 + round * 11) % 100);
                assert_eq!(cache.take::<u64>(&stream), None, "{stream} was evicted in round {round}");
            }
            for stream in &stored_last {
                cache.put(stream, 0u64, round);
            }
        }
    }
}
