//! The derives and attributes of AllFrame CQRS (re-exported by `allframe::cqrs`):
//!
//! * `#[derive(Event)]`: `event_type` and `EVENT_TYPES` from each variant's serde name (so
//!   switching from an empty `impl Event` keeps every stored name), renamable with
//!   `#[event(name = "...")]`; `#[event(version = N)]` sets the schema version.
//! * `#[command(...)]` on a struct: its `Command` impl (name, stream, refusal type,
//!   validation, JSON Schema).
//! * `#[command_handler]` on a function: a handler type that implements the handler trait,
//!   registered for `CommandBusBuilder::discover`.
//!
//! Expansions name the `allframe::cqrs` module; `crate = "path"` names another
//! (`allframe_cqrs_core` for `Event` without the facade, `allframe_cqrs_commands` for the
//! others).

use proc_macro::TokenStream;

mod command;
mod event;
mod handler;
mod names;

/// Implements `Event`: see the crate docs.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    event::derive(input).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Implements `Command` for the struct it is on.
///
/// `#[command(name = "OpenAccount", stream = "account-{id}", error = BankError, validate, schema)]`:
/// every argument is optional but the stream, which is a format string over the struct's
/// fields or a field marked `#[command(stream)]`. Place it before `#[derive(...)]`.
#[proc_macro_attribute]
pub fn command(args: TokenStream, item: TokenStream) -> TokenStream {
    command::expand(args.into(), item.into()).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Turns a handler function into a handler type, registered for `CommandBusBuilder::discover`.
///
/// `fn deposit(account: &Account, cmd: &Deposit, ...)` (state, then command) is an aggregate
/// handler; `fn register(cmd: &Register, ...)` (the command alone) a plain handler. Other
/// parameters are `&Context` and `State<T>` services, in any order. The type is named after
/// the function (`DepositHandler`), so it can also be registered by hand.
#[proc_macro_attribute]
pub fn command_handler(args: TokenStream, item: TokenStream) -> TokenStream {
    handler::expand(args.into(), item.into()).unwrap_or_else(syn::Error::into_compile_error).into()
}
