//! The OpenAPI 3.1 description of the REST API, generated once at start-up
//! from the same routes and descriptors the gateway serves: paths and
//! operations per binding, path and query parameters, request and response
//! schemas in the JSON mapping (lowerCamelCase, int64 as strings, enums by
//! name, well-known types in their JSON forms), the error schema, security
//! schemes for bearer tokens and API keys, and proto comments as
//! descriptions.

use std::collections::{BTreeMap, HashMap};

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use super::routes::{BodyRule, Route, RouteTable};
use crate::policy::{Access, PolicyTable, TenantScope};

/// Builds the document.
pub fn document(routes: &RouteTable, policies: &PolicyTable) -> Value {
    let comments = Comments::new(routes.pool());
    let mut schemas = Schemas { comments: &comments, needed: Vec::new() };
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut tags = BTreeMap::new();
    for route in routes.iter() {
        let service = route.rpc.parent_service();
        tags.entry(service.name().to_owned()).or_insert_with(|| {
            json!({"name": service.name(), "description": comments.get(service.parent_file().name(), service.path())})
        });
        let operation = operation(route, policies, &comments, &mut schemas);
        paths
            .entry(route.template.openapi_path())
            .or_default()
            .insert(route.method.as_str().to_ascii_lowercase(), operation);
    }
    let mut components = Map::new();
    let mut done = std::collections::HashSet::new();
    while let Some(name) = schemas.needed.pop() {
        if !done.insert(name.clone()) {
            continue;
        }
        let schema = schemas.named(routes.pool(), &name);
        components.insert(name, schema);
    }
    components.insert("Status".into(), status_schema());
    let sorted: BTreeMap<String, Value> = components.into_iter().collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Tenantry API",
            "version": "v1",
            "description": "The REST/JSON form of Tenantry's gRPC API (package `tenantry.v1`), transcoded by the \
                gateway from the same contract and served by the same stack. JSON follows the proto3 canonical \
                mapping: lowerCamelCase names (proto names are accepted too), 64-bit integers as strings, enums by \
                name, RFC 3339 timestamps. Platform admins name the tenant of tenant-scoped calls with `x-tenant-id`.",
        },
        "tags": tags.into_values().collect::<Vec<_>>(),
        "security": [{"bearerAuth": []}, {"apiKey": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                    "description": "An access token (JWT) or an API key, as `Authorization: Bearer <token>`."},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key",
                    "description": "An API key (`tnty_…`)."},
            },
            "schemas": sorted,
        },
    })
}

fn operation(route: &Route, policies: &PolicyTable, comments: &Comments, schemas: &mut Schemas) -> Value {
    let rpc = &route.rpc;
    let description = comments.get(rpc.parent_file().name(), rpc.path());
    let summary = description.split(". ").next().unwrap_or_default().trim_end_matches('.').to_owned();
    let mut parameters = Vec::new();
    let input = rpc.input();
    for variable in &route.template.variables {
        let Some(field) = super::routes::resolve(&input, &variable.field_path) else { continue };
        parameters.push(json!({
            "name": variable.openapi_name(),
            "in": "path",
            "required": true,
            "description": format!("`{}`: {}", variable.field_path.join("."), comments.field(&field)),
            "schema": schemas.field(&field),
        }));
    }
    if route.body != BodyRule::Whole {
        let bound: Vec<String> = route.template.variables.iter().map(|v| v.field_path.join(".")).collect();
        let skip = match &route.body {
            BodyRule::Field(field) => Some(field.name().to_owned()),
            _ => None,
        };
        query_parameters(&input, "", "", &bound, skip.as_deref(), 0, comments, schemas, &mut parameters);
    }
    let policy = policies.get(&route.grpc_path);
    if let Some(policy) = policy
        && policy.tenant_scope != TenantScope::None
    {
        parameters.push(json!({
            "name": "x-tenant-id",
            "in": "header",
            "required": false,
            "description": "The tenant to act in (id or slug). Platform admins must name it for tenant-scoped calls; \
                tenant-bound credentials act in their own tenant.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 64},
        }));
    }
    let mut operation = Map::new();
    let mut id = format!("{}_{}", rpc.parent_service().name(), rpc.name());
    if route.binding > 0 {
        id.push_str(&format!("_{}", route.binding + 1));
    }
    operation.insert("operationId".into(), Value::String(id));
    operation.insert("tags".into(), json!([rpc.parent_service().name()]));
    operation.insert("summary".into(), Value::String(summary));
    operation.insert("description".into(), Value::String(description));
    operation.insert("parameters".into(), Value::Array(parameters));
    let body_schema = match &route.body {
        BodyRule::None => None,
        BodyRule::Whole => Some(schemas.reference(&input)),
        BodyRule::Field(field) => Some(schemas.field(field)),
    };
    if let Some(schema) = body_schema {
        operation.insert(
            "requestBody".into(),
            json!({"required": false, "content": {"application/json": {"schema": schema}}}),
        );
    }
    let output = schemas.reference(&rpc.output());
    let ok = if rpc.is_server_streaming() {
        json!({
            "description": "A stream of messages: newline-delimited JSON (one message per line) by default, or \
                Server-Sent Events with `Accept: text/event-stream`. An error after the first message ends the \
                stream with a final line in the error shape.",
            "content": {
                "application/x-ndjson": {"schema": output},
                "text/event-stream": {"schema": {"type": "string"}},
            },
        })
    } else {
        json!({"description": "OK", "content": {"application/json": {"schema": output}}})
    };
    operation.insert(
        "responses".into(),
        json!({
            "200": ok,
            "default": {
                "description": "An error: the gRPC code mapped to HTTP, with the gRPC status as the body.",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}},
            },
        }),
    );
    if policy.is_some_and(|p| p.access == Access::Public) {
        operation.insert("security".into(), json!([]));
    }
    Value::Object(operation)
}

