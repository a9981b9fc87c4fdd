//! The JSON Schemas of the OpenAPI document: messages and enums in the
//! proto3 JSON mapping, shaped by `google.api.field_behavior` (OUTPUT_ONLY
//! → `readOnly`, REQUIRED → `required`, IMMUTABLE → said in the
//! description), the well-known types in their JSON forms, the `Status`
//! error schema, and the proto comments that become descriptions.

use std::collections::HashMap;

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::proto::google::api::FieldBehavior;

/// Builds schemas, and collects the named ones (`$ref`) still to write.
pub(super) struct Schemas<'a> {
    pub(super) comments: &'a Comments,
    /// Full names of messages and enums referenced so far.
    pub(super) needed: Vec<String>,
}

impl Schemas<'_> {
    pub(super) fn reference(&mut self, message: &MessageDescriptor) -> Value {
        self.kind(&Kind::Message(message.clone()))
    }

    /// The schema of a whole-message body (`body: "*"`): the message's own
    /// when no field comes from the path, otherwise the message without the
    /// path's fields (they are neither expected nor required in the body).
    pub(super) fn body(&mut self, message: &MessageDescriptor, path_fields: &[String]) -> Value {
        if path_fields.is_empty() {
            return self.reference(message);
        }
        let mut schema = self.message(message);
        let bound: Vec<String> = message
            .fields()
            .filter(|f| path_fields.iter().any(|p| p == f.name()))
            .map(|f| f.json_name().to_owned())
            .collect();
        if let Some(properties) = schema["properties"].as_object_mut() {
            properties.retain(|name, _| !bound.contains(name));
        }
        if let Some(required) = schema["required"].as_array_mut() {
            required.retain(|name| !bound.iter().any(|b| name == b.as_str()));
            if required.is_empty() {
                schema.as_object_mut().map(|o| o.remove("required"));
            }
        }
        schema
    }

    pub(super) fn field(&mut self, field: &FieldDescriptor) -> Value {
        let mut schema = if field.is_map() {
            let Kind::Message(entry) = field.kind() else { unreachable!("map fields are entry messages") };
            let value = entry.map_entry_value_field();
            json!({"type": "object", "additionalProperties": self.kind(&value.kind())})
        } else if field.is_list() {
            json!({"type": "array", "items": self.kind(&field.kind())})
        } else {
            self.kind(&field.kind())
        };
        let description = self.comments.field(field);
        if !description.is_empty()
            && let Value::Object(object) = &mut schema
        {
            object.insert("description".into(), Value::String(description));
        }
        schema
    }

    fn kind(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32", "minimum": i32::MIN, "maximum": i32::MAX})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX})
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": "string", "format": "int64", "pattern": "^-?[0-9]{1,19}$"})
            }
            Kind::Uint64 | Kind::Fixed64 => json!({"type": "string", "format": "uint64", "pattern": "^[0-9]{1,20}$"}),
            Kind::Float | Kind::Double => json!({"oneOf": [
                {"type": "number"},
                {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]},
            ]}),
            Kind::Enum(enumeration) => {
                self.needed.push(enumeration.full_name().to_owned());
                json!({"$ref": format!("#/components/schemas/{}", enumeration.full_name())})
            }
            Kind::Message(message) => match (message.package_name(), message.name()) {
                ("google.protobuf", "Timestamp") => json!({"type": "string", "format": "date-time"}),
                ("google.protobuf", "Duration") => {
                    json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$"})
                }
                ("google.protobuf", "FieldMask") => {
                    json!({"type": "string", "description": "Comma-separated field paths (`displayName,labels`)."})
                }
                ("google.protobuf", "Empty") => json!({"type": "object"}),
                ("google.protobuf", "Struct") => json!({"type": "object", "additionalProperties": true}),
                ("google.protobuf", "Value") => json!({}),
                ("google.protobuf", "ListValue") => json!({"type": "array"}),
                ("google.protobuf", "Any") => {
                    json!({"type": "object", "properties": {"@type": {"type": "string"}}, "additionalProperties": true})
                }
                ("google.protobuf", name) if name.ends_with("Value") => {
                    let inner = message.get_field_by_name("value").map(|f| self.kind(&f.kind())).unwrap_or(json!({}));
                    json!({"oneOf": [inner, {"type": "null"}]})
                }
                _ => {
                    self.needed.push(message.full_name().to_owned());
                    json!({"$ref": format!("#/components/schemas/{}", message.full_name())})
                }
            },
        }
    }

    pub(super) fn named(&mut self, pool: &DescriptorPool, name: &str) -> Value {
        if let Some(enumeration) = pool.get_enum_by_name(name) {
            let names: Vec<String> = enumeration.values().map(|v| v.name().to_owned()).collect();
            let mut description = self.comments.get(enumeration.parent_file().name(), enumeration.path());
            for value in enumeration.values() {
                let text = self.comments.get(value.parent_file().name(), value.path());
                if !text.is_empty() {
                    description.push_str(&format!("\n\n- `{}`: {text}", value.name()));
                }
            }
            return json!({"type": "string", "enum": names, "description": description});
        }
        let Some(message) = pool.get_message_by_name(name) else { return json!({"type": "object"}) };
        self.message(&message)
    }

    /// A message's object schema, shaped by its fields' behaviours.
    fn message(&mut self, message: &MessageDescriptor) -> Value {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for field in message.fields() {
            let mut schema = self.field(&field);
            for behavior in behaviors(&field) {
                match behavior {
                    FieldBehavior::OutputOnly => schema["readOnly"] = Value::Bool(true),
                    FieldBehavior::Required => {
                        required.push(Value::String(field.json_name().to_owned()));
                        // The server refuses an empty value, not only a missing one.
                        if schema["type"] == "string" {
                            schema["minLength"] = json!(1);
                        } else if schema["type"] == "array" {
                            schema["minItems"] = json!(1);
                        }
                    }
                    FieldBehavior::Immutable => {
                        let text = schema["description"].as_str().unwrap_or_default();
                        schema["description"] = json!(format!("{text} Immutable: set once, never updated.").trim());
                    }
                    _ => {}
                }
            }
            properties.insert(field.json_name().to_owned(), schema);
        }
        let mut schema = json!({
            "type": "object",
            "description": self.comments.get(message.parent_file().name(), message.path()),
            "properties": properties,
        });
        if !required.is_empty() {
            schema["required"] = Value::Array(required);
        }
        schema
    }
}

