//! JSON ⇄ protobuf for one call, in the proto3 canonical JSON mapping
//! (prost-reflect): lowerCamelCase out and both spellings in, 64-bit integers
//! as strings, enums by name, well-known types in their JSON forms.
//!
//! A request message is assembled as one JSON object and decoded once, so
//! every source of fields gets the same rules: the body (the whole message
//! for `body: "*"`, one field otherwise), then the query string (`a.b=1`,
//! repeated `x=1&x=2`, enums by name, RFC 3339 timestamps), then the path
//! variables, which win. An `update_mask` is passed through as the client
//! wrote its paths (the services read them, `crate::field_mask`); for PATCH
//! without one, the mask is derived from the fields present in the body.

use http::Method;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions, Value as Proto,
};
use serde_json::{Map, Value};

use super::{
    routes::{BodyRule, Route},
    template::Captures,
};
use crate::error::ApiError;

/// Builds the request message of `route` from the request's parts.
pub fn request_message(
    route: &Route,
    captures: &Captures,
    query: &[(String, String)],
    body: &[u8],
    deny_unknown_fields: bool,
) -> Result<DynamicMessage, ApiError> {
    let input = route.rpc.input();
    let mut root = Map::new();
    let body_value = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(
            serde_json::from_slice::<Value>(body)
                .map_err(|e| ApiError::invalid("body", format!("invalid JSON: {e}")))?,
        )
    };
    match (&route.body, body_value) {
        (_, None) => {}
        (BodyRule::None, Some(_)) => {
            return Err(ApiError::invalid("body", "this method takes no body; send its fields in the query string"));
        }
        (BodyRule::Whole, Some(Value::Object(object))) => root = object,
        (BodyRule::Whole, Some(_)) => return Err(ApiError::invalid("body", "must be a JSON object")),
        (BodyRule::Field(field), Some(value)) => {
            root.insert(field.name().to_owned(), value);
        }
    }
    for (key, text) in query {
        let names: Vec<String> = key.split('.').map(str::to_owned).collect();
        let Some(fields) = resolve_json(&input, &names) else {
            if deny_unknown_fields {
                return Err(ApiError::invalid(key.as_str(), "unknown query parameter"));
            }
            continue;
        };
        match &route.body {
            BodyRule::Whole => return Err(ApiError::invalid(key.as_str(), "this method takes its fields in the body")),
            BodyRule::Field(body) if fields[0] == *body => {
                return Err(ApiError::invalid(key.as_str(), "is part of the request body"));
            }
            _ => {}
        }
        let proto_path: Vec<String> = fields.iter().map(|f| f.name().to_owned()).collect();
        if captures.iter().any(|(path, _)| *path == proto_path) {
            return Err(ApiError::invalid(key.as_str(), "is given by the URL path"));
        }
        let leaf = fields.last().expect("resolved paths are not empty");
        let value = scalar(leaf, text).map_err(|problem| ApiError::invalid(key.as_str(), problem))?;
        insert(&mut root, &fields, value, leaf.is_list())
            .map_err(|problem| ApiError::invalid(key.as_str(), problem))?;
    }

    for (path, text) in captures {
        let fields = resolve_json(&input, path).ok_or_else(|| ApiError::internal("a path variable lost its field"))?;
        let name = path.join(".");
        let leaf = fields.last().expect("resolved paths are not empty");
        let value = scalar(leaf, text).map_err(|problem| ApiError::invalid(name.as_str(), problem))?;
        insert(&mut root, &fields, value, false).map_err(|problem| ApiError::invalid(name.as_str(), problem))?;
    }

    // The mask's paths go to the service as the client wrote them (proto or
    // JSON names, or `*`): `field_mask::UpdateMask` reads them for every
    // Update RPC, over gRPC and REST alike.
    let sent_masks = take_field_masks(&input, &mut root)?;
    let derived_mask = match (&route.method, sent_masks.is_empty()) {
        (&Method::PATCH, true) => derive_update_mask(route, &root, captures),
        _ => None,
    };

    let options = DeserializeOptions::new().deny_unknown_fields(deny_unknown_fields);
    let mut message = DynamicMessage::deserialize_with_options(input, Value::Object(root), &options)
        .map_err(|e| ApiError::invalid(field_in_error(&e.to_string()), e.to_string()))?;
    for (field, mask) in sent_masks.into_iter().chain(derived_mask) {
        message.set_field(&field, Proto::Message(mask));
    }
    Ok(message)
}

