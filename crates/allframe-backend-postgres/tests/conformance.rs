//! The conformance suite against a real PostgreSQL server, JSONB payloads (the default);
//! each test in a schema of its own. Skips with a notice when no server is reachable
//! (fails instead under `CI=true`).

mod common;

allframe_cqrs_testkit::conformance_suite!(optional: common::fresh());
