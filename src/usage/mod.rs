//! Usage: what tenants consume, metered automatically on every call and
//! recorded by clients, and the UsageService that reports it.
//!
//! # Layout
//!
//! - [`meter`]: the in-memory aggregate of every call's usage and its
//!   batched flush into `platform.usage_counters`.
//! - [`events`]: validated client usage events and their idempotent,
//!   durable recording in the tenant's schema.
//! - [`query`]: sums per metric and time bucket for GetUsage.
//! - [`service`]: the UsageService gRPC handlers.

pub mod events;
pub mod meter;
pub mod query;
pub mod service;
