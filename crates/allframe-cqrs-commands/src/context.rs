//! What a handler gets beside the command: shared services ([`State`]), the ids of the
//! dispatch, and headers it may add to the events it produces.

use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use allframe_cqrs_core::EventId;

use crate::table::Table;

/// Typed shared services, one per type, given to the bus at start-up
/// ([`CommandBusBuilder::state`](crate::CommandBusBuilder::state)).
#[derive(Clone, Default)]
pub struct StateMap(Table<TypeId, Arc<dyn Any + Send + Sync>>);

impl std::fmt::Debug for StateMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMap").field("services", &self.0.len()).finish()
    }
}

impl StateMap {
    /// Adds (or replaces) the service of type `T`.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.insert_shared(Arc::new(value));
    }

    /// Adds (or replaces) the service of type `T`, already shared with the caller.
    pub fn insert_shared<T: Send + Sync + 'static>(&mut self, value: Arc<T>) {
        self.0.insert(TypeId::of::<T>(), value);
    }

    /// Whether a service of the type with this id was given.
    pub fn contains(&self, id: TypeId) -> bool {
        self.0.contains(&id)
    }

    /// The service of type `T`, if given.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<State<T>> {
        let value = Arc::clone(self.0.get(&TypeId::of::<T>())?);
        value.downcast::<T>().ok().map(State)
    }
}

/// A shared service of type `T`, the way axum's `State<T>` hands one to a handler: a handler
/// function written with `#[command_handler]` takes `State<Db>` parameters, and the bus fills
/// them; `CommandBusBuilder::build` refuses a bus that was not given one
/// (`RegistrationError::MissingState`).
#[derive(Debug)]
pub struct State<T>(pub Arc<T>);

impl<T> Clone for State<T> {
    fn clone(&self) -> Self {
        State(Arc::clone(&self.0))
    }
}

impl<T> std::ops::Deref for State<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// One dispatch as a handler sees it.
#[derive(Debug)]
pub struct Context {
    command: &'static str,
    command_id: EventId,
    correlation_id: EventId,
    state: Arc<StateMap>,
    headers: Mutex<BTreeMap<String, String>>,
}

impl Context {
    pub(crate) fn new(
        command: &'static str,
        command_id: EventId,
        correlation_id: EventId,
        state: Arc<StateMap>,
        headers: BTreeMap<String, String>,
    ) -> Self {
        Context { command, command_id, correlation_id, state, headers: Mutex::new(headers) }
    }

    /// The command's name.
    pub fn command(&self) -> &'static str {
        self.command
    }

    /// The command's id: the causation id of every event it produces.
    pub fn command_id(&self) -> EventId {
        self.command_id
    }

    /// The request's correlation id, carried by every event the command produces.
    pub fn correlation_id(&self) -> EventId {
        self.correlation_id
    }

    /// The shared service of type `T`, if the bus was given one.
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<State<T>> {
        self.state.get::<T>()
    }

    /// Adds a header to every event this dispatch produces.
    pub fn add_header(&self, key: impl Into<String>, value: impl Into<String>) {
        self.headers.lock().unwrap_or_else(PoisonError::into_inner).insert(key.into(), value.into());
    }

    /// The headers the events will carry.
    pub fn headers(&self) -> BTreeMap<String, String> {
        self.headers.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_found_by_type() {
        let mut map = StateMap::default();
        map.insert(41u32);
        map.insert(String::from("db"));
        assert_eq!(*map.get::<u32>().unwrap(), 41);
        assert_eq!(map.get::<String>().unwrap().as_str(), "db");
        assert!(map.get::<u64>().is_none());
    }
}
