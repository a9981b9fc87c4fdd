//! The hostile-input corpus: a NUL in every text field of every Tenantry
//! method (generated from the descriptor, so a new field is covered without
//! a change here), the gRPC envelope and protobuf faults sent as raw bytes,
//! REST path ids and bodies, and clients that go away mid-call. Each case
//! asserts its exact answer; afterwards the server must still be healthy and
//! must have answered nothing as INTERNAL or UNKNOWN.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body::Frame;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MapKey, MessageDescriptor, Value};
use tenantry::{
    policy::{Access, PolicyTable, TenantScope},
    proto::tenantry::v1::{EnqueueJobRequest, GetTenantRequest, LeaseJobsRequest, ListUsersRequest},
};
use tokio::io::AsyncWriteExt;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use tonic_types::StatusExt;

use super::{
    server_count, server_errors,
    wire::{self, Answer, frame},
};
use crate::harness::{
    TestApp,
    http_client::{self, HttpResponse},
    tenants::{TenantHandle, upsert_plan},
};

/// The text every NUL case sends.
const NUL_TEXT: &str = "x\0y";

#[tokio::test]
async fn hostile_inputs_get_their_exact_codes_and_the_server_stays_healthy() {
    let app = TestApp::builder().configure(|c| c.no_workers = true).spawn().await;
    upsert_plan(&app.channel, &app.admin_key, "faults-roomy", 100_000, 100_000, 0).await;
    let tenant = app.create_tenant_on("hostile", "faults-roomy").await;

    let nul = nul_in_every_text_field(&app, &tenant).await;
    let grpc = envelope_and_protobuf_faults(&app, &tenant).await;
    let rest = rest_faults(&app, &tenant).await;
    let gone = disconnects(&app, &tenant).await;
    let total = nul + grpc + rest + gone;
    eprintln!("corpus: {nul} NUL cases, {grpc} gRPC envelope/protobuf, {rest} REST, {gone} disconnects = {total}");
    assert!(total >= 100, "the corpus has {total} cases");

    assert_healthy(&app, &tenant).await;
    let errors = server_errors(&app).await;
    assert!(errors.is_empty(), "calls answered INTERNAL or UNKNOWN: {errors:#?}");
}

/// The server answers health and an ordinary call.
async fn assert_healthy(app: &TestApp, tenant: &TenantHandle) {
    let health = app.health().check(HealthCheckRequest { service: String::new() }).await.expect("health answers");
    assert_eq!(health.into_inner().status(), ServingStatus::Serving);
    let request = tenant.as_admin(GetTenantRequest { tenant_id: tenant.id.clone() });
    app.tenants().get_tenant(request).await.expect("an ordinary call still succeeds");
}

/// A NUL in each text field of each method's request, alone: INVALID_ARGUMENT
/// naming the field. Returns the number of cases.
async fn nul_in_every_text_field(app: &TestApp, tenant: &TenantHandle) -> usize {
    let pool = DescriptorPool::decode(tenantry::proto::FILE_DESCRIPTOR_SET).expect("the embedded descriptor set");
    let table = PolicyTable::embedded().expect("the policy table");
    let bearer = format!("Bearer {}", app.admin_key);
    let mut cases = 0;
    let mut methods = 0;
    for policy in table.iter().filter(|p| p.service.starts_with("tenantry.v1.")) {
        let method = pool
            .get_service_by_name(&policy.service)
            .and_then(|s| s.methods().find(|m| m.name() == policy.method))
            .expect("the policy's method is in the descriptor");
        let mut headers = vec![];
        if policy.access != Access::Public {
            headers.push(("authorization", bearer.as_str()));
        }
        if policy.tenant_scope == TenantScope::Required {
            headers.push(("x-tenant-id", tenant.id.as_str()));
        }
        let generated = nul_cases(&method.input(), 0);
        methods += usize::from(!generated.is_empty());
        for (message, field) in generated {
            let answer = wire::post(&app.channel, &policy.path, &headers, frame(0, &message.encode_to_vec())).await;
            let status = answer.status.unwrap_or_else(|| panic!("{} {field}: no gRPC status", policy.path));
            assert_eq!(status.code(), Code::InvalidArgument, "{} with a NUL in {field}: {status:?}", policy.path);
            let violations = status.get_error_details().bad_request().map(|b| b.field_violations.clone());
            let named: Vec<String> = violations.unwrap_or_default().into_iter().map(|v| v.field).collect();
            assert_eq!(named, vec![field.clone()], "{} names the field with the NUL: {status:?}", policy.path);
            cases += 1;
        }
    }
    assert!(methods >= 30, "text fields in only {methods} methods");
    cases
}

