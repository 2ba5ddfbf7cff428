//! # AllFrame CQRS conformance suite
//!
//! One suite that every backend runs: each case is an `async fn` in [`cases`] that takes a
//! fresh, empty backend and checks one point of the contract stated on
//! [`EventStoreBackend`](allframe_cqrs_core::EventStoreBackend); [`model`] runs random
//! operation sequences against the backend and a reference model.
//!
//! A backend runs all of it with one macro call in its `tests/conformance.rs`:
//!
//! ```ignore
//! allframe_cqrs_testkit::conformance_suite!(async { my_backend::MyBackend::new() });
//! ```
//!
//! For a backend that may be unavailable (a server that is not running), give an
//! expression whose output is `Option<Backend>`; `None` skips each test with a notice:
//!
//! ```ignore
//! allframe_cqrs_testkit::conformance_suite!(optional: async { connect_or_none().await });
//! ```
//!
//! This crate is exempt from semver: cases are added as the contract grows.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod cases;
pub mod fixture;
pub mod golden;
pub mod history;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod migrate;
pub mod model;
pub mod reference;

#[doc(hidden)]
pub mod __private {
    pub use tokio;

    /// Runs a test body on a multi-threaded runtime (4 workers, so that races are real).
    pub fn block_on<F: std::future::Future<Output = ()>>(body: F) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(body);
    }

    /// Turns a factory's output into `Option<Backend>`.
    pub trait IntoTestBackend {
        /// The backend type.
        type Backend;
        /// `None` skips the test.
        fn into_test_backend(self) -> Option<Self::Backend>;
    }

    impl<B: allframe_cqrs_core::EventStoreBackend> IntoTestBackend for Option<B> {
        type Backend = B;
        fn into_test_backend(self) -> Option<B> {
            self
        }
    }
}

/// Every conformance case, by name, for [`conformance_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_case {
    ($callback:ident ! ($($args:tt)*)) => {
        $crate::$callback! { ($($args)*)
            append_to_new_stream_starts_at_version_1
            versions_are_contiguous
            no_stream_conflicts_on_existing_stream
            stream_exists_conflicts_on_missing_stream
            exact_conflicts_on_other_versions
            empty_append_checks_expected_version
            concurrent_appends_at_same_version_have_one_winner
            failed_append_stores_nothing
            positions_increase_across_streams
            concurrent_writers_never_let_a_tailing_reader_skip
            read_stream_pages
            visit_stream_lends_what_read_stream_returns
            read_all_pages
            list_streams_pages_in_order
            snapshots_keep_the_latest
            invalid_snapshots_are_refused
            idempotent_retries
            find_event_locates_stored_events
            checkpoints_compare_and_set
            bad_input_is_refused
            metadata_and_payloads_round_trip
            subscriptions_start_where_asked
            subscription_switch_to_live_has_no_gap_or_duplicate
            slow_subscriber_blocks_nothing
            dropped_append_leaves_store_consistent
            flush_and_stats
            concurrent_history_is_consistent
            retry_spanning_two_appends_answers_with_its_stream
            oversized_snapshot_is_refused
            spinning_subscription_settings_are_refused
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __case_tests {
    (($make:expr) $($case:ident)*) => {$(
        #[doc = concat!("Conformance: `allframe_cqrs_testkit::cases::", stringify!($case), "`.")]
        #[test]
        fn $case() {
            $crate::__private::block_on(async {
                let backend = match $crate::__private::IntoTestBackend::into_test_backend($make.await) {
                    Some(backend) => backend,
                    None => {
                        eprintln!("skipped {}: backend not available", stringify!($case));
                        return;
                    }
                };
                $crate::cases::$case(backend).await;
            });
        }
    )*};
}

/// Expands into one `#[tokio::test]` per conformance case plus the model test.
///
/// The argument is an expression whose value is a future of a fresh, empty backend
/// (evaluated once per test); with `optional:` the future's output is `Option<Backend>`
/// and `None` skips.
#[macro_export]
macro_rules! conformance_suite {
    (optional: $make:expr) => {
        $crate::__for_each_case!(__case_tests!($make));

        /// Conformance: random operation sequences against the reference model.
        #[test]
        fn model_matches_reference() {
            let probe = $crate::__private::tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            if $crate::__private::IntoTestBackend::into_test_backend(probe.block_on($make)).is_none() {
                eprintln!("skipped model_matches_reference: backend not available");
                return;
            }
            drop(probe);
            $crate::model::run_model_test(64, || async {
                $crate::__private::IntoTestBackend::into_test_backend($make.await).expect("backend became unavailable")
            });
        }
    };
    ($make:expr) => {
        $crate::conformance_suite!(optional: async { Some($make.await) });
    };
}
