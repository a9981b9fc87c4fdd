//! Every gRPC service of the API, mounted in one place with the same
//! settings (the largest request message): the five Tenantry services,
//! `grpc.health.v1` and server reflection (v1 and v1alpha). The stack wraps
//! the result ([`crate::stack::wrap`]).

use tonic::service::Routes;

use crate::{
    config::AppConfig,
    identity::service::AuthApi,
    jobs::service::JobsApi,
    proto::{
        FILE_DESCRIPTOR_SET,
        tenantry::v1::{
            auth_service_server::AuthServiceServer, jobs_service_server::JobsServiceServer,
            scaling_service_server::ScalingServiceServer, tenant_service_server::TenantServiceServer,
            usage_service_server::UsageServiceServer,
        },
    },
    reflection::Reflection,
    scaling::service::ScalingApi,
    startup::{AppState, StartupError},
    tenancy::service::TenantApi,
    usage::service::UsageApi,
};

/// The routes of every service, built from the shared handles.
pub fn routes(state: &AppState, config: &AppConfig) -> Result<Routes, StartupError> {
    let serve = &config.serve;
    let max = serve.max_message_bytes;
    let health = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(state.health.clone()),
    );
    let reflection = Reflection::new(&[FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET])?;
    let tenants =
        TenantApi::new(state.pool.clone(), state.tenants.clone(), serve.tenant_purge_grace, state.page_tokens.clone())
            .with_passwords(state.passwords.clone());
    let auth = AuthApi::new(
        state.pool.clone(),
        state.authenticator.clone(),
        state.passwords.clone(),
        state.tenants.clone(),
        &serve.identity,
        &state.policies,
        state.page_tokens.clone(),
    );
    let usage = UsageApi::new(state.pool.clone(), state.plans.clone(), state.quotas.clone(), state.limiter.clone());
    let jobs = JobsApi::new(
        state.pool.clone(),
        state.jobs.clone(),
        state.stopping.clone(),
        state.metrics.clone(),
        state.page_tokens.clone(),
    );
    let mut routes = Routes::builder();
    routes
        .add_service(health)
        .add_service(reflection.v1())
        .add_service(reflection.v1alpha())
        .add_service(TenantServiceServer::new(tenants).max_decoding_message_size(max))
        .add_service(AuthServiceServer::new(auth).max_decoding_message_size(max))
        .add_service(UsageServiceServer::new(usage).max_decoding_message_size(max))
        .add_service(JobsServiceServer::new(jobs).max_decoding_message_size(max))
        .add_service(
            ScalingServiceServer::new(ScalingApi::new(state.pool.clone(), state.page_tokens.clone()))
                .max_decoding_message_size(max),
        );
    Ok(routes.routes())
}
