//! The seam of event versioning: a store given an [`Upcast`] passes every stored event it
//! decodes through it, so stored events of older schema versions are read as the current ones
//! on every read path. The chains themselves (steps, checks) are built by the versioning
//! crate; the core only calls them, through a trait object, so a store without upcasters links
//! none of their code.

use crate::codec::Codec;
use crate::error::Result;
use crate::event::Event;
use crate::types::RecordedEvent;

/// Reads stored events of older schema versions as events of the current one.
pub trait Upcast<E: Event>: Send + Sync + std::fmt::Debug {
    /// When `record` is not current, decodes the events it stands for now into `out` (none if
    /// it was dropped, several if it was split) and returns `true`; returns `false` when it is
    /// current, to be decoded as stored.
    ///
    /// # Errors
    ///
    /// A step failed, no step reads the event's type at its version, or an upcast payload does
    /// not decode: [`Error::Decode`](crate::Error::Decode) or
    /// [`Error::UnknownEventType`](crate::Error::UnknownEventType), naming the stored event.
    fn decode(&self, record: &RecordedEvent, codec: Codec, out: &mut dyn FnMut(E) -> Result<()>) -> Result<bool>;
}
