//! Workspace-level tests live beside this file (`seed_examples.rs`, `typed_store.rs`, ...).
//! This library only makes the Rust examples of the README and of the application layer's
//! guides (`docs/COMMANDS.md`, `docs/PROJECTIONS.md`, `docs/VERSIONING.md`, `docs/SAGAS.md`) into doctests, so
//! they stay true.

#[doc = include_str!("../README.md")]
mod readme {}

#[doc = include_str!("../docs/COMMANDS.md")]
mod commands_guide {}

#[doc = include_str!("../docs/PROJECTIONS.md")]
mod projections_guide {}

#[doc = include_str!("../docs/VERSIONING.md")]
mod versioning_guide {}

#[doc = include_str!("../docs/SAGAS.md")]
mod sagas_guide {}
