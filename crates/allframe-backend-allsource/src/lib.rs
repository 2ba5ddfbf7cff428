//! The allsource backend of AllFrame CQRS (in progress).