/// The `google.api.field_behavior` annotations of a field (none when the
/// descriptor set lacks the extension).
pub(super) fn behaviors(field: &FieldDescriptor) -> Vec<FieldBehavior> {
    let Some(extension) = field.parent_pool().get_extension_by_name("google.api.field_behavior") else {
        return Vec::new();
    };
    let options = field.options();
    if !options.has_extension(&extension) {
        return Vec::new();
    }
    let value = options.get_extension(&extension);
    let numbers = value.as_list().unwrap_or_default();
    numbers.iter().filter_map(|n| n.as_enum_number()).filter_map(|n| FieldBehavior::try_from(n).ok()).collect()
}

pub(super) fn status_schema() -> Value {
    json!({
        "type": "object",
        "description": "The error shape of every failed call: the gRPC status as JSON.",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "integer", "description": "The gRPC status code (3 INVALID_ARGUMENT, 5 NOT_FOUND, …)."},
            "message": {"type": "string", "description": "A developer-facing message."},
            "details": {
                "type": "array",
                "description": "Rich details (`google.rpc.BadRequest`, `ErrorInfo`, `RetryInfo`, `QuotaFailure`), \
                    each with its `@type`.",
                "items": {
                    "type": "object",
                    "properties": {"@type": {"type": "string"}},
                    "required": ["@type"],
                    "additionalProperties": true,
                },
            },
        },
    })
}

/// Leading comments of every element, by file and source path.
pub(super) struct Comments {
    by_path: HashMap<(String, Vec<i32>), String>,
}

impl Comments {
    pub(super) fn new(pool: &DescriptorPool) -> Comments {
        let mut by_path = HashMap::new();
        for file in pool.files() {
            let Some(info) = &file.file_descriptor_proto().source_code_info else { continue };
            for location in &info.location {
                if let Some(text) = &location.leading_comments {
                    let text = text.lines().map(str::trim).collect::<Vec<_>>().join(" ").trim().to_owned();
                    by_path.insert((file.name().to_owned(), location.path.clone()), text);
                }
            }
        }
        Comments { by_path }
    }

    pub(super) fn get(&self, file: &str, path: &[i32]) -> String {
        self.by_path.get(&(file.to_owned(), path.to_vec())).cloned().unwrap_or_default()
    }

    pub(super) fn field(&self, field: &FieldDescriptor) -> String {
        self.get(field.parent_file().name(), field.path())
    }
}
