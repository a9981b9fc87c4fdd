//! Prometheus metrics: one registry per process, typed recording methods
//! other modules call, and the exposition `GET /metrics` serves in the
//! format the scraper asks for.
//!
//! Label values come from closed sets only, so the number of series is
//! bounded whatever callers send: methods from the policy table (anything
//! else collapses into `unknown`), gRPC codes, enums chosen in code, and job
//! kinds capped per process. There are no per-tenant labels; per-tenant
//! numbers live in the usage tables, where they can be queried without
//! exploding the time-series database.
//!
//! # Layout
//!
//! - this file: [`Metrics`], the cheap-clone handle (an `Arc`) every module
//!   records into, and [`Format`], the content negotiation of `/metrics`.
//! - [`calls`]: calls, admission, authentication failures, gateway refusals.
//! - [`limits`]: rate-limit decisions, quotas, Redis calls, usage flushes.
//! - [`jobs`]: job attempts and the queue, scaling decisions, background tasks.
//! - [`pool`]: the database pool (gauges read at scrape time; the acquire
//!   wait recorded by `db::acquire`).
//! - [`process`]: `process_*`, read from `/proc/self` at scrape time.
//! - [`readiness`]: `tenantry_ready` and `tenantry_dependency_up`, read from the
//!   health probe's results at scrape time.
//!
//! `docs/observability.md` is the catalogue: every metric's name, labels and
//! meaning. `deploy/` (dashboard, alerts) may use only names from it.

mod calls;
mod jobs;
mod limits;
mod pool;
mod process;
mod readiness;

use std::sync::{Arc, OnceLock};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use sqlx::PgPool;

pub use self::{
    calls::{GatewayRefusal, MethodCalls, ShedReason, code_name},
    jobs::{JobOutcome, ScalingDirection},
    limits::{FlushOutcome, Quota, RateLimitDecision, RateLimitEngine},
    pool::{AcquireFailure, Waiting},
};
use crate::health::Readiness;

