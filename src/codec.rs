//! The codec of every Tenantry service (`build.rs` sets it as tonic's codec
//! path): prost, with the checks a message needs at the edge before any of
//! it reaches a handler, let alone SQL.
//!
//! - **Text fields** are checked generically from the descriptor: a walk over
//!   the encoded bytes, guided by the message's descriptor, finds every
//!   string field at any depth (repeated, map keys and values, nested
//!   messages, `google.protobuf.Struct`) and refuses a NUL character with
//!   INVALID_ARGUMENT naming the field, since PostgreSQL text cannot hold
//!   one. The walk allocates nothing unless it finds a fault.
//! - **Decoding failures** of any kind (invalid wire bytes, a wrong wire
//!   type, invalid UTF-8, nesting past 100 levels) are INVALID_ARGUMENT: a
//!   client sent them, so they are not INTERNAL as prost's own codec reports
//!   them.

use std::{collections::HashMap, marker::PhantomData, sync::OnceLock};

use bytes::Buf;
use prost::Message;
use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};
use tonic::{
    Status,
    codec::{BufferSettings, Codec as TonicCodec, DecodeBuf, Decoder as TonicDecoder},
};
use tonic_prost::ProstEncoder;

use crate::error::ApiError;

/// Nesting beyond this is refused (prost's own recursion limit).
const MAX_DEPTH: u32 = 100;

/// prost's codec with the edge checks of the module docs.
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec(PhantomData)
    }
}

impl<T, U> TonicCodec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + prost::Name + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = Decoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoder(PhantomData)
    }
}

/// Checks, then decodes, one message of type `U`.
pub struct Decoder<U>(PhantomData<U>);

impl<U: Message + Default + prost::Name> TonicDecoder for Decoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let length = buf.remaining();
        // A message is one contiguous chunk unless it was decompressed in parts.
        let copy;
        let bytes = if buf.chunk().len() >= length {
            &buf.chunk()[..length]
        } else {
            copy = buf.copy_to_bytes(length);
            &copy[..]
        };
        if let Some(descriptor) = descriptor::<U>() {
            check(&descriptor, bytes, 0).map_err(|fault| Status::from(fault.into_error(U::NAME)))?;
        }
        U::decode(bytes)
            .map(Some)
            .map_err(|error| Status::from(ApiError::invalid("request", format!("is not a valid {}: {error}", U::NAME))))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// The descriptor of `U`, from the embedded descriptor set (looked up by
/// package, then name: no allocation per call).
fn descriptor<U: prost::Name>() -> Option<MessageDescriptor> {
    type ByPackage = HashMap<String, HashMap<String, MessageDescriptor>>;
    static MESSAGES: OnceLock<ByPackage> = OnceLock::new();
    let messages = MESSAGES.get_or_init(|| {
        // The set is embedded at build time; a failure here is a build bug,
        // and leaves messages unchecked rather than the server down.
        let pool = DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap_or_default();
        let mut messages = ByPackage::new();
        for message in pool.all_messages() {
            let package = messages.entry(message.package_name().to_owned()).or_default();
            // Nested messages by their path within the package (`Outer.Inner`), as prost names them.
            let name = message.full_name().strip_prefix(message.package_name()).unwrap_or_default();
            package.insert(name.trim_start_matches('.').to_owned(), message.clone());
        }
        messages
    });
    messages.get(U::PACKAGE)?.get(U::NAME).cloned()
}

/// What is wrong with a message, and where.
#[derive(Debug, PartialEq, Eq)]
enum Fault {
    /// A text field holds a NUL character; the field's path.
    Nul(String),
    /// The bytes are not a protobuf message.
    Malformed(&'static str),
    /// Messages nest deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl Fault {
    fn into_error(self, message: &str) -> ApiError {
        match self {
            Fault::Nul(field) => ApiError::invalid(field, "must not contain a NUL character"),
            Fault::Malformed(problem) => ApiError::invalid("request", format!("is not a valid {message}: {problem}")),
            Fault::TooDeep => ApiError::invalid("request", format!("nests messages deeper than {MAX_DEPTH} levels")),
        }
    }
}

/// Walks the encoded message `bytes` of type `descriptor` (see the module docs).
fn check(descriptor: &MessageDescriptor, mut bytes: &[u8], depth: u32) -> Result<(), Fault> {
    if depth > MAX_DEPTH {
        return Err(Fault::TooDeep);
    }
    let whole = bytes;
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let (number, wire_type) = ((key >> 3) as u32, key & 7);
        match wire_type {
            0 => {
                varint(&mut bytes)?;
            }
            1 => bytes = skip(bytes, 8)?,
            5 => bytes = skip(bytes, 4)?,
            2 => {
                let length =
                    usize::try_from(varint(&mut bytes)?).map_err(|_| Fault::Malformed("a length overflows"))?;
                if length > bytes.len() {
                    return Err(Fault::Malformed("a length runs past the end"));
                }
                let (value, rest) = bytes.split_at(length);
                bytes = rest;
                let Some(field) = descriptor.get_field(number) else { continue };
                let inner = match field.kind() {
                    Kind::String if value.contains(&0) => Err(Fault::Nul(String::new())),
                    Kind::Message(message) => check(&message, value, depth + 1),
                    _ => Ok(()),
                };
                if let Err(Fault::Nul(below)) = inner {
                    return Err(Fault::Nul(field_path(descriptor, whole, &field, value, &below)));
                }
                inner?;
            }
            _ => return Err(Fault::Malformed("an unsupported wire type")),
        }
    }
    Ok(())
}

