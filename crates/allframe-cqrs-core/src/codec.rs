//! How typed events and snapshots become bytes.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::BoxError;

/// The serialization format of payloads and snapshots.
///
/// JSON is the default: readable by SQL (`jsonb`), by DuckDB over the Parquet files and by
/// people. Postcard (feature `postcard`) is compact and faster, but opaque to other tools.
/// One store should keep one codec: a store does not record which codec wrote a payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Codec {
    /// serde_json.
    #[default]
    Json,
    /// postcard, a compact binary format.
    #[cfg(feature = "postcard")]
    Postcard,
}

impl Codec {
    /// The codec's name (`"json"`, `"postcard"`).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Json => "json",
            #[cfg(feature = "postcard")]
            Codec::Postcard => "postcard",
        }
    }

    /// Whether payloads are JSON text.
    pub fn is_json(self) -> bool {
        matches!(self, Codec::Json)
    }

    /// Encodes a value.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, BoxError> {
        match self {
            Codec::Json => {
                let mut out = Vec::with_capacity(128);
                serde_json::to_writer(&mut out, value)?;
                Ok(out)
            }
            #[cfg(feature = "postcard")]
            Codec::Postcard => Ok(postcard::to_allocvec(value)?),
        }
    }

    /// Decodes a value.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, BoxError> {
        match self {
            // One UTF-8 check of the whole payload, then serde_json's reader of checked text,
            // which skips the check of each string it meets: the same payloads are accepted,
            // at fewer instructions than `from_slice`.
            Codec::Json => Ok(serde_json::from_str(std::str::from_utf8(bytes)?)?),
            #[cfg(feature = "postcard")]
            Codec::Postcard => Ok(postcard::from_bytes(bytes)?),
        }
    }
}
