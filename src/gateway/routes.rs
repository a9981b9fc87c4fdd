//! The route table: one route per `google.api.http` binding (the main rule
//! and its `additional_bindings`) of every Tenantry RPC, read from the
//! embedded descriptor set at start-up and checked there: malformed
//! templates, fields that do not exist and two bindings that match the same
//! requests stop the server with a message naming the methods.

use std::sync::Arc;

use http::Method;
use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor};

use super::template::{Captures, Template, TemplateError};
use crate::proto::{PACKAGE, google::api::HttpRule, google::api::http_rule::Pattern};

/// Where the request body goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRule {
    /// No body; every field not in the path comes from the query string.
    None,
    /// `body: "*"`: the whole request message (path fields override).
    Whole,
    /// `body: "field"`: that field; the rest from path and query string.
    Field(FieldDescriptor),
}

/// One HTTP binding of one RPC.
#[derive(Debug, Clone)]
pub struct Route {
    /// The HTTP method.
    pub method: Method,
    /// The parsed path template.
    pub template: Template,
    /// Where the body goes.
    pub body: BodyRule,
    /// The RPC.
    pub rpc: MethodDescriptor,
    /// The gRPC path, `/tenantry.v1.TenantService/GetTenant`.
    pub grpc_path: String,
    /// 0 for the main rule, n for the n-th additional binding.
    pub binding: usize,
    /// Whether the response's JSON is written straight from its wire bytes
    /// ([`super::wire_json::plain`]).
    pub plain_output: bool,
}

/// Why the descriptor's HTTP rules are unusable.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("the embedded descriptor set cannot be decoded: {0}")]
    Descriptor(#[from] prost_reflect::DescriptorError),
    #[error("the descriptor set does not define the `google.api.http` option")]
    MissingExtension,
    #[error("{method}: {problem}")]
    Invalid { method: String, problem: String },
    #[error("{method}: {source}")]
    Template { method: String, source: TemplateError },
    #[error("{first} and {second} both bind {verb} {path}")]
    Conflict { first: String, second: String, verb: Method, path: String },
}

/// The outcome of looking a request up.
pub enum Lookup<'a> {
    /// A route, with the path's captures.
    Found(&'a Arc<Route>, Captures),
    /// The path exists with other methods.
    WrongMethod(Vec<Method>),
    /// Nothing matches the path.
    NotFound,
}

/// Every route, most specific first.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    pool: DescriptorPool,
}

impl RouteTable {
    /// The routes of the embedded contract.
    pub fn embedded() -> Result<RouteTable, RouteError> {
        Self::from_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
    }

    /// Reads and checks every HTTP rule of the Tenantry services.
    pub fn from_descriptor_set(bytes: &[u8]) -> Result<RouteTable, RouteError> {
        let pool = DescriptorPool::decode(bytes)?;
        let extension = pool.get_extension_by_name("google.api.http").ok_or(RouteError::MissingExtension)?;
        let mut routes: Vec<Arc<Route>> = Vec::new();
        for service in pool.services().filter(|s| s.package_name() == PACKAGE) {
            for rpc in service.methods() {
                let options = rpc.options();
                if !options.has_extension(&extension) {
                    continue;
                }
                let rule: HttpRule = options
                    .get_extension(&extension)
                    .as_message()
                    .ok_or_else(|| invalid(&rpc, "the http option is not a message"))?
                    .transcode_to()
                    .map_err(|e| invalid(&rpc, &format!("the http option is unreadable: {e}")))?;
                let mut bindings = vec![rule.clone()];
                bindings.extend(rule.additional_bindings.iter().cloned());
                for (binding, rule) in bindings.into_iter().enumerate() {
                    if binding > 0 && !rule.additional_bindings.is_empty() {
                        return Err(invalid(&rpc, "additional bindings cannot nest"));
                    }
                    routes.push(Arc::new(route(&rpc, binding, &rule)?));
                }
            }
        }
        for (i, first) in routes.iter().enumerate() {
            for second in &routes[i + 1..] {
                if first.method == second.method && first.template.same_shape(&second.template) {
                    return Err(RouteError::Conflict {
                        first: first.rpc.full_name().to_owned(),
                        second: second.rpc.full_name().to_owned(),
                        verb: first.method.clone(),
                        path: second.template.source.clone(),
                    });
                }
            }
        }
        // Literals beat variables (`/v1/usage/quota` before `/v1/usage/{x}`).
        routes.sort_by_key(|r| std::cmp::Reverse(r.template.specificity()));
        Ok(RouteTable { routes, pool })
    }

    /// Finds the route for a request.
    pub fn lookup(&self, method: &Method, path: &str) -> Lookup<'_> {
        let mut allowed = Vec::new();
        for route in &self.routes {
            if let Some(captures) = route.template.matches(path) {
                if route.method == *method {
                    return Lookup::Found(route, captures);
                }
                if !allowed.contains(&route.method) {
                    allowed.push(route.method.clone());
                }
            }
        }
        if allowed.is_empty() { Lookup::NotFound } else { Lookup::WrongMethod(allowed) }
    }

    /// Every route.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }

    /// The descriptor pool the routes come from.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }
}

