//! Response JSON written straight from the protobuf wire bytes, for output
//! messages made only of plain fields: strings, booleans, integers, enums,
//! timestamps, and messages of the same, singular or repeated. It writes
//! exactly what prost-reflect's serializer writes for them (proto3 JSON with
//! every field, defaults included, in field-number order; 64-bit integers
//! as strings; enums by name) without building a `DynamicMessage` first: on
//! a REST WhoAmI that decode and serialization were 16 % of the server's
//! CPU (docs/performance.md, "Hot path").
//!
//! Anything else is left to prost-reflect ([`super::transcode`]): maps,
//! floats, bytes, well-known types other than timestamps, oneofs (a later
//! member clears an earlier one), and, at run time, bytes it would reject
//! or a singular message sent twice (merged field by field). [`plain`]
//! decides per message type, once, when the routes are built; [`write`]
//! returns `None` where the bytes need the full decoder.

use std::{collections::HashSet, io::Write as _};

use prost_reflect::{EnumDescriptor, Kind, MessageDescriptor};

use crate::telemetry::log::json_plain;

/// Whether every field of `message`, through nested messages, is one
/// [`write`] handles.
pub fn plain(message: &MessageDescriptor) -> bool {
    plain_in(message, &mut HashSet::new())
}

fn plain_in(message: &MessageDescriptor, seen: &mut HashSet<String>) -> bool {
    if message.full_name() == TIMESTAMP {
        return true;
    }
    if message.full_name().starts_with("google.protobuf.") || message.is_map_entry() {
        return false;
    }
    if !seen.insert(message.full_name().to_owned()) {
        return true; // recursive: checked where it was first met
    }
    message.fields().all(|field| {
        if field.is_map() || field.is_group() || field.containing_oneof().is_some() {
            return false;
        }
        match field.kind() {
            Kind::Double | Kind::Float | Kind::Bytes => false,
            Kind::Enum(e) => e.full_name() != "google.protobuf.NullValue",
            Kind::Message(inner) => plain_in(&inner, seen),
            _ => true,
        }
    })
}

/// One field value as it was on the wire.
#[derive(Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Len(&'a [u8]),
}

/// Appends `encoded`, a `message` that [`plain`] accepted, as compact JSON;
/// `None` (with `out` partly written) where the full decoder must decide.
pub fn write(message: &MessageDescriptor, encoded: &[u8], out: &mut Vec<u8>) -> Option<()> {
    if message.full_name() == TIMESTAMP {
        return timestamp(encoded, out);
    }
    let mut present: Vec<(u32, Wire<'_>)> = Vec::with_capacity(16);
    fields(encoded, |number, value| present.push((number, value)))?;
    out.push(b'{');
    let mut first = true;
    for field in message.fields() {
        let number = field.number();
        let kind = field.kind();
        let mut values = present.iter().filter(|(n, _)| *n == number).map(|(_, v)| *v);
        if field.is_list() {
            key(out, &mut first, field.json_name());
            out.push(b'[');
            let mut empty = true;
            for value in values {
                match value {
                    Wire::Len(mut packed) if packable(&kind) => {
                        while !packed.is_empty() {
                            let element = match kind {
                                Kind::Fixed64 | Kind::Sfixed64 => {
                                    Wire::Fixed64(u64::from_le_bytes(take(&mut packed, 8)?.try_into().ok()?))
                                }
                                Kind::Fixed32 | Kind::Sfixed32 => {
                                    Wire::Fixed32(u32::from_le_bytes(take(&mut packed, 4)?.try_into().ok()?))
                                }
                                _ => Wire::Varint(varint(&mut packed)?),
                            };
                            separate(out, &mut empty);
                            value_json(&kind, element, out)?;
                        }
                    }
                    value => {
                        separate(out, &mut empty);
                        value_json(&kind, value, out)?;
                    }
                }
            }
            out.push(b']');
            continue;
        }
        let last = values.next_back();
        if matches!(kind, Kind::Message(_)) && values.next().is_some() {
            return None; // sent twice: merged, which the full decoder does
        }
        match last {
            Some(value) => {
                key(out, &mut first, field.json_name());
                value_json(&kind, value, out)?;
            }
            None if field.supports_presence() => {}
            None => {
                key(out, &mut first, field.json_name());
                default_json(&kind, out);
            }
        }
    }
    out.push(b'}');
    Some(())
}

/// Calls `each` with every field of `encoded` in wire order; `None` if the
/// bytes are not a well-formed message (groups included).
fn fields<'a>(encoded: &'a [u8], mut each: impl FnMut(u32, Wire<'a>)) -> Option<()> {
    let mut rest = encoded;
    while !rest.is_empty() {
        let key = varint(&mut rest)?;
        let number = u32::try_from(key >> 3).ok().filter(|&n| n != 0)?;
        let value = match key & 7 {
            0 => Wire::Varint(varint(&mut rest)?),
            1 => Wire::Fixed64(u64::from_le_bytes(take(&mut rest, 8)?.try_into().ok()?)),
            2 => {
                let length = usize::try_from(varint(&mut rest)?).ok()?;
                Wire::Len(take(&mut rest, length)?)
            }
            5 => Wire::Fixed32(u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?)),
            _ => return None,
        };
        each(number, value);
    }
    Some(())
}

