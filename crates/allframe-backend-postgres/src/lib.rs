//! The postgres backend of AllFrame CQRS (in progress).
