//! Handlers registered where they are written: `#[command_handler]` submits a
//! [`Registration`] to a program-wide list (the `inventory` crate: a linker section, no
//! start-up code), and [`CommandBusBuilder::discover`](crate::CommandBusBuilder::discover)
//! adds every one; `build` then refuses a command type with two handlers.

use crate::bus::CommandBusBuilder;

/// One handler written with `#[command_handler]`.
#[derive(Debug)]
pub struct Registration {
    /// Where it was written (`module::function`), for errors.
    pub name: &'static str,
    /// Adds the handler to a bus being built.
    pub register: fn(CommandBusBuilder) -> CommandBusBuilder,
}

inventory::collect!(Registration);
