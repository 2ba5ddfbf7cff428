//! Size probe: the `cqrs-commands` probe with its command's checks written as garde rules
//! (`#[command(validate)]`, features `cqrs` and `cqrs-validation`): what garde adds.

use std::sync::Arc;

use allframe::cqrs::*;

include!("../../counter.rs");

#[command(stream = "counter-{name}", error = Full, validate)]
#[derive(serde::Serialize, serde::Deserialize, garde::Validate)]
struct Bump {
    #[garde(length(min = 1, max = 32))]
    name: String,
    #[garde(range(min = 1, max = 100))]
    by: u32,
}

include!("../../commands_app.rs");
