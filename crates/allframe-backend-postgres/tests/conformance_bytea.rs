//! The conformance suite with `bytea` payloads (binary codecs): payloads come back byte for byte.

mod common;

use allframe_backend_postgres::PayloadEncoding;

allframe_cqrs_testkit::conformance_suite!(optional: common::fresh_with(|b| b.payload_encoding(PayloadEncoding::Bytea)));