/// Messages of type `descriptor` with one text field holding a NUL, each
/// with the path the server should name (`events[0].dimensions`).
fn nul_cases(descriptor: &MessageDescriptor, depth: usize) -> Vec<(DynamicMessage, String)> {
    let mut cases = vec![];
    for field in descriptor.fields() {
        let name = field.name().to_owned();
        let mut message = DynamicMessage::new(descriptor.clone());
        match field.kind() {
            Kind::String if field.is_list() => {
                message.set_field(&field, Value::List(vec![Value::String(NUL_TEXT.into())]));
                cases.push((message, format!("{name}[0]")));
            }
            Kind::String => {
                message.set_field(&field, Value::String(NUL_TEXT.into()));
                cases.push((message, name));
            }
            Kind::Message(entry) if field.is_map() => {
                let (key, value) = (entry.map_entry_key_field(), entry.map_entry_value_field());
                if key.kind() == Kind::String {
                    let mut with_key = message.clone();
                    let map = [(MapKey::String(NUL_TEXT.into()), value.default_value())].into_iter().collect();
                    with_key.set_field(&field, Value::Map(map));
                    cases.push((with_key, name.clone()));
                }
                if value.kind() == Kind::String && key.kind() == Kind::String {
                    let map = [(MapKey::String("k".into()), Value::String(NUL_TEXT.into()))].into_iter().collect();
                    message.set_field(&field, Value::Map(map));
                    cases.push((message, name));
                }
            }
            Kind::Message(inner) if depth < 3 && !inner.full_name().starts_with("google.protobuf.") => {
                for (child, below) in nul_cases(&inner, depth + 1) {
                    let mut message = message.clone();
                    if field.is_list() {
                        message.set_field(&field, Value::List(vec![Value::Message(child)]));
                        cases.push((message, format!("{name}[0].{below}")));
                    } else {
                        message.set_field(&field, Value::Message(child));
                        cases.push((message, format!("{name}.{below}")));
                    }
                }
            }
            _ => {}
        }
    }
    cases
}

/// What a raw case must get back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A gRPC status with this code (over HTTP 200).
    Grpc(Code),
    /// This HTTP status (with a gRPC status for clients that read one).
    Http(u16),
}

/// One raw request on the gRPC listener.
struct RawCase {
    name: &'static str,
    method: Method,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    expect: Expect,
}

