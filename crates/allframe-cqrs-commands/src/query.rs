//! The query bus: queries and their handlers registered by type, returning typed results
//! from read models.

use std::any::{Any, TypeId};
use std::sync::Arc;

use allframe_cqrs_core::async_trait;

use crate::context::{State, StateMap};
use crate::error::RegistrationError;
use crate::table::Table;

/// A question to a read model, answered with `Output`.
pub trait Query: Send + Sync + 'static {
    /// The stable name (errors, logs).
    const NAME: &'static str;
    /// The answer.
    type Output: Send + 'static;
    /// What answering may fail with.
    type Error: std::error::Error + Send + Sync + 'static;
}

/// Answers one query type.
#[async_trait]
pub trait QueryHandler<Q: Query>: Send + Sync + 'static {
    /// The answer to `query`.
    async fn handle(&self, query: Q, ctx: &QueryContext) -> Result<Q::Output, Q::Error>;
}

/// What a query handler gets beside the query: the bus's shared services (cheap to clone).
#[derive(Debug, Clone)]
pub struct QueryContext {
    state: Arc<StateMap>,
}

impl QueryContext {
    /// The shared service of type `T`, if the bus was given one.
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<State<T>> {
        self.state.get::<T>()
    }
}

/// What a query can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError<E> {
    /// No handler is registered for the query type.
    #[error("no handler is registered for query {query}")]
    NoHandler {
        /// The query's name.
        query: &'static str,
    },
    /// The handler failed.
    #[error("query {query} failed: {error}")]
    Failed {
        /// The query's name.
        query: &'static str,
        /// The handler's error.
        error: E,
    },
}

/// An async function `Fn(Q, QueryContext) -> Result<Q::Output, Q::Error>` is a query handler.
#[async_trait]
impl<Q, F, Fut> QueryHandler<Q> for F
where
    Q: Query,
    F: Fn(Q, QueryContext) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Q::Output, Q::Error>> + Send,
{
    async fn handle(&self, query: Q, ctx: &QueryContext) -> Result<Q::Output, Q::Error> {
        self(query, ctx.clone()).await
    }
}

/// The registered handlers: each query type's name and its `Arc<dyn QueryHandler<Q>>`.
type Handlers = Table<TypeId, (&'static str, Box<dyn Any + Send + Sync>)>;

/// Sends queries to their handlers.
#[derive(Clone)]
pub struct QueryBus {
    handlers: Arc<Handlers>,
    state: Arc<StateMap>,
}

impl std::fmt::Debug for QueryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.handlers.values().map(|(name, _)| *name).collect();
        f.debug_struct("QueryBus").field("queries", &names).finish()
    }
}

/// Wires a [`QueryBus`].
#[derive(Default)]
pub struct QueryBusBuilder {
    handlers: Vec<(TypeId, &'static str, Box<dyn Any + Send + Sync>)>,
    state: StateMap,
}

impl std::fmt::Debug for QueryBusBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryBusBuilder").field("handlers", &self.handlers.len()).finish_non_exhaustive()
    }
}

impl QueryBus {
    /// A builder.
    pub fn builder() -> QueryBusBuilder {
        QueryBusBuilder::default()
    }

    /// Answers `query` with its handler.
    pub async fn query<Q: Query>(&self, query: Q) -> Result<Q::Output, QueryError<Q::Error>> {
        let handler = self
            .handlers
            .get(&TypeId::of::<Q>())
            .and_then(|(_, handler)| handler.downcast_ref::<Arc<dyn QueryHandler<Q>>>())
            .ok_or(QueryError::NoHandler { query: Q::NAME })?;
        let ctx = QueryContext { state: Arc::clone(&self.state) };
        handler.handle(query, &ctx).await.map_err(|error| QueryError::Failed { query: Q::NAME, error })
    }
}

impl QueryBusBuilder {
    /// Registers the handler of query type `Q`.
    pub fn handler<Q: Query, H: QueryHandler<Q>>(mut self, handler: H) -> Self {
        let handler: Arc<dyn QueryHandler<Q>> = Arc::new(handler);
        self.handlers.push((TypeId::of::<Q>(), Q::NAME, Box::new(handler)));
        self
    }

    /// Gives handlers a shared service of type `T` (a read model, a connection pool).
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(value);
        self
    }

    /// Checks that no query type has two handlers, and builds the bus.
    pub fn build(self) -> Result<QueryBus, RegistrationError> {
        let mut handlers = Handlers::default();
        for (id, name, handler) in self.handlers {
            if handlers.insert(id, (name, handler)).is_some() {
                return Err(RegistrationError::DuplicateQueryHandler { query: name });
            }
        }
        Ok(QueryBus { handlers: Arc::new(handlers), state: Arc::new(self.state) })
    }
}