/// Query parameters for every field not in the path or body, nested
/// messages flattened with dots (`filter.state`).
#[allow(clippy::too_many_arguments)]
fn query_parameters(
    message: &MessageDescriptor,
    proto_prefix: &str,
    json_prefix: &str,
    bound: &[String],
    skip: Option<&str>,
    depth: usize,
    comments: &Comments,
    schemas: &mut Schemas,
    out: &mut Vec<Value>,
) {
    for field in message.fields() {
        let proto_name = format!("{proto_prefix}{}", field.name());
        if bound.contains(&proto_name) || (depth == 0 && skip == Some(field.name())) || field.is_map() {
            continue;
        }
        let json_name = format!("{json_prefix}{}", field.json_name());
        if let Kind::Message(inner) = field.kind()
            && !is_json_scalar(&inner)
        {
            if !field.is_list() && depth < 3 {
                let (p, j) = (format!("{proto_name}."), format!("{json_name}."));
                query_parameters(&inner, &p, &j, bound, None, depth + 1, comments, schemas, out);
            }
            continue;
        }
        out.push(json!({
            "name": json_name,
            "in": "query",
            "required": false,
            "description": comments.field(&field),
            "schema": schemas.field(&field),
        }));
    }
}

/// Well-known types whose JSON form is one scalar (usable in a query string).
fn is_json_scalar(message: &MessageDescriptor) -> bool {
    message.package_name() == "google.protobuf"
        && (matches!(message.name(), "Timestamp" | "Duration" | "FieldMask")
            || message.name().ends_with("Value") && !matches!(message.name(), "Value" | "ListValue"))
}

struct Schemas<'a> {
    comments: &'a Comments,
    needed: Vec<String>,
}

impl Schemas<'_> {
    fn reference(&mut self, message: &MessageDescriptor) -> Value {
        self.kind(&Kind::Message(message.clone()))
    }

    fn field(&mut self, field: &FieldDescriptor) -> Value {
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

    fn named(&mut self, pool: &DescriptorPool, name: &str) -> Value {
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
        let mut properties = Map::new();
        for field in message.fields() {
            properties.insert(field.json_name().to_owned(), self.field(&field));
        }
        json!({
            "type": "object",
            "description": self.comments.get(message.parent_file().name(), message.path()),
            "properties": properties,
        })
    }
}

fn status_schema() -> Value {
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
struct Comments {
    by_path: HashMap<(String, Vec<i32>), String>,
}

impl Comments {
    fn new(pool: &DescriptorPool) -> Comments {
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

    fn get(&self, file: &str, path: &[i32]) -> String {
        self.by_path.get(&(file.to_owned(), path.to_vec())).cloned().unwrap_or_default()
    }

    fn field(&self, field: &FieldDescriptor) -> String {
        self.get(field.parent_file().name(), field.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Value {
        document(&RouteTable::embedded().unwrap(), &PolicyTable::embedded().unwrap())
    }

    #[test]
    fn every_route_is_an_operation_with_comments() {
        let spec = spec();
        let table = RouteTable::embedded().unwrap();
        for route in table.iter() {
            let path = route.template.openapi_path();
            let operation = &spec["paths"][&path][route.method.as_str().to_ascii_lowercase()];
            assert!(operation.is_object(), "{} {path} missing", route.method);
            assert!(!operation["description"].as_str().unwrap().is_empty(), "{path} has no description");
        }
        let get_tenant = &spec["paths"]["/v1/tenants/{tenant_id}"]["get"];
        assert_eq!(get_tenant["parameters"][0]["in"], "path");
        let list = &spec["paths"]["/v1/tenants"]["get"]["parameters"];
        assert!(list.as_array().unwrap().iter().any(|p| p["name"] == "pageSize"));
    }

    #[test]
    fn schemas_follow_the_json_mapping() {
        let spec = spec();
        let plan = &spec["components"]["schemas"]["tenantry.v1.Plan"]["properties"];
        assert_eq!(plan["monthlyRequestQuota"]["type"], "string");
        assert_eq!(plan["createTime"]["format"], "date-time");
        let state = &spec["components"]["schemas"]["tenantry.v1.TenantState"];
        assert!(state["enum"].as_array().unwrap().contains(&json!("TENANT_STATE_ACTIVE")));
        assert_eq!(spec["paths"]["/v1/auth/jwks"]["get"]["security"], json!([]));
    }
}
