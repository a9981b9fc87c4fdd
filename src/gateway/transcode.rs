//! JSON ⇄ protobuf for one call, in the proto3 canonical JSON mapping
//! (prost-reflect): lowerCamelCase out and both spellings in, 64-bit integers
//! as strings, enums by name, well-known types in their JSON forms.
//!
//! A request message is assembled as one JSON object and decoded once, so
//! every source of fields gets the same rules: the body (the whole message
//! for `body: "*"`, one field otherwise), then the query string (`a.b=1`,
//! repeated `x=1&x=2`, enums by name, RFC 3339 timestamps), then the path
//! variables, which win. For PATCH without an `update_mask`, the mask is
//! derived from the fields present in the body.

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

    let client_sent_mask = ["update_mask", "updateMask"].iter().any(|k| root.contains_key(*k));
    let derived_mask = if route.method == Method::PATCH && !client_sent_mask {
        derive_update_mask(route, &root, captures)
    } else {
        None
    };

    let options = DeserializeOptions::new().deny_unknown_fields(deny_unknown_fields);
    let mut message = DynamicMessage::deserialize_with_options(input, Value::Object(root), &options)
        .map_err(|e| ApiError::invalid(field_in_error(&e.to_string()), e.to_string()))?;
    if let Some((field, mask)) = derived_mask {
        message.set_field(&field, Proto::Message(mask));
    }
    Ok(message)
}

/// Renders a response message as canonical JSON.
pub fn response_json(output: MessageDescriptor, encoded: &[u8], pretty: bool) -> Result<Vec<u8>, ApiError> {
    let message = DynamicMessage::decode(output, encoded).map_err(ApiError::internal)?;
    let options = SerializeOptions::new();
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
        let out: Value = serde_json::from_slice(&response_json(plan, &bytes, false).unwrap()).unwrap();
        assert_eq!(out, serde_json::json!({"displayName": "Pro", "monthlyRequestQuota": "7"}));
    }
}