/// Removes the request's top-level `FieldMask` fields (from the query string
/// or the body, in either spelling) from `root` and returns them with their
/// paths split but not rewritten: the proto3 JSON decoder would refuse
/// snake_case paths and `*`, which the services accept.
fn take_field_masks(
    input: &MessageDescriptor,
    root: &mut Map<String, Value>,
) -> Result<Vec<(FieldDescriptor, DynamicMessage)>, ApiError> {
    let mut masks = Vec::new();
    for field in input.fields() {
        let Kind::Message(mask_type) = field.kind() else { continue };
        if mask_type.full_name() != "google.protobuf.FieldMask" || field.is_list() {
            continue;
        }
        let given = [field.name(), field.json_name()].into_iter().filter_map(|key| root.remove(key)).next_back();
        let paths = match given {
            None | Some(Value::Null) => continue,
            Some(Value::String(text)) if text.is_empty() => Vec::new(),
            // Empty segments stay, so the service refuses `a,,b` as malformed.
            Some(Value::String(text)) => text.split(',').map(|p| Proto::String(p.to_owned())).collect(),
            Some(_) => {
                return Err(ApiError::invalid(
                    field.name(),
                    "must be a string of comma-separated field paths, like \"displayName,labels\"",
                ));
            }
        };
        let mut mask = DynamicMessage::new(mask_type);
        mask.set_field_by_name("paths", Proto::List(paths));
        masks.push((field, mask));
    }
    Ok(masks)
}

/// Renders a response message as canonical JSON, with every field that has
/// no presence emitted even at its zero value (`"remaining": 0`, `"tenants":
/// []`), as grpc-gateway's `EmitUnpopulated` does: a zero count or quota is an
/// answer, not a missing one. Fields with presence (messages, `optional`,
/// oneof members) appear when set. docs/rest.md, "Zero values". With `plain`
/// (the route's [`Route::plain_output`]) compact JSON is written straight
/// from the bytes (`super::wire_json`), the same JSON without the decode.
pub fn response_json(
    output: MessageDescriptor,
    encoded: &[u8],
    pretty: bool,
    plain: bool,
) -> Result<Vec<u8>, ApiError> {
    if plain && !pretty {
        let mut out = Vec::with_capacity(encoded.len() * 2 + 16);
        if super::wire_json::write(&output, encoded, &mut out).is_some() {
            return Ok(out);
        }
    }
    let message = DynamicMessage::decode(output, encoded).map_err(ApiError::internal)?;
    let options = SerializeOptions::new().skip_default_fields(false);
    let mut out = Vec::with_capacity(encoded.len() * 2 + 16);
    let result = if pretty {
        let mut serializer = serde_json::Serializer::pretty(&mut out);
        message.serialize_with_options(&mut serializer, &options)
    } else {
        let mut serializer = serde_json::Serializer::new(&mut out);
        message.serialize_with_options(&mut serializer, &options)
    };
    result.map_err(ApiError::internal)?;
    Ok(out)
}

/// The fields along a path of names, accepting proto or JSON spellings.
fn resolve_json(message: &MessageDescriptor, names: &[String]) -> Option<Vec<FieldDescriptor>> {
    let mut current = message.clone();
    let mut fields = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let field = current.get_field_by_name(name).or_else(|| current.get_field_by_json_name(name))?;
        if i + 1 < names.len() {
            match field.kind() {
                Kind::Message(inner) if !field.is_list() && !field.is_map() && !is_scalar_wkt(&inner) => {
                    current = inner
                }
                _ => return None,
            }
        }
        fields.push(field);
    }
    (!fields.is_empty()).then_some(fields)
}

