//! The contract: reflection serves every service, and every method has a
//! policy (enumerated from the descriptor, not from a list kept by hand).

use std::collections::BTreeSet;

use prost_reflect::DescriptorPool;
use tenantry::{
    policy::PolicyTable,
    proto::{FILE_DESCRIPTOR_SET, PACKAGE},
};
use tokio_stream::StreamExt;
use tonic_reflection::pb::{v1, v1alpha};

use crate::harness::TestApp;

fn contract_services() -> BTreeSet<String> {
    let pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET).unwrap();
    pool.services().filter(|s| s.package_name() == PACKAGE).map(|s| s.full_name().to_owned()).collect()
}

#[tokio::test]
async fn the_contract_defines_the_five_services() {
    let expected: BTreeSet<String> = ["TenantService", "AuthService", "UsageService", "JobsService", "ScalingService"]
        .iter()
        .map(|s| format!("tenantry.v1.{s}"))
        .collect();
    assert_eq!(contract_services(), expected);
}

#[tokio::test]
async fn reflection_v1_lists_every_service() {
    let app = TestApp::builder().spawn().await;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut responses = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) = response.message_response
    else {
        panic!("unexpected reflection response: {response:?}");
    };
    let listed: BTreeSet<String> = list.service.into_iter().map(|s| s.name).collect();
    let mut expected = contract_services();
    expected.insert("grpc.health.v1.Health".into());
    assert!(expected.is_subset(&listed), "missing: {:?}", expected.difference(&listed).collect::<Vec<_>>());
}

#[tokio::test]
async fn reflection_v1alpha_serves_the_contract_files() {
    let app = TestApp::builder().spawn().await;
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
            "tenantry.v1.TenantService".into(),
        )),
    };
    let mut responses = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        response.message_response
    else {
        panic!("unexpected reflection response: {response:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

#[tokio::test]
async fn reflection_answers_an_unknown_symbol_on_the_stream_and_keeps_it_open() {
    use prost::Message;
    use v1::{server_reflection_request::MessageRequest, server_reflection_response::MessageResponse};
    let app = TestApp::builder().spawn().await;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let ask = |query: MessageRequest| v1::ServerReflectionRequest { host: String::new(), message_request: Some(query) };
    // One stream, three requests: the failed lookup in the middle must not end it.
    let requests = [
        ask(MessageRequest::FileContainingSymbol("no.such.Symbol".into())),
        ask(MessageRequest::FileByFilename("no/such/file.proto".into())),
        ask(MessageRequest::FileContainingSymbol("tenantry.v1.JobsService.EnqueueJob".into())),
    ];
    let mut responses = client.server_reflection_info(tokio_stream::iter(requests)).await.unwrap().into_inner();
    for missing in ["no.such.Symbol", "no/such/file.proto"] {
        let response = responses.next().await.unwrap().unwrap();
        let Some(MessageResponse::ErrorResponse(error)) = response.message_response else {
            panic!("expected an error response, got {response:?}");
        };
        assert_eq!(error.error_code, tonic::Code::NotFound as i32);
        assert!(error.error_message.contains(missing), "{}", error.error_message);
    }
    let response = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
        panic!("expected files, got {response:?}");
    };
    let first = prost_types::FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice()).unwrap();
    assert_eq!(first.name(), "tenantry/v1/jobs_service.proto");
}

#[tokio::test]
async fn every_method_in_the_descriptor_has_a_policy() {
    let table = PolicyTable::embedded().expect("the embedded contract is complete");
    let pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET).unwrap();
    let mut methods = 0;
    for service in pool.services().filter(|s| s.package_name() == PACKAGE) {
        for method in service.methods() {
            let path = format!("/{}/{}", service.full_name(), method.name());
            let policy = table.get(&path).unwrap_or_else(|| panic!("{path} has no policy"));
            assert_eq!(policy.method, method.name());
            methods += 1;
        }
    }
    assert!(methods >= 49, "only {methods} methods in the contract");
}

/// Compiles a one-method contract with the real options file.
fn compile(service_body: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let source = format!(
        "syntax = \"proto3\";\npackage tenantry.v1;\nimport \"tenantry/v1/options.proto\";\n\
         message PingRequest {{}}\nmessage PingResponse {{}}\nservice PingService {{\n{service_body}\n}}\n"
    );
    std::fs::create_dir_all(dir.path().join("tenantry/v1")).unwrap();
    std::fs::write(dir.path().join("tenantry/v1/ping.proto"), source).unwrap();
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let mut compiler = protox::Compiler::new([dir.path().to_str().unwrap(), proto]).unwrap();
    compiler.include_imports(true);
    compiler.open_file("tenantry/v1/ping.proto").unwrap();
    compiler.encode_file_descriptor_set()
}

#[tokio::test]
async fn a_method_without_a_policy_is_refused_at_start() {
    let bytes = compile("rpc Ping(PingRequest) returns (PingResponse);");
    let error = PolicyTable::from_descriptor_set(&bytes).unwrap_err().to_string();
    assert!(error.contains("tenantry.v1.PingService.Ping") && error.contains("policy"), "{error}");
}

#[tokio::test]
async fn incomplete_policies_are_refused_at_start() {
    let cases = [
        ("{ tenant_scope: TENANT_SCOPE_NONE }", "none of public"),
        ("{ permission: \"users:read\" }", "tenant_scope"),
        ("{ permission: \"Users\" tenant_scope: TENANT_SCOPE_NONE }", "resource:action"),
        ("{ public: true platform_admin_only: true tenant_scope: TENANT_SCOPE_NONE }", "public"),
    ];
    for (policy, expected) in cases {
        let body =
            format!("rpc Ping(PingRequest) returns (PingResponse) {{ option (tenantry.v1.policy) = {policy}; }}");
        let error = PolicyTable::from_descriptor_set(&compile(&body)).unwrap_err().to_string();
        assert!(error.contains(expected), "{policy}: {error}");
    }
    let ok = "rpc Ping(PingRequest) returns (PingResponse) { option (tenantry.v1.policy) = { authenticated: true tenant_scope: TENANT_SCOPE_OPTIONAL }; }";
    let table = PolicyTable::from_descriptor_set(&compile(ok)).unwrap();
    assert!(table.get("/tenantry.v1.PingService/Ping").is_some());
}
