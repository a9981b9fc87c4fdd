//! Per-tenant autoscaling decisions (DESIGN §5), in the style of the
//! Kubernetes HorizontalPodAutoscaler: a pure decision function fed by
//! metered load, evaluated per tenant by a periodic job, every decision
//! stored with its explanation. Tenantry does not run the tenant's replicas:
//! each tenant has a simulated deployment whose count follows the decisions,
//! for a platform (or a human) to act on. See `docs/scaling.md`.
//!
//! # Layout
//!
//! - [`decision`]: the pure HPA-style function and its explanation.
//! - [`policy`]: the policy type, defaults, validation, protobuf mapping.
//! - [`metrics`]: measuring request rate, compute time and job backlog.
//! - [`store`]: policies, state and decisions in `platform`; evaluation.
//! - [`service`]: the gRPC `ScalingService`.

pub mod decision;
pub mod metrics;
pub mod policy;
pub mod service;
pub mod store;