/// Puts `value` at `fields` in the JSON object, replacing either spelling of
/// the leaf (or appending, for repeated fields from the query string).
fn insert(root: &mut Map<String, Value>, fields: &[FieldDescriptor], value: Value, append: bool) -> Result<(), String> {
    let (leaf, parents) = fields.split_last().ok_or("empty field path")?;
    let mut object = root;
    for field in parents {
        let existing = object.remove(field.json_name()).or_else(|| object.remove(field.name()));
        let entry = object.entry(field.name().to_owned()).or_insert(existing.unwrap_or(Value::Object(Map::new())));
        if entry.is_null() {
            *entry = Value::Object(Map::new());
        }
        object = entry.as_object_mut().ok_or_else(|| format!("`{}` is not an object", field.name()))?;
    }
    let existing = object.remove(leaf.json_name()).or_else(|| object.remove(leaf.name()));
    let value = match (append, existing) {
        (true, Some(Value::Array(mut items))) => {
            items.push(value);
            Value::Array(items)
        }
        (true, _) => Value::Array(vec![value]),
        (false, _) => value,
    };
    object.insert(leaf.name().to_owned(), value);
    Ok(())
}

/// The JSON value of one query-string or path value for `field`.
fn scalar(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    if field.is_map() {
        return Err("maps cannot be set from the query string; use a JSON body".into());
    }
    scalar_of_kind(&field.kind(), text)
}

