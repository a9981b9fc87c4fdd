//! The built-in job kinds, all in the reserved `tenantry.` namespace and the
//! `tenantry` queue, run by the in-process workers ([`super::worker`]).
//!
//! | kind | scope | what it does |
//! |---|---|---|
//! | `tenantry.noop` | tenant or platform | nothing (optionally sleeps, observing cancellation): pipeline checks, benchmarks |
//! | `tenantry.tenant.purge` | platform, periodic | drops the schemas of tenants deleted longer ago than the grace period |
//! | `tenantry.usage.rollup` | platform, periodic | folds old minute usage counters into hours; deletes counters past retention |
//! | `tenantry.usage.export` | tenant | the tenant's usage as CSV, kept as the job's result |
//! | `tenantry.scaling.evaluate` | platform, periodic | evaluates the scaling policy of every tenant that is due, storing each decision |
//!
//! Handlers act on the tenant in the job row (`Job::tenant_id`), never on a
//! tenant named in the payload; platform-level jobs (empty tenant) are
//! invisible to tenants and outside their job caps. Tenants may enqueue only the kinds marked
//! tenant-enqueueable in [`Registry`].
//!
//! # Layout
//!
//! - this file: the [`Handler`] trait, [`JobContext`], [`HandlerError`], [`Registry`].
//! - [`noop`], [`purge`], [`usage`], [`scaling`]: the handlers.

pub mod noop;
pub mod purge;
pub mod scaling;
pub mod usage;

use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::model::Job;

/// `tenantry.noop`.
pub const NOOP: &str = "tenantry.noop";
/// `tenantry.tenant.purge`.
pub const TENANT_PURGE: &str = "tenantry.tenant.purge";
/// `tenantry.usage.rollup`.
pub const USAGE_ROLLUP: &str = "tenantry.usage.rollup";
/// `tenantry.usage.export`.
pub const USAGE_EXPORT: &str = "tenantry.usage.export";
/// `tenantry.scaling.evaluate`.
pub const SCALING_EVALUATE: &str = "tenantry.scaling.evaluate";

/// Built-in kinds a tenant may enqueue through the API.
const TENANT_ENQUEUEABLE: &[&str] = &[NOOP, USAGE_EXPORT];

/// Whether a tenant may enqueue built-in `kind` through the API.
pub fn tenant_enqueueable(kind: &str) -> bool {
    TENANT_ENQUEUEABLE.contains(&kind)
}

/// What a handler's future resolves to: the job's result, or why it failed.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<serde_json::Value, HandlerError>> + Send>>;

/// One built-in job kind.
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt. Long handlers should watch `job.cancel` and stop
    /// when it fires (cancel requested, lease lost, or shutdown).
    fn run(&self, job: JobContext) -> HandlerFuture;
}

/// What a handler gets.
pub struct JobContext {
    /// The database.
    pub pool: PgPool,
    /// The leased job (its tenant, payload and attempt).
    pub job: Job,
    /// Fires when the handler should stop.
    pub cancel: CancellationToken,
}

/// A failed attempt, as a handler reports it.
#[derive(Debug, Clone)]
pub struct HandlerError {
    /// What went wrong; kept in the job's error history, so no secrets.
    pub message: String,
    /// Wait this long before retrying instead of the backoff.
    pub retry_after: Option<Duration>,
    /// Retrying cannot help: give up now.
    pub discard: bool,
}

impl HandlerError {
    /// A failure worth retrying.
    pub fn retry(message: impl Into<String>) -> Self {
        HandlerError { message: message.into(), retry_after: None, discard: false }
    }

    /// A failure retrying cannot fix (bad payload, missing tenant).
    pub fn discard(message: impl Into<String>) -> Self {
        HandlerError { message: message.into(), retry_after: None, discard: true }
    }
}

/// The handlers a worker runs, by kind.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<&'static str, Arc<dyn Handler>>,
}

impl Registry {
    /// Every built-in kind.
    pub fn builtin() -> Self {
        let mut registry = Registry::default();
        registry.register(NOOP, noop::Noop);
        registry.register(TENANT_PURGE, purge::TenantPurge);
        registry.register(SCALING_EVALUATE, scaling::EvaluateScaling::default());
        registry.register(USAGE_ROLLUP, usage::UsageRollup);
        registry.register(USAGE_EXPORT, usage::UsageExport);
        registry
    }

    /// Adds (or replaces) the handler of `kind`.
    pub fn register(&mut self, kind: &'static str, handler: impl Handler) {
        self.handlers.insert(kind, Arc::new(handler));
    }

    /// The handler of `kind`.
    pub fn get(&self, kind: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(kind).cloned()
    }

    /// The kinds registered, sorted.
    pub fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.handlers.keys().map(|k| (*k).to_owned()).collect();
        kinds.sort();
        kinds
    }
}