/// The gRPC envelope (method, content type, metadata, framing, sizes) and
/// protobuf faults (wire bytes, UTF-8, wire types, nesting), as raw requests.
async fn envelope_and_protobuf_faults(app: &TestApp, tenant: &TenantHandle) -> usize {
    const GET_TENANT: &str = "/tenantry.v1.TenantService/GetTenant";
    const ENQUEUE: &str = "/tenantry.v1.JobsService/EnqueueJob";
    let valid = GetTenantRequest { tenant_id: tenant.id.clone() }.encode_to_vec();
    let mut longer = frame(0, &valid).to_vec();
    longer[4] += 10;
    let auth = [("authorization", format!("Bearer {}", app.admin_key))];
    let grpc = |extra: &[(&'static str, &str)]| {
        let mut headers = vec![("content-type", "application/grpc".to_owned()), ("te", "trailers".to_owned())];
        headers.extend(auth.iter().cloned());
        headers.extend(extra.iter().map(|(n, v)| (*n, (*v).to_owned())));
        headers
    };
    let in_tenant = grpc(&[("x-tenant-id", tenant.id.as_str())]);
    let case = |name, path, headers: &Vec<(&'static str, String)>, body: Bytes, expect| RawCase {
        name,
        method: Method::POST,
        path,
        headers: headers.clone(),
        body,
        expect,
    };
    let plain = grpc(&[]);
    let huge_header = "h".repeat(60 * 1024);
    let just_under = "h".repeat(20 * 1024);
    let mut cases = vec![
        case("a valid message", GET_TENANT, &plain, frame(0, &valid), Expect::Grpc(Code::Ok)),
        case(
            "a length prefix longer than the body",
            GET_TENANT,
            &plain,
            longer.into(),
            Expect::Grpc(Code::InvalidArgument),
        ),
        case(
            "a compressed flag without grpc-encoding",
            GET_TENANT,
            &plain,
            frame(1, &valid),
            Expect::Grpc(Code::InvalidArgument),
        ),
        case("a compressed flag of 2", GET_TENANT, &plain, frame(2, &valid), Expect::Grpc(Code::InvalidArgument)),
        case("an empty body", GET_TENANT, &plain, Bytes::new(), Expect::Grpc(Code::InvalidArgument)),
        case(
            "a body shorter than a prefix",
            GET_TENANT,
            &plain,
            Bytes::from_static(&[0, 0]),
            Expect::Grpc(Code::InvalidArgument),
        ),
        case(
            "a 5 MiB message",
            GET_TENANT,
            &plain,
            frame(0, &vec![0x0a; 5 << 20]),
            Expect::Grpc(Code::ResourceExhausted),
        ),
        case(
            "a length prefix of 4 GiB",
            GET_TENANT,
            &plain,
            Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff, 1]),
            Expect::Grpc(Code::ResourceExhausted),
        ),
        case("invalid wire bytes", GET_TENANT, &plain, frame(0, &[0xff; 11]), Expect::Grpc(Code::InvalidArgument)),
        case(
            "a length past the message's end",
            GET_TENANT,
            &plain,
            frame(0, &[0x0a, 0x05, b'a']),
            Expect::Grpc(Code::InvalidArgument),
        ),
        case(
            "invalid UTF-8 in a string",
            GET_TENANT,
            &plain,
            frame(0, &[0x0a, 0x02, 0xc3, 0x28]),
            Expect::Grpc(Code::InvalidArgument),
        ),
        case(
            "a varint where a string belongs",
            GET_TENANT,
            &plain,
            frame(0, &[0x08, 0x01]),
            Expect::Grpc(Code::InvalidArgument),
        ),
        case("a group wire type", GET_TENANT, &plain, frame(0, &[0x0b]), Expect::Grpc(Code::InvalidArgument)),
        case("wire type 7", GET_TENANT, &plain, frame(0, &[0x0f, 0x00]), Expect::Grpc(Code::InvalidArgument)),
        case("a truncated varint", GET_TENANT, &plain, frame(0, &[0x10, 0xff]), Expect::Grpc(Code::InvalidArgument)),
        case(
            "a NUL in the path's id",
            GET_TENANT,
            &plain,
            frame(0, &GetTenantRequest { tenant_id: "ten_\0".into() }.encode_to_vec()),
            Expect::Grpc(Code::InvalidArgument),
        ),
        case(
            "a struct nested 60 deep",
            ENQUEUE,
            &in_tenant,
            frame(0, &nested_payload(60)),
            Expect::Grpc(Code::InvalidArgument),
        ),
        case(
            "a NUL deep in a struct",
            ENQUEUE,
            &in_tenant,
            frame(0, &nul_in_payload()),
            Expect::Grpc(Code::InvalidArgument),
        ),
        case(
            "an unknown method",
            "/tenantry.v1.TenantService/NoSuchMethod",
            &plain,
            frame(0, &valid),
            Expect::Grpc(Code::Unimplemented),
        ),
        case(
            "an unknown service",
            "/tenantry.v1.NoSuchService/GetTenant",
            &plain,
            frame(0, &valid),
            Expect::Grpc(Code::Unimplemented),
        ),
        case(
            "an unsupported grpc-encoding",
            GET_TENANT,
            &grpc(&[("grpc-encoding", "br")]),
            frame(1, &valid),
            Expect::Grpc(Code::Unimplemented),
        ),
        case(
            "gzip, which this server does not accept",
            GET_TENANT,
            &grpc(&[("grpc-encoding", "gzip")]),
            frame(1, &valid),
            Expect::Grpc(Code::Unimplemented),
        ),
        case(
            "a 60 KB header",
            GET_TENANT,
            &grpc(&[("x-padding", &huge_header)]),
            frame(0, &valid),
            Expect::Grpc(Code::ResourceExhausted),
        ),
        case(
            "a 20 KB header",
            GET_TENANT,
            &grpc(&[("x-padding", &just_under)]),
            frame(0, &valid),
            Expect::Grpc(Code::Ok),
        ),
        case(
            "a malformed grpc-timeout",
            GET_TENANT,
            &grpc(&[("grpc-timeout", "soon")]),
            frame(0, &valid),
            Expect::Grpc(Code::InvalidArgument),
        ),
        case(
            "no credential",
            GET_TENANT,
            &vec![("content-type", "application/grpc".to_owned())],
            frame(0, &valid),
            Expect::Grpc(Code::Unauthenticated),
        ),
    ];
    for (name, method) in [("GET", Method::GET), ("PUT", Method::PUT), ("DELETE", Method::DELETE)] {
        cases.push(RawCase { method, ..case(name, GET_TENANT, &plain, Bytes::new(), Expect::Http(405)) });
    }
    for (name, content_type) in [
        ("content-type application/json", Some("application/json")),
        ("content-type text/plain", Some("text/plain")),
        ("content-type application/grpcx", Some("application/grpcx")),
        ("no content-type", None),
    ] {
        let mut headers: Vec<_> = plain.iter().filter(|(n, _)| *n != "content-type").cloned().collect();
        if let Some(content_type) = content_type {
            headers.push(("content-type", content_type.to_owned()));
        }
        cases.push(case(name, GET_TENANT, &headers, frame(0, &valid), Expect::Http(415)));
    }
    let count = cases.len();
    for case in cases {
        let headers: Vec<(&str, &str)> = case.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let answer = wire::send(&app.channel, case.method, case.path, &headers, case.body).await;
        let got = match answer.http {
            200 => answer.code().map(Expect::Grpc),
            http => Some(Expect::Http(http)),
        };
        assert_eq!(got, Some(case.expect), "{}: {answer:?}", case.name);
        if let Expect::Http(_) = case.expect {
            // Not gRPC: still a status a gRPC client can read, never OK.
            assert!(answer.code().is_some_and(|c| c != Code::Ok), "{}: {answer:?}", case.name);
        }
    }
    count
}

