//! A bare tonic service, no layers at all, that answers every call as
//! `tenantry.v1.AuthService/WhoAmI` with a fixed response the size of a real
//! user's (principal, tenant, roles, permissions): the reference the hot-path
//! benchmarks measure the full server against (`examples/bare_echo.rs`,
//! `benches/allocations.rs`).

use std::{convert::Infallible, sync::Arc};

use tenantry::proto::tenantry::v1::{Principal, PrincipalKind, WhoAmIRequest, WhoAmIResponse};
use tonic::{
    Request, Response, Status,
    body::Body,
    codegen::{BoxFuture, Service, http},
    server::{Grpc, NamedService, UnaryService},
};

/// Every call, whatever its path, is WhoAmI: the benches only call that one.
#[derive(Clone)]
pub struct Echo(Arc<WhoAmIResponse>);

impl NamedService for Echo {
    const NAME: &'static str = "tenantry.v1.AuthService";
}

impl Service<http::Request<Body>> for Echo {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let answer = WhoAmI(self.0.clone());
        Box::pin(async move {
            let mut grpc = Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(answer, request).await)
        })
    }
}

struct WhoAmI(Arc<WhoAmIResponse>);

impl UnaryService<WhoAmIRequest> for WhoAmI {
    type Response = WhoAmIResponse;
    type Future = std::future::Ready<Result<Response<WhoAmIResponse>, Status>>;

    fn call(&mut self, _: Request<WhoAmIRequest>) -> Self::Future {
        std::future::ready(Ok(Response::new((*self.0).clone())))
    }
}

/// Answers what the full server answers a tenant user with two roles.
impl Default for Echo {
    fn default() -> Self {
        Echo(Arc::new(answer()))
    }
}

fn answer() -> WhoAmIResponse {
    let tenant_id = "ten_01JDX8Y6Q4M2N5P7R9S1T3V5W7".to_owned();
    WhoAmIResponse {
        principal: Some(Principal {
            kind: PrincipalKind::User.into(),
            id: "usr_01JDX8Y6Q4M2N5P7R9S1T3V5W8".into(),
            display_name: "Load Tester".into(),
            tenant_id: tenant_id.clone(),
        }),
        tenant_id,
        tenant_slug: "bench".into(),
        roles: vec!["rol_01JDX8Y6Q4M2N5P7R9S1T3V5W9".into(), "admin".into()],
        permissions: [
            "api_keys:read",
            "api_keys:write",
            "audit:read",
            "jobs:read",
            "jobs:write",
            "roles:read",
            "roles:write",
            "scaling:read",
            "scaling:write",
            "tenants:read",
            "usage:read",
            "usage:write",
            "users:read",
            "users:write",
        ]
        .map(str::to_owned)
        .to_vec(),
        expire_time: Some(prost_types::Timestamp { seconds: 1_796_083_200, nanos: 0 }),
    }
}
