//! The OpenAPI 3.1 description of the REST API, generated once at start-up
//! from the same routes and descriptors the gateway serves: paths and
//! operations per binding, path and query parameters, request and response
//! schemas in the JSON mapping (lowerCamelCase, int64 as strings, enums by
//! name, well-known types in their JSON forms), the error schema, security
//! schemes for bearer tokens and API keys, and proto comments as
//! descriptions.
//!
//! `google.api.field_behavior` annotations shape the schemas: OUTPUT_ONLY
//! fields are `readOnly`, REQUIRED fields are listed in `required` (and may
//! not be empty), IMMUTABLE fields say so in their description. Request
//! bodies are required and carry the example written in [`super::examples`];
//! `pageSize` has the server's real bounds; `servers` is the relative `/`, so
//! the document works behind any host or proxy prefix that serves it.
//!
//! This file builds the paths and operations; [`schemas`] builds the JSON
//! Schemas of messages and enums.

mod schemas;

use std::collections::BTreeMap;

use prost_reflect::{Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use self::schemas::{Comments, Schemas, behaviors, status_schema};
use super::{
    examples,
    routes::{BodyRule, Route, RouteTable},
};
use crate::{
    pagination::MAX_PAGE_SIZE,
    policy::{Access, PolicyTable, TenantScope},
    proto::google::api::FieldBehavior,
};

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
        "servers": [{"url": "/", "description": "The server that serves this document."}],
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
        BodyRule::Whole => Some(schemas.body(&input, &path_fields(route))),
        BodyRule::Field(field) => Some(schemas.field(field)),
    };
    if let Some(schema) = body_schema {
        let mut media = json!({"schema": schema});
        if let Some(example) = examples::request_body(rpc.full_name()) {
            media["example"] = example;
        }
        operation.insert("requestBody".into(), json!({"required": true, "content": {"application/json": media}}));
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
        let required = depth == 0 && behaviors(&field).contains(&FieldBehavior::Required);
        let schema = if depth == 0 && field.name() == "page_size" {
            // The server's bounds (src/pagination.rs): 0 asks for the default
            // page, negatives are refused, larger values are read as the maximum.
            json!({"type": "integer", "format": "int32", "minimum": 0, "maximum": MAX_PAGE_SIZE, "default": 0})
        } else {
            schemas.field(&field)
        };
        out.push(json!({
            "name": json_name,
            "in": "query",
            "required": required,
            "description": comments.field(&field),
            "schema": schema,
        }));
    }
}

/// Well-known types whose JSON form is one scalar (usable in a query string).
fn is_json_scalar(message: &MessageDescriptor) -> bool {
    message.package_name() == "google.protobuf"
        && (matches!(message.name(), "Timestamp" | "Duration" | "FieldMask")
            || message.name().ends_with("Value") && !matches!(message.name(), "Value" | "ListValue"))
}

