//! The schema version each stored event carries (issue 20): the version of its type's schema
//! when it was written ([`Event::SCHEMA_VERSION`]), kept in the header
//! [`SCHEMA_VERSION_HEADER`], which every backend stores with the event and the tools show.
//! Version 1 is written as no header, so events written before versions existed, and every
//! event of a type never versioned, read as version 1 at no cost.

use crate::event::Event;
use crate::types::Metadata;

/// The header holding a stored event's schema version (absent: version 1).
pub const SCHEMA_VERSION_HEADER: &str = "allframe.schema_version";

/// Records `E`'s schema version in `metadata` before the event is stored. For version 1 it
/// compiles to nothing.
pub fn stamp<E: Event>(metadata: &mut Metadata) {
    if E::SCHEMA_VERSION != 1 {
        metadata.headers.insert(SCHEMA_VERSION_HEADER.to_owned(), E::SCHEMA_VERSION.to_string());
    }
}

/// The schema version a stored event was written with (1 when it says none, or says
/// something that is not a version).
pub fn of(metadata: &Metadata) -> u32 {
    metadata
        .headers
        .get(SCHEMA_VERSION_HEADER)
        .and_then(|version| version.parse().ok())
        .filter(|v| *v >= 1)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Serialize, Deserialize)]
    struct V1;
    impl Event for V1 {}

    #[derive(Clone, Serialize, Deserialize)]
    struct V3;
    impl Event for V3 {
        const SCHEMA_VERSION: u32 = 3;
    }

    #[test]
    fn version_one_is_no_header_and_others_are_written_and_read_back() {
        let mut metadata = Metadata::new();
        stamp::<V1>(&mut metadata);
        assert!(metadata.headers.is_empty());
        assert_eq!(of(&metadata), 1);
        stamp::<V3>(&mut metadata);
        assert_eq!(metadata.headers[SCHEMA_VERSION_HEADER], "3");
        assert_eq!(of(&metadata), 3);
        for junk in ["0", "-1", "three", ""] {
            metadata.headers.insert(SCHEMA_VERSION_HEADER.to_owned(), junk.to_owned());
            assert_eq!(of(&metadata), 1, "{junk:?}");
        }
    }
}
