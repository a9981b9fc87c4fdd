//! Tenantry: the multi-tenant backend a SaaS product runs on. It owns tenants,
//! identity, usage metering, rate limits and background jobs, and serves them
//! over gRPC (and the same API over REST/JSON) so other services can stay
//! tenant-unaware.
//!
//! # Layout
//!
//! - [`cli`]: the `tenantry` command line (serve, migrate, bootstrap); `main.rs`
//!   only calls [`cli::run`].
//! - [`config`]: the one typed configuration, from flags with env fallbacks.
//! - [`telemetry`]: `tracing` subscriber set-up (JSON or readable logs) and
//!   OpenTelemetry traces over OTLP; W3C trace context from headers.
//! - [`metrics`]: the Prometheus registry and the typed handles every module
//!   records into; served at `/metrics`.
//! - [`startup`]: [`startup::App`] builds the servers from a config and runs
//!   them until a shutdown signal, draining in-flight calls.
//! - [`dev`]: `serve --dev`, the embedded default with its private PostgreSQL.
//! - [`proto`]: code generated from `proto/` and the embedded descriptor set.
//! - [`policy`]: the authorization policy of every RPC, read from the
//!   descriptor; the server refuses to start if a method has none.
//! - [`stack`]: the one tower stack every call passes through (request id and
//!   tracing, load shedding, deadline, authenticate, tenant context, rate
//!   limit, authorize), assembled in `stack/mod.rs`.
//! - [`context`]: [`context::RequestContext`], what the stack learns about a
//!   call, carried in request extensions.
//! - [`auth`]: principals and credentials (platform-admin API keys).
//! - [`identity`]: users, passwords, access tokens and the key ring, refresh
//!   tokens, tenant API keys, roles, the audit log, AuthService.
//! - [`tenancy`]: tenants, their schemas, the tenant transaction, TenantService.
//! - [`ratelimit`]: per-tenant rate limits (in process or Redis) and quotas.
//! - [`usage`]: the usage meter, client usage events and UsageService.
//! - [`jobs`]: the PostgreSQL job queue, built-in workers and JobsService.
//! - [`scaling`]: per-tenant autoscaling decisions and ScalingService.
//! - [`cache`]: the one node-local cache type, bounded and invalidated by NOTIFY.
//! - [`ids`]: prefixed resource ids (`ten_…`, `key_…`) and random tokens.
//! - [`pagination`]: page sizes and opaque keyset page tokens for List RPCs.
//! - [`db`]: the PostgreSQL pool, platform migrations and the embedded cluster.
//! - [`health`]: gRPC health and readiness, following the dependencies.
//! - [`http`]: the HTTP listener (`/healthz`, `/readyz`, `/metrics`).
//! - [`grpc_web`]: gRPC-Web (and its CORS) on the gRPC port, outside the stack.
//! - [`reflection`]: gRPC server reflection from the embedded descriptors.
//! - `client` (feature `client`): the Rust client for internal services.
//! - [`gateway`]: the REST/JSON gateway on the HTTP listener, transcoding to
//!   the same stack in process, with `/openapi.json` and `/docs`.
//! - [`error`]: the restricted error enum every module maps into, with its
//!   mapping to `tonic::Status` (rich details) and to HTTP.

pub mod auth;
pub mod cache;
pub mod cli;
#[cfg(feature = "client")]
pub mod client;
pub mod config;
pub mod context;
pub mod db;
pub mod dev;
pub mod error;
pub mod gateway;
pub mod grpc_web;
pub mod health;
pub mod http;
pub mod identity;
pub mod ids;
pub mod jobs;
pub mod metrics;
pub mod pagination;
pub mod policy;
pub mod proto;
pub mod ratelimit;
pub mod reflection;
pub mod scaling;
pub mod services;
pub mod stack;
pub mod startup;
pub mod state;
pub mod supervisor;
pub mod telemetry;
pub mod tenancy;
pub mod usage;
