//! The two kinds of command handler, and closures as handlers.
//!
//! * An [`AggregateHandler`] decides from the aggregate's current state: the bus loads it
//!   (snapshot plus events, or the aggregate cache), asks the handler for events, appends them
//!   expecting the version it loaded, and decides again after a conflict.
//! * A [`Handler`] (a plain handler) decides without loading anything; the bus appends what
//!   it returns to the command's stream without a version check.
//!
//! Both are async and get the [`Context`]; a handler is run again after a conflict, so it
//! should not act outside the events it returns.

use std::any::TypeId;
use std::marker::PhantomData;

use allframe_cqrs_core::{Aggregate, Event, async_trait};

use crate::command::Command;
use crate::context::Context;

/// Decides a command from the aggregate's state.
#[async_trait]
pub trait AggregateHandler<C: Command>: Send + Sync + 'static {
    /// The aggregate the command acts on.
    type Aggregate: Aggregate;

    /// The shared services the handler takes from its [`Context`], checked when the bus is
    /// built (`#[command_handler]` lists its `State<T>` parameters).
    fn required_state() -> Vec<(TypeId, &'static str)>
    where
        Self: Sized,
    {
        Vec::new()
    }

    /// The events the command produces from `state`, or the refusal.
    async fn handle(
        &self,
        state: &Self::Aggregate,
        command: &C,
        ctx: &Context,
    ) -> Result<Vec<<Self::Aggregate as Aggregate>::Event>, C::Error>;
}

/// Decides a command without loading state (a plain handler).
#[async_trait]
pub trait Handler<C: Command>: Send + Sync + 'static {
    /// The events it produces.
    type Event: Event;

    /// See [`AggregateHandler::required_state`].
    fn required_state() -> Vec<(TypeId, &'static str)>
    where
        Self: Sized,
    {
        Vec::new()
    }

    /// The events the command produces (appended to its stream), or the refusal.
    async fn handle(&self, command: &C, ctx: &Context) -> Result<Vec<Self::Event>, C::Error>;
}

/// A closure `Fn(&A, &C, &Context) -> Result<Vec<A::Event>, C::Error>` as an aggregate handler
/// (see [`decide`]).
pub struct Decide<A, F> {
    decide: F,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A, F> std::fmt::Debug for Decide<A, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decide").field("aggregate", &std::any::type_name::<A>()).finish()
    }
}

/// An aggregate handler from a decide function, the most common handler:
/// `builder.aggregate::<Deposit, _>(decide(|account: &Account, cmd: &Deposit, _ctx| ...))`.
pub fn decide<A, C, F>(decide: F) -> Decide<A, F>
where
    A: Aggregate,
    C: Command,
    F: Fn(&A, &C, &Context) -> Result<Vec<A::Event>, C::Error> + Send + Sync + 'static,
{
    Decide { decide, _aggregate: PhantomData }
}

#[async_trait]
impl<A, C, F> AggregateHandler<C> for Decide<A, F>
where
    A: Aggregate,
    C: Command,
    F: Fn(&A, &C, &Context) -> Result<Vec<A::Event>, C::Error> + Send + Sync + 'static,
{
    type Aggregate = A;

    async fn handle(&self, state: &A, command: &C, ctx: &Context) -> Result<Vec<A::Event>, C::Error> {
        (self.decide)(state, command, ctx)
    }
}

/// A closure `Fn(&C, &Context) -> Result<Vec<E>, C::Error>` as a plain handler (see [`plain`]).
pub struct Plain<E, F> {
    handle: F,
    _event: PhantomData<fn() -> E>,
}

impl<E, F> std::fmt::Debug for Plain<E, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plain").field("event", &std::any::type_name::<E>()).finish()
    }
}

/// A plain handler from a function: `builder.handler::<Register, _>(plain(|cmd: &Register, _ctx| ...))`.
pub fn plain<E, C, F>(handle: F) -> Plain<E, F>
where
    E: Event,
    C: Command,
    F: Fn(&C, &Context) -> Result<Vec<E>, C::Error> + Send + Sync + 'static,
{
    Plain { handle, _event: PhantomData }
}

#[async_trait]
impl<E, C, F> Handler<C> for Plain<E, F>
where
    E: Event,
    C: Command,
    F: Fn(&C, &Context) -> Result<Vec<E>, C::Error> + Send + Sync + 'static,
{
    type Event = E;

    async fn handle(&self, command: &C, ctx: &Context) -> Result<Vec<E>, C::Error> {
        (self.handle)(command, ctx)
    }
}