const TIMESTAMP: &str = "google.protobuf.Timestamp";

/// A `google.protobuf.Timestamp` in RFC 3339, as prost-reflect writes it
/// (prost-types' formatting); `None` outside the range it accepts, or for
/// nanoseconds it would normalise.
fn timestamp(encoded: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let (mut seconds, mut nanos, mut valid) = (0_i64, 0_i32, true);
    fields(encoded, |number, value| match (number, value) {
        (1, Wire::Varint(v)) => seconds = v as i64,
        (2, Wire::Varint(v)) => nanos = v as i32,
        (1 | 2, _) => valid = false,
        _ => {}
    })?;
    let in_range = (-62_135_596_800..=253_402_300_799).contains(&seconds) && (0..1_000_000_000).contains(&nanos);
    if !valid || !in_range {
        return None;
    }
    let _ = write!(out, "\"{}\"", prost_types::Timestamp { seconds, nanos });
    Some(())
}

/// Scalars that may be packed (every numeric and enum kind here).
fn packable(kind: &Kind) -> bool {
    !matches!(kind, Kind::String | Kind::Message(_))
}

fn key(out: &mut Vec<u8>, first: &mut bool, name: &str) {
    if !std::mem::take(first) {
        out.push(b',');
    }
    string(out, name);
    out.push(b':');
}

fn separate(out: &mut Vec<u8>, empty: &mut bool) {
    if !std::mem::take(empty) {
        out.push(b',');
    }
}

/// Text that needs no escaping (see [`json_plain`]), quoted.
fn verbatim(out: &mut Vec<u8>, plain: &[u8]) {
    out.push(b'"');
    out.extend_from_slice(plain);
    out.push(b'"');
}

