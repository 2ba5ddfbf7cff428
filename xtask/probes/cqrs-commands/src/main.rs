//! Size probe: an application on the command bus, with the feature `cqrs` alone: a command
//! with field checks (written by hand; garde's are the `cqrs-validation` probe), its
//! `#[command_handler]`, a dispatch with an idempotency key, and a query.

use std::sync::Arc;

use allframe::cqrs::*;

include!("../../counter.rs");

#[derive(serde::Serialize, serde::Deserialize)]
struct Bump {
    name: String,
    by: u32,
}

impl Command for Bump {
    const NAME: &'static str = "Bump";
    type Error = Full;
    fn stream_id(&self) -> String {
        format!("counter-{}", self.name)
    }
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::new();
        if self.name.is_empty() || self.name.len() > 32 {
            errors.push("name", "length", "length is lower than 1 or greater than 32");
        }
        if !(1..=100).contains(&self.by) {
            errors.push("by", "range", "greater than 100 or lower than 1");
        }
        errors.into_result()
    }
}

include!("../../commands_app.rs");
