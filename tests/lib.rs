//! Workspace-level tests live beside this file (`seed_examples.rs`, `typed_store.rs`, ...).
//! This library only makes the README's Rust examples into doctests, so they stay true.

#[doc = include_str!("../README.md")]
mod readme {}
