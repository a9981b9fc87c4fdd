//! Background jobs on PostgreSQL (DESIGN §6): a durable, tenant-aware queue
//! in `platform.jobs`, fair across tenants and safe against crashed workers.
//!
//! A job exists if and only if the transaction that enqueued it commits
//! ([`queue::enqueue`] takes an open transaction). Workers lease jobs in
//! batches (`FOR UPDATE SKIP LOCKED`), woken by LISTEN/NOTIFY with a polling
//! fallback; every lease carries a fencing token, the attempt number, so a
//! worker whose lease expired can no longer change the job. A rescuer fails
//! attempts whose lease expired; retries back off exponentially with jitter.
//!
//! # Layout
//!
//! - [`model`]: the job row, its states, and the domain error.
//! - [`queue`]: producing and inspecting jobs (enqueue, get, list, cancel, retry).
//! - [`lease`]: the worker side (fair batched fetch, heartbeat, complete, fail, release).
//! - [`rescuer`]: expired leases and retention pruning.
//! - [`events`]: the LISTEN/NOTIFY wake-up hub and in-process change signals.
//! - [`worker`]: the built-in workers (run by `tenantry serve` and `tenantry worker`).
//! - [`periodic`]: periodic built-in jobs from configuration, once per period across nodes.
//! - [`handlers`]: the built-in job kinds (`tenantry.*`).
//! - [`convert`]: protobuf `Struct`/`Duration` conversions.
//! - [`service`]: the gRPC `JobsService`.

pub mod convert;
pub mod events;
pub mod handlers;
pub mod lease;
pub mod model;
pub mod periodic;
pub mod queue;
pub mod rescuer;
pub mod service;
pub mod worker;

pub use model::{Job, JobError, JobState};

/// The queue built-in jobs live in; external workers cannot lease from it.
pub const BUILTIN_QUEUE: &str = "tenantry";

/// The kind prefix reserved for built-in jobs.
pub const BUILTIN_PREFIX: &str = "tenantry.";

/// The queue a job goes to when none is named.
pub const DEFAULT_QUEUE: &str = "default";
