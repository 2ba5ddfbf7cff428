//! The conformance suite on a durable AllSource store that is closed and reopened from disk
//! after every third write (append or snapshot), so each contract point is also checked
//! across restarts: everything a case reads back after a reopen was replayed from the log.

mod support;

allframe_cqrs_testkit::conformance_suite!(async { support::Reopening::open(3) });