fn scalar_of_kind(kind: &Kind, text: &str) -> Result<Value, String> {
    Ok(match kind {
        Kind::Bool => match text {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err(format!("`{text}` is not a boolean (true or false)")),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::from(text.parse::<i32>().map_err(|_| format!("`{text}` is not a 32-bit integer"))?)
        }
        Kind::Uint32 | Kind::Fixed32 => {
            Value::from(text.parse::<u32>().map_err(|_| format!("`{text}` is not an unsigned 32-bit integer"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            text.parse::<i64>().map_err(|_| format!("`{text}` is not a 64-bit integer"))?;
            Value::String(text.to_owned())
        }
        Kind::Uint64 | Kind::Fixed64 => {
            text.parse::<u64>().map_err(|_| format!("`{text}` is not an unsigned 64-bit integer"))?;
            Value::String(text.to_owned())
        }
        Kind::Float | Kind::Double | Kind::String | Kind::Bytes => Value::String(text.to_owned()),
        Kind::Enum(enumeration) => {
            if let Ok(number) = text.parse::<i32>() {
                Value::from(number)
            } else if enumeration.get_value_by_name(text).is_some() {
                Value::String(text.to_owned())
            } else {
                let names: Vec<String> = enumeration.values().map(|v| v.name().to_owned()).collect();
                return Err(format!("`{text}` is not one of {}", names.join(", ")));
            }
        }
        Kind::Message(message) => match message.full_name() {
            "google.protobuf.Timestamp" => {
                chrono::DateTime::parse_from_rfc3339(text)
                    .map_err(|_| format!("`{text}` is not an RFC 3339 timestamp like 2024-05-01T12:00:00Z"))?;
                Value::String(text.to_owned())
            }
            "google.protobuf.Duration" | "google.protobuf.FieldMask" => Value::String(text.to_owned()),
            _ if is_scalar_wkt(message) => {
                let inner = message.get_field_by_name("value").ok_or("wrapper without a value")?;
                scalar_of_kind(&inner.kind(), text)?
            }
            _ => return Err("messages cannot be set from the query string; use a JSON body".into()),
        },
    })
}

/// Well-known types whose JSON form is a single scalar.
fn is_scalar_wkt(message: &MessageDescriptor) -> bool {
    message.package_name() == "google.protobuf"
        && (message.name().ends_with("Value") && message.name() != "Value" && message.name() != "ListValue"
            || matches!(message.name(), "Timestamp" | "Duration" | "FieldMask"))
}

/// The `update_mask` for a PATCH that sent none: the body's fields, without
/// those the URL path names.
fn derive_update_mask(
    route: &Route,
    root: &Map<String, Value>,
    captures: &Captures,
) -> Option<(FieldDescriptor, DynamicMessage)> {
    let input = route.rpc.input();
    let mask_field = input.get_field_by_name("update_mask")?;
    let Kind::Message(mask_type) = mask_field.kind() else { return None };
    if mask_type.full_name() != "google.protobuf.FieldMask" {
        return None;
    }
    let (object, message, prefix) = match &route.body {
        BodyRule::Field(field) => match (field.kind(), root.get(field.name())) {
            (Kind::Message(message), Some(Value::Object(object))) => (object, message, vec![field.name().to_owned()]),
            _ => return None,
        },
        BodyRule::Whole => (root, input.clone(), Vec::new()),
        BodyRule::None => return None,
    };
    let bound: Vec<&Vec<String>> = captures.iter().map(|(path, _)| path).collect();
    let mut paths = Vec::new();
    collect_paths(&message, object, &prefix, prefix.len(), &bound, &mut paths);
    paths.retain(|p| p != "update_mask");
    let mut mask = DynamicMessage::new(mask_type);
    mask.set_field_by_name("paths", Proto::List(paths.into_iter().map(Proto::String).collect()));
    Some((mask_field, mask))
}

fn collect_paths(
    message: &MessageDescriptor,
    object: &Map<String, Value>,
    prefix: &[String],
    skip: usize,
    bound: &[&Vec<String>],
    out: &mut Vec<String>,
) {
    for (key, value) in object {
        let Some(field) = message.get_field_by_name(key).or_else(|| message.get_field_by_json_name(key)) else {
            continue;
        };
        let mut path = prefix.to_vec();
        path.push(field.name().to_owned());
        if bound.contains(&&path) {
            continue;
        }
        match (field.kind(), value) {
            (Kind::Message(inner), Value::Object(nested))
                if !field.is_map() && !field.is_list() && inner.package_name() != "google.protobuf" =>
            {
                collect_paths(&inner, nested, &path, skip, bound, out)
            }
            _ => out.push(path[skip..].join(".")),
        }
    }
}

/// The field an error message from the JSON decoder names, if any.
fn field_in_error(message: &str) -> String {
    [("unknown field `", '`'), ("unrecognized field name '", '\'')]
        .iter()
        .find_map(|(start, end)| message.split_once(start).and_then(|(_, rest)| rest.split_once(*end)))
        .map_or_else(|| "body".to_owned(), |(name, _)| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::routes::{Lookup, RouteTable};

    fn build(method: Method, path: &str, query: &[(&str, &str)], body: &str) -> Result<DynamicMessage, ApiError> {
        let table = RouteTable::embedded().unwrap();
        let Lookup::Found(route, captures) = table.lookup(&method, path) else { panic!("no route for {path}") };
        let query: Vec<(String, String)> = query.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        request_message(route, &captures, &query, body.as_bytes(), true)
    }

    fn json(message: &DynamicMessage) -> Value {
        let mut out = Vec::new();
        message.serialize_with_options(&mut serde_json::Serializer::new(&mut out), &SerializeOptions::new()).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn path_query_and_body_fill_the_request() {
        let message = build(Method::GET, "/v1/tenants", &[("pageSize", "5"), ("state", "TENANT_STATE_ACTIVE")], "");
        assert_eq!(json(&message.unwrap()), serde_json::json!({"pageSize": 5, "state": "TENANT_STATE_ACTIVE"}));
        let message = build(Method::POST, "/v1/tenants/ten_1:suspend", &[], r#"{"reason": "late", "tenant_id": "x"}"#);
        assert_eq!(json(&message.unwrap()), serde_json::json!({"tenantId": "ten_1", "reason": "late"}));
    }

    #[test]
    fn patch_derives_the_update_mask_from_the_body() {
        let body = r#"{"displayName": "Acme", "labels": {"a": "b"}, "id": "ignored"}"#;
        let message = build(Method::PATCH, "/v1/tenants/ten_1", &[], body).unwrap();
        let out = json(&message);
        assert_eq!(out["tenant"]["id"], "ten_1");
        let mask = out["updateMask"].as_str().unwrap();
        assert!(mask.contains("displayName") && mask.contains("labels") && !mask.contains("id"), "{mask}");
        let explicit =
            build(Method::PATCH, "/v1/tenants/ten_1", &[("updateMask", "labels")], r#"{"displayName": "A"}"#);
        assert_eq!(json(&explicit.unwrap())["updateMask"], "labels");
    }

    fn mask_paths(message: &DynamicMessage) -> Vec<String> {
        let mask = message.get_field_by_name("update_mask").unwrap();
        let paths = mask.as_message().unwrap().get_field_by_name("paths").unwrap();
        paths.as_list().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn a_sent_mask_reaches_the_service_as_written() {
        for (key, value, expected) in [
            ("update_mask", "display_name", &["display_name"][..]),
            ("updateMask", "displayName,labels", &["displayName", "labels"]),
            ("updateMask", "*", &["*"]),
            ("updateMask", "a,,b", &["a", "", "b"]),
            ("updateMask", "", &[]),
        ] {
            let message = build(Method::PATCH, "/v1/tenants/ten_1", &[(key, value)], r#"{"displayName": "A"}"#);
            assert_eq!(mask_paths(&message.unwrap()), expected, "{key}={value}");
        }
    }

    #[test]
    fn bad_input_names_the_field() {
        let error = build(Method::GET, "/v1/tenants", &[("state", "NOPE")], "").unwrap_err();
        assert!(matches!(error, ApiError::InvalidArgument { ref field, .. } if field == "state"), "{error}");
        let error = build(Method::GET, "/v1/tenants", &[("nope", "1")], "").unwrap_err();
        assert!(matches!(error, ApiError::InvalidArgument { ref field, .. } if field == "nope"), "{error}");
        let error = build(Method::POST, "/v1/tenants", &[], r#"{"slug": "a", "bogus": 1}"#).unwrap_err();
        assert!(matches!(error, ApiError::InvalidArgument { ref field, .. } if field == "bogus"), "{error}");
        let error = build(Method::POST, "/v1/tenants", &[], "{").unwrap_err();
        assert!(matches!(error, ApiError::InvalidArgument { ref field, .. } if field == "body"), "{error}");
        let error = build(Method::GET, "/v1/tenants", &[("pageSize", "x")], "").unwrap_err();
        assert!(matches!(error, ApiError::InvalidArgument { ref field, .. } if field == "pageSize"), "{error}");
    }

    #[test]
    fn responses_use_lower_camel_case_and_int64_strings() {
        let pool = RouteTable::embedded().unwrap().pool().clone();
        let plan = pool.get_message_by_name("tenantry.v1.Plan").unwrap();
        let mut message = DynamicMessage::new(plan.clone());
        message.set_field_by_name("monthly_request_quota", Proto::U64(7));
        message.set_field_by_name("display_name", Proto::String("Pro".into()));
        let bytes = prost::Message::encode_to_vec(&message);
        let out: Value = serde_json::from_slice(&response_json(plan, &bytes, false, false).unwrap()).unwrap();
        assert_eq!(out["displayName"], "Pro");
        assert_eq!(out["monthlyRequestQuota"], "7");
    }

    #[test]
    fn zero_values_are_present_and_unset_messages_are_not() {
        let pool = RouteTable::embedded().unwrap().pool().clone();
        let plan = pool.get_message_by_name("tenantry.v1.Plan").unwrap();
        let out: Value = serde_json::from_slice(&response_json(plan, &[], false, false).unwrap()).unwrap();
        assert_eq!(out["requestsPerSecond"], 0);
        assert_eq!(out["monthlyRequestQuota"], "0");
        assert_eq!(out["id"], "");
        let list = pool.get_message_by_name("tenantry.v1.ListTenantsResponse").unwrap();
        let out: Value = serde_json::from_slice(&response_json(list, &[], false, false).unwrap()).unwrap();
        assert_eq!(out, serde_json::json!({"tenants": [], "nextPageToken": ""}));
        let tenant = pool.get_message_by_name("tenantry.v1.Tenant").unwrap();
        let out: Value = serde_json::from_slice(&response_json(tenant, &[], false, false).unwrap()).unwrap();
        assert!(out.get("createTime").is_none() && out["labels"] == serde_json::json!({}), "{out}");
    }
}
