//! The seam of event versioning: a store given an [`Upcast`] passes every stored event it
//! decodes through it first, so stored events of older schema versions are read as the current
//! ones on every read path. The chains themselves (steps, checks) are built by the versioning
//! crate; the core only calls them.

use std::borrow::Cow;

use crate::codec::Codec;
use crate::error::BoxError;
use crate::types::RecordedEvent;

/// What a stored event stands for under the current schema, when that differs from what is
/// stored: its events (none if it was dropped, several if it was split), each as a type name
/// and a payload in the store's codec.
pub type Upcasted = Vec<(Cow<'static, str>, Vec<u8>)>;

/// Turns stored events of older schema versions into the current version.
pub trait Upcast: Send + Sync + std::fmt::Debug {
    /// `None` when `record` is current already (the common case: nothing is copied), else
    /// what it stands for now.
    ///
    /// # Errors
    ///
    /// A step failed, or no step reads the event's type at its version.
    fn upcast(&self, record: &RecordedEvent, codec: Codec) -> Result<Option<Upcasted>, BoxError>;
}