/// An EnqueueJob request whose payload nests `levels` structs deep (each
/// level is three messages: Struct, its map entry, Value).
fn nested_payload(levels: usize) -> Vec<u8> {
    let mut value = prost_types::Value { kind: Some(prost_types::value::Kind::StringValue("leaf".into())) };
    for _ in 0..levels {
        let inner = prost_types::Struct { fields: [("n".to_owned(), value)].into_iter().collect() };
        value = prost_types::Value { kind: Some(prost_types::value::Kind::StructValue(inner)) };
    }
    let Some(prost_types::value::Kind::StructValue(payload)) = value.kind else { unreachable!() };
    EnqueueJobRequest { kind: "faults.deep".into(), payload: Some(payload), ..Default::default() }.encode_to_vec()
}

/// An EnqueueJob request with a NUL in a string three structs down.
fn nul_in_payload() -> Vec<u8> {
    let leaf = prost_types::Value { kind: Some(prost_types::value::Kind::StringValue(NUL_TEXT.into())) };
    let mut value = leaf;
    for _ in 0..3 {
        let inner = prost_types::Struct { fields: [("n".to_owned(), value)].into_iter().collect() };
        value = prost_types::Value { kind: Some(prost_types::value::Kind::StructValue(inner)) };
    }
    let Some(prost_types::value::Kind::StructValue(payload)) = value.kind else { unreachable!() };
    EnqueueJobRequest { kind: "faults.nul".into(), payload: Some(payload), ..Default::default() }.encode_to_vec()
}

