//! Tenantry: the multi-tenant backend a SaaS product runs on. It owns tenants,
//! identity, usage metering, rate limits and background jobs, and serves them
//! over gRPC (and the same API over REST/JSON) so other services can stay
//! tenant-unaware.
//!
//! # Layout
//!
//! Start-up (docs/architecture.md follows one call through all of it):
//! - [`cli`]: the `tenantry` command line; `main.rs` only calls [`cli::run`].
//! - [`config`]: the one typed configuration, from flags with env fallbacks;
//!   defaults only in clap.
//! - [`startup`]: [`startup::App::build`] makes a process (API or worker)
//!   from an [`config::AppConfig`]; `run_until_stopped` serves and drains.
//! - [`state`]: [`state::AppState`], the shared handles everything is built from.
//! - [`services`]: every gRPC service, mounted in one place.
//! - [`supervisor`]: the named background tasks, restarted by policy and
//!   stopped stage by stage.
//! - [`dev`]: `serve --dev`, the embedded default with its private PostgreSQL.
//!
//! The call path:
//! - [`stack`]: the one tower stack every call passes through (observe,
//!   rescue, load shedding, authenticate, tenant context, meter, rate limit,
//!   authorize), assembled in `stack/mod.rs`.
//! - [`context`]: [`context::RequestContext`], what the stack learns about a call.
//! - [`policy`]: the authorization policy of every RPC, read from the
//!   descriptor; the server refuses to start if a method has none.
//! - [`error`]: the restricted error enum every module maps into, the one
//!   classification of database errors, and the mapping to `tonic::Status`.
//! - [`gateway`]: the REST/JSON gateway, transcoding to the same stack in
//!   process, with `/openapi.json` and `/docs`.
//! - [`server`]: serving a listener's connections, with their limits.
//! - [`http`]: the HTTP listener (`/healthz`, `/readyz`, `/metrics`).
//! - [`grpc_web`]: gRPC-Web (and its CORS) on the gRPC port, outside the stack.
//! - [`reflection`]: gRPC server reflection from the embedded descriptors.
//! - [`proto`]: code generated from `proto/` and the embedded descriptor set.
//! - [`codec`]: every service's codec: prost plus the edge checks (NUL in text, malformed bytes).
//! - `client` (feature `client`): the Rust client for internal services.
//!
//! The domains:
//! - [`auth`]: principals and credentials (platform-admin API keys).
//! - [`identity`]: users, passwords, access tokens and the key ring, refresh
//!   tokens, tenant API keys, roles, the audit log, AuthService.
//! - [`tenancy`]: tenants, their schemas, the tenant transaction, TenantService.
//! - [`ratelimit`]: per-tenant rate limits (in process or Redis) and quotas.
//! - [`usage`]: the usage meter, client usage events and UsageService.
//! - [`jobs`]: the PostgreSQL job queue, built-in workers and JobsService.
//! - [`scaling`]: per-tenant autoscaling decisions and ScalingService.
//!
//! Shared machinery:
//! - [`cache`]: the one node-local cache type, bounded and invalidated by NOTIFY.
//! - [`db`]: the pool, platform migrations, the change feed, the embedded cluster.
//! - [`health`]: gRPC health and readiness, following the dependencies.
//! - [`metrics`]: the Prometheus registry and the typed handles modules record into.
//! - [`telemetry`]: logs and OpenTelemetry traces.
//! - [`ids`]: prefixed resource ids (`ten_…`, `key_…`) and random tokens.
//! - [`pagination`]: page sizes and signed, filter-bound page tokens for List RPCs.
//! - [`field_mask`]: update masks in either spelling, and `*`, for every Update RPC.

pub mod auth;
pub mod cache;
pub mod cli;
#[cfg(feature = "client")]
pub mod client;
pub mod codec;
pub mod config;
pub mod context;
pub mod db;
pub mod dev;
pub mod error;
pub mod field_mask;
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
pub mod server;
pub mod services;
pub mod stack;
pub mod startup;
pub mod state;
pub mod supervisor;
pub mod telemetry;
pub mod tenancy;
pub mod usage;