/// The path of a faulty field for messages: `events[2].dimensions`, with the
/// index of a repeated field's occurrence (`value` is its slice of `whole`).
fn field_path(
    parent: &MessageDescriptor,
    whole: &[u8],
    field: &prost_reflect::FieldDescriptor,
    value: &[u8],
    below: &str,
) -> String {
    let name = field.name();
    let own = if field.is_map() {
        name.to_owned()
    } else if field.is_list() {
        format!("{name}[{}]", occurrence(parent, whole, field.number(), value))
    } else {
        name.to_owned()
    };
    // A map entry's `key`/`value` and a Struct's inner names add little: stop at the map.
    if below.is_empty() || field.is_map() { own } else { format!("{own}.{below}") }
}

/// How many earlier occurrences of field `number` precede `value` in `whole`.
fn occurrence(_parent: &MessageDescriptor, mut whole: &[u8], number: u32, value: &[u8]) -> usize {
    let mut seen = 0;
    while !whole.is_empty() {
        let Ok(key) = varint(&mut whole) else { break };
        let skipped = match key & 7 {
            0 => varint(&mut whole).map(|_| whole),
            1 => skip(whole, 8),
            5 => skip(whole, 4),
            2 => match varint(&mut whole) {
                Ok(length) if (length as usize) <= whole.len() => {
                    let (this, rest) = whole.split_at(length as usize);
                    if std::ptr::eq(this.as_ptr(), value.as_ptr()) {
                        return seen;
                    }
                    if (key >> 3) as u32 == number {
                        seen += 1;
                    }
                    Ok(rest)
                }
                _ => break,
            },
            _ => break,
        };
        match skipped {
            Ok(rest) => whole = rest,
            Err(_) => break,
        }
    }
    seen
}

fn varint(bytes: &mut &[u8]) -> Result<u64, Fault> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or(Fault::Malformed("a number runs past the end"))?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err(Fault::Malformed("a number is longer than 10 bytes"))
}

fn skip(bytes: &[u8], count: usize) -> Result<&[u8], Fault> {
    bytes.get(count..).ok_or(Fault::Malformed("a value runs past the end"))
}

#[cfg(test)]
mod tests {
    use prost_reflect::{DynamicMessage, Value};

    use super::*;
    use crate::proto::tenantry::v1 as pb;

    fn descriptor_of<U: prost::Name>() -> MessageDescriptor {
        descriptor::<U>().expect("in the embedded set")
    }

    #[test]
    fn a_nul_in_a_top_level_string_names_the_field() {
        let request = pb::GetTenantRequest { tenant_id: "ten_\0x".into() };
        let fault = check(&descriptor_of::<pb::GetTenantRequest>(), &request.encode_to_vec(), 0);
        assert_eq!(fault, Err(Fault::Nul("tenant_id".into())));
        let clean = pb::GetTenantRequest { tenant_id: "ten_x".into() };
        assert_eq!(check(&descriptor_of::<pb::GetTenantRequest>(), &clean.encode_to_vec(), 0), Ok(()));
    }

    #[test]
    fn nuls_in_repeated_messages_and_maps_are_found_with_their_path() {
        let descriptor = descriptor_of::<pb::RecordUsageRequest>();
        let mut message = DynamicMessage::new(descriptor.clone());
        let event = |id: &str, region: &str| {
            let event_descriptor = descriptor.get_field_by_name("events").unwrap().kind();
            let Kind::Message(event_descriptor) = event_descriptor else { unreachable!() };
            let mut event = DynamicMessage::new(event_descriptor);
            event.set_field_by_name("event_id", Value::String(id.into()));
            event.set_field_by_name("metric", Value::String("api.calls".into()));
            let dimensions =
                std::iter::once((prost_reflect::MapKey::String("region".into()), Value::String(region.into())))
                    .collect();
            event.set_field_by_name("dimensions", Value::Map(dimensions));
            Value::Message(event)
        };
        message.set_field_by_name("events", Value::List(vec![event("a", "eu"), event("b", "e\0u")]));
        let fault = check(&descriptor, &message.encode_to_vec(), 0);
        assert_eq!(fault, Err(Fault::Nul("events[1].dimensions".into())));
    }

    #[test]
    fn garbage_and_deep_nesting_are_refused() {
        let descriptor = descriptor_of::<pb::GetTenantRequest>();
        assert!(matches!(check(&descriptor, &[0x0a, 0x05, b'a'], 0), Err(Fault::Malformed(_))));
        assert!(matches!(check(&descriptor, &[0x0b], 0), Err(Fault::Malformed(_))));
        assert!(matches!(check(&descriptor, &[0xff; 11], 0), Err(Fault::Malformed(_))));
        let error = Status::from(Fault::TooDeep.into_error("X"));
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
    }
}
