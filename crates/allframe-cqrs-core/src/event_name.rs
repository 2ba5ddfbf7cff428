//! The default [`Event::event_type`](crate::Event::event_type): the name serde gives the value.
//!
//! Serde's derive already knows each variant's name, with `#[serde(rename = "...")]` applied,
//! and passes it as a `&'static str` to the serializer before anything else. A serializer that
//! stops at that first call reads it at the cost of one function call, without encoding
//! anything. Rust's type names are not stable across compiler versions, so they are never used.
//!
//! | the event type                               | its default name                |
//! |----------------------------------------------|---------------------------------|
//! | an enum, serde's default representation      | the variant's (serde) name      |
//! | a struct, tuple struct or unit struct         | the type's (serde) name         |
//! | an internally, adjacently tagged or untagged enum | the enum's name, or `"Event"` |
//!
//! The last row gives every variant one name; decoding still works (the payload carries the
//! tag), but `#[derive(Event)]` or a hand-written `event_type` gives each its own.

use std::fmt;

use serde::Serialize;
use serde::ser::{self, Impossible};

/// The name used when serde gives none (a bare number or string as an event).
pub const FALLBACK_NAME: &str = "Event";

/// The serde name of `value`: its variant's for an externally tagged enum, else its type's.
pub fn serde_name<T: Serialize + ?Sized>(value: &T) -> &'static str {
    match value.serialize(NameOf) {
        Ok(name) | Err(Stop(Some(name))) => name,
        Err(Stop(None)) => FALLBACK_NAME,
    }
}

/// Ends serialization at the first call; carries the name it saw, if any.
#[derive(Debug)]
struct Stop(Option<&'static str>);

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("event name found")
    }
}

impl std::error::Error for Stop {}

impl ser::Error for Stop {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Stop(None)
    }
}

/// A serializer that only reads the name serde passes first.
struct NameOf;

macro_rules! no_name {
    ($($method:ident($($arg:ty),*);)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<Self::Ok, Stop> { Err(Stop(None)) })*
    };
}

impl ser::Serializer for NameOf {
    type Ok = &'static str;
    type Error = Stop;
    type SerializeSeq = Impossible<&'static str, Stop>;
    type SerializeTuple = Impossible<&'static str, Stop>;
    type SerializeTupleStruct = Impossible<&'static str, Stop>;
    type SerializeTupleVariant = Impossible<&'static str, Stop>;
    type SerializeMap = Impossible<&'static str, Stop>;
    type SerializeStruct = Impossible<&'static str, Stop>;
    type SerializeStructVariant = Impossible<&'static str, Stop>;

    no_name! {
        serialize_bool(bool); serialize_i8(i8); serialize_i16(i16); serialize_i32(i32); serialize_i64(i64);
        serialize_u8(u8); serialize_u16(u16); serialize_u32(u32); serialize_u64(u64);
        serialize_f32(f32); serialize_f64(f64); serialize_char(char); serialize_str(&str);
        serialize_bytes(&[u8]); serialize_none(); serialize_unit();
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Self::Ok, Stop> {
        value.serialize(self)
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<Self::Ok, Stop> {
        Ok(name)
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<Self::Ok, Stop> {
        Ok(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, name: &'static str, _: &T) -> Result<Self::Ok, Stop> {
        Ok(name)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: &T,
    ) -> Result<Self::Ok, Stop> {
        Ok(variant)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Stop> {
        Err(Stop(None))
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Stop> {
        Err(Stop(None))
    }

    fn serialize_tuple_struct(self, name: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, Stop> {
        Err(Stop(Some(name)))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Stop> {
        Err(Stop(Some(variant)))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Stop> {
        Err(Stop(None))
    }

    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Self::SerializeStruct, Stop> {
        Err(Stop(Some(name)))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Stop> {
        Err(Stop(Some(variant)))
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;

    #[derive(Serialize)]
    enum Order {
        Placed {
            id: u32,
        },
        #[serde(rename = "order.shipped")]
        Shipped(u32),
        Cancelled,
        Split(u32, u32),
    }

    #[derive(Serialize)]
    struct Deposited {
        amount: u64,
    }

    #[derive(Serialize)]
    #[serde(rename = "money.withdrawn")]
    struct Withdrawn(u64);

    #[derive(Serialize)]
    #[serde(tag = "type")]
    enum Tagged {
        One { a: u8 },
    }

    #[test]
    fn names_come_from_serde_with_renames_applied() {
        assert_eq!(serde_name(&Order::Placed { id: 1 }), "Placed");
        assert_eq!(serde_name(&Order::Shipped(1)), "order.shipped");
        assert_eq!(serde_name(&Order::Cancelled), "Cancelled");
        assert_eq!(serde_name(&Order::Split(1, 2)), "Split");
        assert_eq!(serde_name(&Deposited { amount: 5 }), "Deposited");
        assert_eq!(serde_name(&Withdrawn(5)), "money.withdrawn");
    }

    #[test]
    fn other_representations_get_the_type_name_or_the_fallback() {
        assert_eq!(serde_name(&Tagged::One { a: 1 }), "Tagged");
        assert_eq!(serde_name(&42u32), FALLBACK_NAME);
        assert_eq!(serde_name("text"), FALLBACK_NAME);
    }
}