/// An exposition format of `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4: what `curl`, agents and `promtool`
    /// read, and the answer to any `Accept` that does not ask for OpenMetrics.
    Prometheus,
    /// OpenMetrics 1.0.0 text, when the `Accept` header asks for it (as
    /// Prometheus itself does).
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics only when it is
    /// named and preferred at least as much as plain text (q-values count).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let (mut openmetrics, mut text) = (0.0_f32, 0.0_f32);
        for range in accept.unwrap_or("").split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let quality = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(quality),
                "text/plain" | "text/*" | "*/*" => text = text.max(quality),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text { Format::OpenMetrics } else { Format::Prometheus }
    }

    /// The `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// The metrics of one process. Clone it freely: clones share the registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    calls: calls::CallMetrics,
    limits: limits::LimitMetrics,
    jobs: jobs::JobMetrics,
    pool: pool::PoolMetrics,
    /// The pool whose connections are reported at scrape time.
    watched_pool: Arc<OnceLock<PgPool>>,
    /// The health probe's results, reported at scrape time.
    watched_readiness: Arc<OnceLock<Arc<Readiness>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        // `process_*` carry no prefix (every client library names them so);
        // everything else lives under `tenantry_`.
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("tenantry");
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info.get_or_create(&VersionLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register("build_info", "The running build; the value is always 1", build_info);
        let calls = calls::CallMetrics::register(registry);
        let limits = limits::LimitMetrics::register(registry);
        let jobs = jobs::JobMetrics::register(registry);
        let pool = pool::PoolMetrics::register(registry);
        let watched_pool = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(pool::PoolGauges(watched_pool.clone())));
        let watched_readiness = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(readiness::ReadinessGauges(watched_readiness.clone())));
        Metrics {
            inner: Arc::new(Inner { registry: root, calls, limits, jobs, pool, watched_pool, watched_readiness }),
        }
    }

    /// Reports `pool`'s connections at every scrape (the first pool given wins).
    pub fn watch_pool(&self, pool: PgPool) {
        drop(self.inner.watched_pool.set(pool));
    }

    /// Reports the health probe's results at every scrape (the first wins).
    pub fn watch_readiness(&self, readiness: Arc<Readiness>) {
        drop(self.inner.watched_readiness.set(readiness));
    }

    /// The exposition in the Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        self.render_as(Format::Prometheus)
    }

    /// The exposition in `format`, with scrape-time values read now.
    pub fn render_as(&self, format: Format) -> String {
        let mut text = String::new();
        let encoded = match format {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(&mut text, &self.inner.registry),
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, &self.inner.registry),
        };
        if let Err(error) = encoded {
            tracing::error!(%error, "cannot encode the metrics");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_when_asked_and_preferred() {
        let prometheus_scraper = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus_scraper)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("Application/OpenMetrics-Text; version=1.0.0")), Format::OpenMetrics);
        for plain in [None, Some(""), Some("*/*"), Some("text/plain"), Some("text/plain;version=0.0.4")] {
            assert_eq!(Format::negotiate(plain), Format::Prometheus, "{plain:?}");
        }
        assert_eq!(Format::negotiate(Some("text/plain, application/openmetrics-text;q=0.5")), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("application/json")), Format::Prometheus);
    }

    /// The `# TYPE` families of an OpenMetrics rendering.
    fn families(text: &str) -> std::collections::BTreeSet<String> {
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next().map(str::to_owned)).collect()
    }

    /// The metric names in the catalogue tables of `docs/observability.md`,
    /// as families (a counter's `_total` belongs to its samples).
    fn catalogue() -> std::collections::BTreeSet<String> {
        let doc = include_str!("../../docs/observability.md");
        let start = doc.find("### Catalogue").expect("the catalogue section");
        let end = doc[start..].find("### Recording API").expect("the section after it") + start;
        doc[start..end]
            .lines()
            .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
            .map(|name| name.strip_suffix("_total").unwrap_or(name).to_owned())
            .collect()
    }

    #[tokio::test]
    async fn the_catalogue_lists_exactly_the_families_the_code_exports() {
        use std::time::Duration;

        use tonic::Code;

        let metrics = Metrics::new();
        metrics.watch_pool(sqlx::postgres::PgPoolOptions::new().connect_lazy("postgres://localhost/none").unwrap());
        metrics.call_started();
        metrics.record_call(None, Code::Ok, Duration::from_millis(1));
        metrics.record_shed(None, ShedReason::Concurrency);
        metrics.record_auth_failure("API_KEY_INVALID");
        metrics.record_gateway_refusal(GatewayRefusal::NoRoute);
        metrics.set_rate_limit_engine(crate::config::RateLimitEngine::Redis);
        metrics.record_rate_limit(RateLimitEngine::Redis, RateLimitDecision::Allowed);
        metrics.record_quota_refusal(Quota::MonthlyRequests);
        metrics.record_redis_call("rate_limit", Duration::from_millis(1), false);
        metrics.record_usage_flush(FlushOutcome::Ok, 1);
        metrics.record_job_enqueued("tenantry.noop");
        metrics.record_job_finished("tenantry.noop", JobOutcome::Completed, Duration::from_millis(1));
        metrics.record_lease_rescued("tenantry.noop");
        metrics.set_job_queue("ready", 1, Duration::from_secs(1));
        metrics.record_scaling_decision(ScalingDirection::Up, crate::scaling::decision::LimitingRule::None);
        metrics.record_task_failure("usage-flusher");
        metrics.record_pool_acquire(Duration::from_millis(1), Some(AcquireFailure::Timeout));
        let mut exported = families(&metrics.render_as(Format::OpenMetrics));
        // Read from the health probe's results, which only a running server
        // has: tests/api/observability/metrics.rs checks them.
        exported.extend(["tenantry_ready".to_owned(), "tenantry_dependency_up".to_owned()]);
        if !cfg!(target_os = "linux") {
            exported.extend(catalogue().into_iter().filter(|name| name.starts_with("process_")));
        }
        assert_eq!(exported, catalogue(), "docs/observability.md's catalogue and the registry differ");
    }

    #[test]
    fn both_formats_carry_help_and_type_for_every_family() {
        let metrics = Metrics::new();
        metrics.record_rate_limit(RateLimitEngine::Redis, RateLimitDecision::Allowed);
        let text = metrics.render_as(Format::Prometheus);
        assert!(text.contains("# HELP tenantry_rate_limit_decisions_total "), "{text}");
        assert!(text.contains("# TYPE tenantry_rate_limit_decisions_total counter"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        let open = metrics.render_as(Format::OpenMetrics);
        assert!(open.contains("# TYPE tenantry_rate_limit_decisions counter"), "{open}");
        assert!(open.ends_with("# EOF\n"), "{open}");
        for text in [&text, &open] {
            let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
            let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
            assert_eq!(types, helps, "{text}");
            assert!(text.contains("tenantry_build_info{version=\""), "{text}");
        }
    }
}