/// The top-level request fields a route takes from its path.
fn path_fields(route: &Route) -> Vec<String> {
    route.template.variables.iter().filter(|v| v.field_path.len() == 1).map(|v| v.field_path[0].clone()).collect()
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

    /// Every message schema against its descriptor: OUTPUT_ONLY fields are
    /// `readOnly`, REQUIRED ones are `required`, and nothing else is.
    #[test]
    fn field_behaviors_become_read_only_and_required() {
        let spec = spec();
        let pool = RouteTable::embedded().unwrap().pool().clone();
        let mut seen = 0;
        for (name, schema) in spec["components"]["schemas"].as_object().unwrap() {
            let Some(message) = pool.get_message_by_name(name) else { continue };
            let required: Vec<&str> =
                schema["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            for field in message.fields() {
                let behaviors = behaviors(&field);
                let property = &schema["properties"][field.json_name()];
                let output_only = behaviors.contains(&FieldBehavior::OutputOnly);
                assert_eq!(property["readOnly"] == json!(true), output_only, "{}", field.full_name());
                let is_required = behaviors.contains(&FieldBehavior::Required);
                assert_eq!(required.contains(&field.json_name()), is_required, "{}", field.full_name());
                seen += usize::from(output_only || is_required);
            }
        }
        assert!(seen > 40, "only {seen} annotated fields reached the document");
        let tenant = &spec["components"]["schemas"]["tenantry.v1.Tenant"]["properties"];
        assert_eq!(tenant["id"]["readOnly"], true);
        assert_eq!(tenant["createTime"]["readOnly"], true);
        assert!(tenant["displayName"].get("readOnly").is_none());
        assert!(tenant["slug"]["description"].as_str().unwrap().ends_with("Immutable: set once, never updated."));
        let create = &spec["components"]["schemas"]["tenantry.v1.CreateTenantRequest"];
        assert_eq!(create["required"], json!(["slug", "displayName", "planId"]));
        assert_eq!(create["properties"]["slug"]["minLength"], 1);
        let usage = &spec["paths"]["/v1/usage"]["get"]["parameters"];
        let start = usage.as_array().unwrap().iter().find(|p| p["name"] == "startTime").unwrap();
        assert_eq!(start["required"], true, "a REQUIRED query field is a required parameter");
    }

    #[test]
    fn path_fields_are_not_expected_in_a_whole_message_body() {
        let spec = spec();
        let body = &spec["paths"]["/v1/tenants/{tenant_id}:suspend"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"];
        assert!(body["properties"]["reason"].is_object());
        assert!(body["properties"].get("tenantId").is_none());
        assert!(body.get("required").is_none(), "tenant_id is REQUIRED but comes from the path: {body}");
        let assign =
            &spec["paths"]["/v1/users/{user_id}/roles"]["post"]["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(assign["required"], json!(["roleId"]));
    }

    #[test]
    fn every_request_body_is_required_with_an_example_that_fits_the_contract() {
        let spec = spec();
        let table = RouteTable::embedded().unwrap();
        let mut bodies = 0;
        for route in table.iter() {
            let operation = &spec["paths"][route.template.openapi_path()][route.method.as_str().to_ascii_lowercase()];
            let message = match &route.body {
                BodyRule::None => {
                    assert!(operation.get("requestBody").is_none());
                    continue;
                }
                BodyRule::Whole => route.rpc.input(),
                BodyRule::Field(field) => match field.kind() {
                    Kind::Message(message) => message,
                    _ => panic!("{} has a scalar body", route.rpc.full_name()),
                },
            };
            bodies += 1;
            let name = route.rpc.full_name();
            assert_eq!(operation["requestBody"]["required"], true, "{name}");
            let example = operation["requestBody"]["content"]["application/json"]["example"].clone();
            assert!(example.is_object(), "{name} has no example body (src/gateway/examples.rs)");
            let options = prost_reflect::DeserializeOptions::new().deny_unknown_fields(true);
            let parsed = prost_reflect::DynamicMessage::deserialize_with_options(message.clone(), example, &options);
            let parsed = parsed.unwrap_or_else(|e| panic!("{name}: the example is not a {}: {e}", message.full_name()));
            let from_path = path_fields(route);
            for field in message.fields() {
                if behaviors(&field).contains(&FieldBehavior::Required)
                    && !(route.body == BodyRule::Whole && from_path.contains(&field.name().to_owned()))
                {
                    assert!(parsed.has_field(&field), "{name}: the example lacks REQUIRED {}", field.name());
                }
            }
        }
        assert!(bodies >= 25, "{bodies}");
    }

    #[test]
    fn page_size_has_the_servers_bounds_and_there_is_a_relative_server() {
        let spec = spec();
        assert_eq!(spec["servers"][0]["url"], "/");
        let mut lists = 0;
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (verb, operation) in item.as_object().unwrap() {
                let parameters = operation["parameters"].as_array().unwrap();
                let Some(size) = parameters.iter().find(|p| p["name"] == "pageSize") else { continue };
                lists += 1;
                assert_eq!(size["schema"]["minimum"], 0, "{verb} {path}");
                assert_eq!(size["schema"]["maximum"], MAX_PAGE_SIZE, "{verb} {path}");
                assert_eq!(size["schema"]["maximum"], 1000, "{verb} {path}");
            }
        }
        assert!(lists >= 8, "{lists}");
    }
}