/// A JSON string, escaped as serde_json escapes it.
fn string(out: &mut Vec<u8>, text: &str) {
    if json_plain(text.as_bytes(), false) {
        verbatim(out, text.as_bytes());
    } else {
        // Writing a `&str` into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

fn number(out: &mut Vec<u8>, value: impl std::fmt::Display) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{value}");
}

fn quoted(out: &mut Vec<u8>, value: impl std::fmt::Display) {
    out.push(b'"');
    number(out, value);
    out.push(b'"');
}

fn enum_json(e: &EnumDescriptor, value: i32, out: &mut Vec<u8>) {
    match e.get_value(value) {
        Some(known) => string(out, known.name()),
        None => number(out, value),
    }
}

/// One value of `kind` from its wire form; `None` for a wire type the kind
/// cannot have, or a string that is not UTF-8.
fn value_json(kind: &Kind, value: Wire<'_>, out: &mut Vec<u8>) -> Option<()> {
    match (kind, value) {
        (Kind::Bool, Wire::Varint(v)) => out.extend_from_slice(if v != 0 { b"true" } else { b"false" }),
        (Kind::Int32, Wire::Varint(v)) => number(out, v as i32),
        (Kind::Sint32, Wire::Varint(v)) => number(out, zigzag32(v as u32)),
        (Kind::Uint32, Wire::Varint(v)) => number(out, v as u32),
        (Kind::Int64, Wire::Varint(v)) => quoted(out, v as i64),
        (Kind::Sint64, Wire::Varint(v)) => quoted(out, zigzag64(v)),
        (Kind::Uint64, Wire::Varint(v)) => quoted(out, v),
        (Kind::Fixed32, Wire::Fixed32(v)) => number(out, v),
        (Kind::Sfixed32, Wire::Fixed32(v)) => number(out, v as i32),
        (Kind::Fixed64, Wire::Fixed64(v)) => quoted(out, v),
        (Kind::Sfixed64, Wire::Fixed64(v)) => quoted(out, v as i64),
        (Kind::Enum(e), Wire::Varint(v)) => enum_json(e, v as i32, out),
        // Plain ASCII needs neither decoding nor escaping.
        (Kind::String, Wire::Len(bytes)) if json_plain(bytes, true) => verbatim(out, bytes),
        (Kind::String, Wire::Len(bytes)) => string(out, std::str::from_utf8(bytes).ok()?),
        (Kind::Message(inner), Wire::Len(bytes)) => write(inner, bytes, out)?,
        _ => return None,
    }
    Some(())
}

/// The JSON of a field without presence that was not sent.
fn default_json(kind: &Kind, out: &mut Vec<u8>) {
    match kind {
        Kind::Bool => out.extend_from_slice(b"false"),
        Kind::String => out.extend_from_slice(b"\"\""),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => out.extend_from_slice(b"\"0\""),
        Kind::Enum(e) => enum_json(e, 0, out),
        _ => out.push(b'0'),
    }
}

fn zigzag32(v: u32) -> i32 {
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

fn zigzag64(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

fn varint(rest: &mut &[u8]) -> Option<u64> {
    let mut value = 0_u64;
    for (i, &byte) in rest.iter().enumerate().take(10) {
        if i == 9 && byte > 1 {
            return None; // more than 64 bits: the full decoder's error
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *rest = &rest[i + 1..];
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use prost::{Message as _, encoding::WireType};
    use prost_reflect::{DynamicMessage, MessageDescriptor, Value};
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;
    use crate::gateway::{routes::RouteTable, transcode::response_json};

    fn pool() -> prost_reflect::DescriptorPool {
        RouteTable::embedded().unwrap().pool().clone()
    }

    /// What prost-reflect writes for the same bytes.
    fn reference(message: &MessageDescriptor, bytes: &[u8]) -> String {
        String::from_utf8(response_json(message.clone(), bytes, false, false).unwrap()).unwrap()
    }

    fn direct(message: &MessageDescriptor, bytes: &[u8]) -> Option<String> {
        let mut out = Vec::new();
        write(message, bytes, &mut out).map(|()| String::from_utf8(out).unwrap())
    }

    fn text(rng: &mut StdRng) -> String {
        const PIECES: &[&str] =
            &["", "a", "Zoë", "\"quoted\"", "back\\slash", "tab\there", "\u{1}\u{1f}", "/", "日本", "\u{7f}"];
        (0..rng.random_range(0..4)).map(|_| PIECES[rng.random_range(0..PIECES.len())]).collect()
    }

    fn value(kind: &Kind, rng: &mut StdRng, depth: u32) -> Value {
        match kind {
            Kind::Bool => Value::Bool(rng.random()),
            Kind::String => Value::String(text(rng)),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(rng.random()),
            Kind::Uint32 | Kind::Fixed32 => Value::U32(rng.random()),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(rng.random()),
            Kind::Uint64 | Kind::Fixed64 => Value::U64(rng.random()),
            Kind::Enum(e) => {
                let known: Vec<i32> = e.values().map(|v| v.number()).collect();
                Value::EnumNumber(if rng.random_bool(0.9) { known[rng.random_range(0..known.len())] } else { 99 })
            }
            Kind::Message(inner) if inner.full_name() == TIMESTAMP => {
                let mut t = DynamicMessage::new(inner.clone());
                let seconds = match rng.random_range(0..4) {
                    0 => rng.random_range(-62_135_596_800..=253_402_300_799),
                    1 => rng.random_range(1_700_000_000..1_900_000_000),
                    2 => 0,
                    _ => rng.random(), // out of range: left to the full decoder
                };
                let nanos =
                    [0, 1, 123_000_000, 999_999_999, rng.random_range(0..1_000_000_000)][rng.random_range(0..5)];
                t.set_field_by_name("seconds", Value::I64(seconds));
                t.set_field_by_name("nanos", Value::I32(nanos));
                Value::Message(t)
            }
            Kind::Message(inner) => Value::Message(random(inner, rng, depth + 1)),
            other => unreachable!("not plain: {other:?}"),
        }
    }

    fn random(message: &MessageDescriptor, rng: &mut StdRng, depth: u32) -> DynamicMessage {
        let mut out = DynamicMessage::new(message.clone());
        for field in message.fields() {
            let kind = field.kind();
            let nested = matches!(kind, Kind::Message(_));
            if field.is_list() {
                let n = if nested && depth > 2 { 0 } else { rng.random_range(0..4) };
                out.set_field(&field, Value::List((0..n).map(|_| value(&kind, rng, depth)).collect()));
            } else if rng.random_bool(0.7) && !(nested && depth > 2) {
                out.set_field(&field, value(&kind, rng, depth));
            }
        }
        out
    }

    #[test]
    fn every_plain_response_is_written_as_prost_reflect_writes_it() {
        let pool = pool();
        let mut rng = StdRng::seed_from_u64(18);
        let mut checked = 0;
        // Timestamps are checked as fields, with the values the API sends.
        for message in pool.all_messages().filter(|m| plain(m) && m.full_name() != TIMESTAMP) {
            for _ in 0..40 {
                let bytes = random(&message, &mut rng, 0).encode_to_vec();
                match direct(&message, &bytes) {
                    Some(written) => assert_eq!(written, reference(&message, &bytes), "{}", message.full_name()),
                    // Only a timestamp out of prost-reflect's range is left to it (and it refuses it).
                    None => assert!(
                        response_json(message.clone(), &bytes, false, false).is_err(),
                        "{}",
                        message.full_name()
                    ),
                }
                checked += 1;
            }
        }
        assert!(checked > 1000, "only {checked} messages checked");
        let whoami = pool.get_message_by_name("tenantry.v1.WhoAmIResponse").unwrap();
        assert!(plain(&whoami), "the hot path's answer is plain");
    }

    #[test]
    fn maps_floats_bytes_and_well_known_types_are_left_to_the_full_decoder() {
        let pool = pool();
        let tenant = pool.get_message_by_name("tenantry.v1.Tenant").unwrap();
        assert!(!plain(&tenant), "labels (a map) and timestamps");
        assert!(!plain(&pool.get_message_by_name("google.protobuf.Duration").unwrap()));
        for message in pool.all_messages().filter(plain) {
            for field in message.fields() {
                assert!(!field.is_map() && !matches!(field.kind(), Kind::Double | Kind::Float | Kind::Bytes));
            }
        }
    }

    #[test]
    fn wire_forms_the_encoder_never_writes_are_read_as_the_decoder_reads_them() {
        let pool = pool();
        let whoami = pool.get_message_by_name("tenantry.v1.WhoAmIResponse").unwrap();
        let field = |name: &str| whoami.get_field_by_name(name).unwrap().number();
        let key = |name: &str, wire: u32| u8::try_from(field(name) << 3 | wire).unwrap();
        let string = |name: &str, text: &[u8]| [&[key(name, 2), text.len() as u8][..], text].concat();

        // A scalar sent twice (the last wins), repeated values spread
        // out, and a field this build does not know (skipped).
        let bytes = [
            string("tenant_slug", b"first"),
            string("permissions", b"a:read"),
            vec![0xf8, 0x3e, 0x05], // field 999, a varint
            string("tenant_slug", b"second"),
            string("permissions", b"b:write"),
        ]
        .concat();
        let written = direct(&whoami, &bytes).unwrap();
        assert_eq!(written, reference(&whoami, &bytes));
        assert!(
            written.contains(r#""tenantSlug":"second""#) && written.contains(r#"["a:read","b:write"]"#),
            "{written}"
        );

        // What the full decoder must judge: a cut message, bad UTF-8, a
        // wrong wire type, a singular message sent twice (merged), a group.
        let principal = string("principal", &string("tenant_slug", b"x")[..0]);
        for bad in [
            string("tenant_slug", b"cut")[..4].to_vec(),
            string("tenant_slug", b"\xff"),
            vec![key("tenant_slug", 0), 1],
            [principal.clone(), principal].concat(),
            vec![key("tenant_slug", 3)],
        ] {
            assert_eq!(direct(&whoami, &bad), None, "{bad:?}");
        }
    }

    #[test]
    fn packed_and_unpacked_repeated_numbers_read_alike() {
        // The API has no repeated numbers yet; descriptor.proto (in the
        // pool for the HTTP annotations) has: `repeated int32 path`.
        let location = pool().get_message_by_name("google.protobuf.SourceCodeInfo.Location").unwrap();
        let path = location.get_field_by_name("path").unwrap().number();
        let (mut unpacked, mut payload, mut packed) = (Vec::new(), Vec::new(), Vec::new());
        for v in [0_i32, 1, 300, -2] {
            prost::encoding::encode_key(path, WireType::Varint, &mut unpacked);
            prost::encoding::encode_varint(v as u64, &mut unpacked);
            prost::encoding::encode_varint(v as u64, &mut payload);
        }
        prost::encoding::encode_key(path, WireType::LengthDelimited, &mut packed);
        prost::encoding::encode_varint(payload.len() as u64, &mut packed);
        packed.extend_from_slice(&payload);
        let written = direct(&location, &packed).unwrap();
        assert_eq!(written, reference(&location, &packed));
        assert_eq!(direct(&location, &unpacked).unwrap(), reference(&location, &unpacked));
        assert!(written.contains(r#""path":[0,1,300,-2]"#), "{written}");
    }
}
