//! The conformance suite with group commit off (`group_commit(0)`): every append is its own
//! statement (`append_events`), the path a group's appends also take when the group fails.

mod common;

allframe_cqrs_testkit::conformance_suite!(optional: common::fresh_with(|b| b.group_commit(0)));