fn route(rpc: &MethodDescriptor, binding: usize, rule: &HttpRule) -> Result<Route, RouteError> {
    let (method, path) = match &rule.pattern {
        Some(Pattern::Get(p)) => (Method::GET, p),
        Some(Pattern::Put(p)) => (Method::PUT, p),
        Some(Pattern::Post(p)) => (Method::POST, p),
        Some(Pattern::Delete(p)) => (Method::DELETE, p),
        Some(Pattern::Patch(p)) => (Method::PATCH, p),
        Some(Pattern::Custom(custom)) => (
            Method::from_bytes(custom.kind.as_bytes())
                .map_err(|_| invalid(rpc, "custom kind is not an HTTP method"))?,
            &custom.path,
        ),
        None => return Err(invalid(rpc, "the http rule has no pattern")),
    };
    let template =
        Template::parse(path).map_err(|source| RouteError::Template { method: rpc.full_name().to_owned(), source })?;
    let input = rpc.input();
    for variable in &template.variables {
        let field = resolve(&input, &variable.field_path)
            .ok_or_else(|| invalid(rpc, &format!("path field `{}` does not exist", variable.field_path.join("."))))?;
        if field.is_list() || field.is_map() || matches!(field.kind(), Kind::Message(_)) {
            return Err(invalid(rpc, &format!("path field `{}` must be a singular scalar", field.name())));
        }
    }
    let body = match rule.body.as_str() {
        "" => BodyRule::None,
        "*" => BodyRule::Whole,
        name => BodyRule::Field(
            input
                .get_field_by_name(name)
                .ok_or_else(|| invalid(rpc, &format!("body field `{name}` does not exist")))?,
        ),
    };
    if body != BodyRule::None && (method == Method::GET || method == Method::DELETE) {
        return Err(invalid(rpc, "GET and DELETE bindings take no body"));
    }
    if !rule.response_body.is_empty() {
        return Err(invalid(rpc, "`response_body` is not supported: responses are the whole message"));
    }
    let grpc_path = format!("/{}/{}", rpc.parent_service().full_name(), rpc.name());
    let plain_output = super::wire_json::plain(&rpc.output());
    Ok(Route { method, template, body, rpc: rpc.clone(), grpc_path, binding, plain_output })
}

/// The field at a path of proto field names, through singular messages.
pub fn resolve(message: &MessageDescriptor, path: &[String]) -> Option<FieldDescriptor> {
    let (last, parents) = path.split_last()?;
    let mut current = message.clone();
    for name in parents {
        let field = current.get_field_by_name(name)?;
        match field.kind() {
            Kind::Message(inner) if !field.is_list() && !field.is_map() => current = inner,
            _ => return None,
        }
    }
    current.get_field_by_name(last)
}

fn invalid(rpc: &MethodDescriptor, problem: &str) -> RouteError {
    RouteError::Invalid { method: rpc.full_name().to_owned(), problem: problem.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tenantry_rpc_has_a_route() {
        let table = RouteTable::embedded().unwrap();
        let pool = table.pool().clone();
        for service in pool.services().filter(|s| s.package_name() == PACKAGE) {
            for rpc in service.methods() {
                assert!(table.iter().any(|r| r.rpc == rpc), "{} has no route", rpc.full_name());
            }
        }
    }

    #[test]
    fn lookups_find_routes_wrong_methods_and_misses() {
        let table = RouteTable::embedded().unwrap();
        match table.lookup(&Method::POST, "/v1/tenants/ten_1:suspend") {
            Lookup::Found(route, captures) => {
                assert_eq!(route.grpc_path, "/tenantry.v1.TenantService/SuspendTenant");
                assert_eq!(captures[0].1, "ten_1");
            }
            _ => panic!("suspend not found"),
        }
        assert!(matches!(table.lookup(&Method::GET, "/.well-known/jwks.json"), Lookup::Found(r, _) if r.binding == 1));
        match table.lookup(&Method::PUT, "/v1/tenants") {
            Lookup::WrongMethod(allowed) => assert!(allowed.contains(&Method::GET) && allowed.contains(&Method::POST)),
            _ => panic!("expected 405"),
        }
        assert!(matches!(table.lookup(&Method::GET, "/v1/nothing"), Lookup::NotFound));
    }

    #[test]
    fn conflicting_rules_are_reported() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
        std::fs::write(
            dir.join("conflict.proto"),
            r#"syntax = "proto3";
package tenantry.v1;
import "google/api/annotations.proto";
message Thing { string name = 1; string id = 2; }
service Things {
  rpc GetThing(Thing) returns (Thing) { option (google.api.http) = {get: "/v1/things/{name}"}; }
  rpc FindThing(Thing) returns (Thing) { option (google.api.http) = {get: "/v1/things/{id}"}; }
}
"#,
        )
        .unwrap();
        let mut compiler = protox::Compiler::new([dir.to_str().unwrap(), proto]).unwrap();
        compiler.include_imports(true);
        compiler.open_file("conflict.proto").unwrap();
        let error = RouteTable::from_descriptor_set(&compiler.encode_file_descriptor_set()).unwrap_err().to_string();
        assert!(error.contains("both bind GET /v1/things/{"), "{error}");
    }
}