/// One REST request: method, path, headers, body, and the expected HTTP status.
type RestCase<'a> = (Method, &'a str, &'a [(&'a str, &'a str)], Option<&'a str>, u16);

/// REST: NULs and broken escapes in path ids and queries, bodies that are
/// not JSON or not the message. Returns the number of cases.
async fn rest_faults(app: &TestApp, tenant: &TenantHandle) -> usize {
    let bearer = format!("Bearer {}", app.admin_key);
    let admin = [("authorization", bearer.as_str())];
    let scoped = [("authorization", bearer.as_str()), ("x-tenant-id", tenant.id.as_str())];
    #[rustfmt::skip]
    let cases: Vec<RestCase> = vec![
        (Method::GET, "/v1/tenants/%00", &admin, None, 400),
        (Method::GET, "/v1/tenants/ten_%00abc", &admin, None, 400),
        (Method::POST, "/v1/tenants/ten_%00:suspend", &admin, Some("{}"), 400),
        (Method::DELETE, "/v1/tenants/%00", &admin, None, 400),
        (Method::GET, "/v1/users/usr_%00", &scoped, None, 400),
        (Method::DELETE, "/v1/users/%00", &scoped, None, 400),
        (Method::POST, "/v1/users/%00:changePassword", &scoped, Some("{}"), 400),
        (Method::GET, "/v1/jobs/job_%00", &scoped, None, 400),
        (Method::POST, "/v1/jobs/%00:cancel", &scoped, Some("{}"), 400),
        (Method::POST, "/v1/api-keys/%00:revoke", &scoped, Some("{}"), 400),
        (Method::DELETE, "/v1/roles/%00", &scoped, None, 400),
        (Method::DELETE, "/v1/users/%00/roles/%00", &scoped, None, 400),
        (Method::GET, "/v1/users?page_token=%00", &scoped, None, 400),
        (Method::GET, "/v1/jobs?kind=a%00b", &scoped, None, 400),
        (Method::GET, "/v1/tenants/%ZZ", &admin, None, 404),
        (Method::POST, "/v1/auth:login", &[], Some("{"), 400),
        (Method::POST, "/v1/auth:login", &[], Some("[]"), 400),
        (Method::POST, "/v1/auth:login", &[], Some("\"text\""), 400),
        (Method::POST, "/v1/auth:login", &[], Some(r#"{"tenant": 5}"#), 400),
        (Method::POST, "/v1/auth:login", &[], Some(r#"{"tenant":"a\u0000b","email":"a@b.test","password":"pw"}"#), 400),
        (Method::POST, "/v1/auth:login", &[], Some(r#"{"no_such_field": 1}"#), 400),
        (Method::POST, "/v1/jobs", &scoped, Some(r#"{"kind":"k","payload":{"a":{"b":"c\u0000"}}}"#), 400),
        (Method::POST, "/v1/jobs", &scoped, Some(r#"{"kind":"k","priority":"high"}"#), 400),
        (Method::POST, "/v1/usage:record", &scoped, Some(r#"{"events":[{"event_id":"e","metric":"m","dimensions":{"r":"e\u0000u"}}]}"#), 400),
        (Method::POST, "/v1/users", &scoped, Some(r#"{"email":"a\u0000@b.test"}"#), 400),
        (Method::POST, "/v1/tenants", &admin, Some(r#"{"slug":"bad\u0000slug"}"#), 400),
        (Method::GET, "/v1/no-such-thing", &admin, None, 404),
        (Method::PATCH, "/v1/jobs", &scoped, Some("{}"), 405),
    ];
    let count = cases.len() + 2;
    let mut wrong = Vec::new();
    for (method, path, headers, body, expected) in cases {
        let response = http_client::send(app.http_addr, method.clone(), path, headers, body).await;
        if response.status != expected {
            wrong.push(format!("{method} {path} {body:?}: {} {}", response.status, response.text()));
            continue;
        }
        assert_rest(&response, expected, &format!("{method} {path} {body:?}"));
    }
    assert!(wrong.is_empty(), "REST answers other than expected: {wrong:#?}");
    let text_plain =
        [("authorization", bearer.as_str()), ("x-tenant-id", tenant.id.as_str()), ("content-type", "text/plain")];
    let response =
        http_client::send(app.http_addr, Method::POST, "/v1/jobs", &text_plain, Some(r#"{"kind":"k"}"#)).await;
    assert_rest(&response, 415, "POST /v1/jobs as text/plain");
    // Invalid UTF-8 in a JSON body, on a raw connection.
    let raw = raw_http(app, b"POST /v1/auth:login HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 14\r\nconnection: close\r\n\r\n{\"tenant\":\"\xc3\x28\"}").await;
    assert!(raw.starts_with("HTTP/1.1 400"), "invalid UTF-8 in JSON: {raw}");
    count
}

fn assert_rest(response: &HttpResponse, expected: u16, case: &str) {
    assert_eq!(response.status, expected, "{case}: {}", response.text());
    let body = response.json();
    assert!(body["code"].is_number() && body["message"].is_string(), "{case}: a grpc-gateway error body: {body}");
}

/// Writes `request` on a fresh connection to the HTTP listener and reads
/// until the server closes it.
async fn raw_http(app: &TestApp, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(app.http_addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer));
    read.await.expect("the server answers and closes").ok();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Clients that go away mid-call: a gRPC body cut off, a long call
/// abandoned, REST requests cut off before and after their headers. The
/// server counts the gRPC ones as CANCELLED. Returns the number of cases.
async fn disconnects(app: &TestApp, tenant: &TenantHandle) -> usize {
    let before = server_count(app, "CANCELLED").await;
    // A body that promises 100 bytes, sends 10, then stalls; the client gives up.
    let partial = tokio_stream::StreamExt::chain(
        tokio_stream::iter([Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(&[
            0, 0, 0, 0, 100, 1, 2, 3, 4, 5,
        ])))]),
        tokio_stream::pending(),
    );
    let body = tonic::body::Body::new(http_body_util::StreamBody::new(partial));
    let bearer = format!("Bearer {}", app.admin_key);
    let headers = [("content-type", "application/grpc"), ("te", "trailers"), ("authorization", bearer.as_str())];
    let call = wire::send_body(&app.channel, Method::POST, "/tenantry.v1.TenantService/GetTenant", &headers, body);
    let abandoned: Result<Answer, _> = tokio::time::timeout(Duration::from_millis(300), call).await;
    assert!(abandoned.is_err(), "the server waits for the rest of the body: {abandoned:?}");

    // A long poll abandoned by its client.
    let mut jobs = tenantry::proto::tenantry::v1::jobs_service_client::JobsServiceClient::new(app.channel.clone());
    let long_poll = LeaseJobsRequest {
        max_jobs: 1,
        worker_id: "gone".into(),
        wait_duration: Some(prost_types::Duration { seconds: 10, nanos: 0 }),
        ..Default::default()
    };
    let abandoned = tokio::time::timeout(Duration::from_millis(300), jobs.lease_jobs(tenant.as_admin(long_poll))).await;
    assert!(abandoned.is_err(), "the long poll was still waiting: {abandoned:?}");

    // A unary call abandoned while it runs.
    let mut users = app.auth();
    let quick =
        tokio::time::timeout(Duration::from_micros(50), users.list_users(tenant.as_admin(ListUsersRequest::default())));
    quick.await.ok();

    // REST: headers cut off, then a body cut off.
    for request in [
        &b"POST /v1/usage:record HTTP/1.1\r\nhost: t\r\ncontent-ty"[..],
        &b"POST /v1/usage:record HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"ev"[..],
    ] {
        let mut stream = tokio::net::TcpStream::connect(app.http_addr).await.expect("connect");
        stream.write_all(request).await.expect("write");
        drop(stream);
    }
    let cancelled = crate::harness::eventually(Duration::from_secs(5), || async {
        server_count(app, "CANCELLED").await >= before + 2.0
    })
    .await;
    assert!(cancelled, "disconnected gRPC calls are counted as CANCELLED: {}", server_count(app, "CANCELLED").await);
    5
}
