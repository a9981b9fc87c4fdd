//! Background work: job attempts and the queue, scaling decisions, and the
//! supervisor's task failures.
//!
//! Job kinds are open-ended (external workers enqueue their own), so the
//! `kind` label is capped: the built-in kinds always keep their name, the
//! first [`MAX_OTHER_KINDS`] other kinds a process sees keep theirs, and any
//! later kind is recorded as `other`.

use std::{collections::HashSet, sync::RwLock, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use super::Metrics;
use crate::{jobs::handlers, scaling::decision::LimitingRule};

/// Distinct non-built-in kinds one process labels by name.
const MAX_OTHER_KINDS: usize = 50;

/// Attempt duration buckets, in seconds: 10 ms to an hour.
const ATTEMPT_BUCKETS: [f64; 12] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

const BUILT_IN_KINDS: [&str; 5] = [
    handlers::NOOP,
    handlers::TENANT_PURGE,
    handlers::USAGE_ROLLUP,
    handlers::USAGE_EXPORT,
    handlers::SCALING_EVALUATE,
];

/// How one attempt at a job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// It succeeded; the job is completed.
    Completed,
    /// It failed; the job runs again later.
    Retried,
    /// It failed and no attempt is left; the job is discarded.
    Discarded,
    /// The job was cancelled while the attempt ran.
    Cancelled,
}

impl JobOutcome {
    fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Completed => "completed",
            JobOutcome::Retried => "retried",
            JobOutcome::Discarded => "discarded",
            JobOutcome::Cancelled => "cancelled",
        }
    }
}

/// What a scaling evaluation decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalingDirection {
    /// More replicas.
    Up,
    /// Fewer replicas.
    Down,
    /// The same count.
    Hold,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    kind: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScalingLabels {
    direction: &'static str,
    rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    task: &'static str,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

pub(super) struct JobMetrics {
    /// The non-built-in kinds labelled by name so far.
    other_kinds: RwLock<HashSet<String>>,
    enqueued: Family<KindLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    attempt_duration: Family<KindLabels, Histogram, fn() -> Histogram>,
    rescues: Family<KindLabels, Counter>,
    depth: Family<StateLabels, Gauge>,
    oldest: Family<StateLabels, FloatGauge>,
    scaling: Family<ScalingLabels, Counter>,
    task_failures: Family<TaskLabels, Counter>,
}

/// The states the queue gauges report (`jobs::rescuer::queue_stats`).
pub const QUEUE_STATES: [&str; 3] = ["ready", "scheduled", "running"];

impl JobMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = JobMetrics {
            other_kinds: RwLock::default(),
            enqueued: Family::default(),
            attempts: Family::default(),
            attempt_duration: Family::new_with_constructor(|| Histogram::new(ATTEMPT_BUCKETS)),
            rescues: Family::default(),
            depth: Family::default(),
            oldest: Family::default(),
            scaling: Family::default(),
            task_failures: Family::default(),
        };
        // The queue gauges exist (at 0) from the first scrape, not from the
        // first housekeeping tick: a series that appears later looks like a
        // gap to alerts, and two scrapes a moment apart would differ.
        for state in QUEUE_STATES {
            metrics.depth.get_or_create(&StateLabels { state }).set(0);
            metrics.oldest.get_or_create(&StateLabels { state }).set(0.0);
        }
        registry.register("jobs_enqueued", "Jobs enqueued, by kind", metrics.enqueued.clone());
        registry.register("jobs_attempts", "Finished job attempts by kind and outcome", metrics.attempts.clone());
        registry.register_with_unit(
            "jobs_attempt_duration",
            "Job attempt duration by kind, from lease to the attempt's end",
            Unit::Seconds,
            metrics.attempt_duration.clone(),
        );
        registry.register(
            "jobs_lease_rescues",
            "Running jobs whose lease expired and that the rescuer took back, by kind",
            metrics.rescues.clone(),
        );
        registry.register("jobs_queue_depth", "Jobs in the queue by state", metrics.depth.clone());
        registry.register_with_unit(
            "jobs_oldest_age",
            "Age of the oldest job in each state (for ready jobs: how far the queue is behind)",
            Unit::Seconds,
            metrics.oldest.clone(),
        );
        registry.register(
            "scaling_decisions",
            "Scaling evaluations by direction and the rule that limited the proposal",
            metrics.scaling.clone(),
        );
        registry.register(
            "background_task_failures",
            "Background tasks that failed and were restarted or stopped, by task",
            metrics.task_failures.clone(),
        );
        metrics
    }

    /// The label for `kind`, capped as the module docs say.
    fn kind(&self, kind: &str) -> KindLabels {
        let kind = if BUILT_IN_KINDS.contains(&kind) || self.is_known_or_admitted(kind) { kind } else { "other" };
        KindLabels { kind: kind.to_owned() }
    }

    fn is_known_or_admitted(&self, kind: &str) -> bool {
        // A poisoned lock only means another recorder panicked mid-insert;
        // the set is still a valid set.
        if self.other_kinds.read().unwrap_or_else(|e| e.into_inner()).contains(kind) {
            return true;
        }
        let mut kinds = self.other_kinds.write().unwrap_or_else(|e| e.into_inner());
        if kinds.len() < MAX_OTHER_KINDS {
            kinds.insert(kind.to_owned());
        }
        kinds.contains(kind)
    }
}

impl Metrics {
    /// Records a job of `kind` enqueued.
    pub fn record_job_enqueued(&self, kind: &str) {
        let jobs = &self.inner.jobs;
        jobs.enqueued.get_or_create(&jobs.kind(kind)).inc();
    }

    /// Records one finished attempt at a job of `kind` (built-in or external
    /// worker alike), how it ended and how long it ran since its lease.
    pub fn record_job_finished(&self, kind: &str, outcome: JobOutcome, duration: Duration) {
        let jobs = &self.inner.jobs;
        let KindLabels { kind } = jobs.kind(kind);
        jobs.attempt_duration.get_or_create(&KindLabels { kind: kind.clone() }).observe(duration.as_secs_f64());
        jobs.attempts.get_or_create(&AttemptLabels { kind, outcome: outcome.as_str() }).inc();
    }

    /// Records one finished attempt from the job's state after it: completed,
    /// discarded and cancelled are themselves; any other (available,
    /// scheduled) means it will run again.
    pub fn record_job_attempt(&self, kind: &str, state_after: &str, duration: Duration) {
        let outcome = match state_after {
            "completed" => JobOutcome::Completed,
            "discarded" => JobOutcome::Discarded,
            "cancelled" => JobOutcome::Cancelled,
            _ => JobOutcome::Retried,
        };
        self.record_job_finished(kind, outcome, duration);
    }

    /// Records a running job of `kind` whose expired lease the rescuer took back.
    pub fn record_lease_rescued(&self, kind: &str) {
        let jobs = &self.inner.jobs;
        jobs.rescues.get_or_create(&jobs.kind(kind)).inc();
    }

    /// Sets the job queue's depth and the age of its oldest job for one
    /// state (`ready`, `scheduled`, `running`; a fixed string in code). The
    /// age of the oldest ready job is the queue's lag.
    pub fn set_job_queue(&self, state: &'static str, depth: i64, oldest: Duration) {
        let jobs = &self.inner.jobs;
        jobs.depth.get_or_create(&StateLabels { state }).set(depth);
        jobs.oldest.get_or_create(&StateLabels { state }).set(oldest.as_secs_f64());
    }

    /// Records one scaling evaluation: where it went and which rule limited it.
    pub fn record_scaling_decision(&self, direction: ScalingDirection, rule: LimitingRule) {
        let direction = match direction {
            ScalingDirection::Up => "up",
            ScalingDirection::Down => "down",
            ScalingDirection::Hold => "hold",
        };
        self.inner.jobs.scaling.get_or_create(&ScalingLabels { direction, rule: rule.as_str() }).inc();
    }

    /// Records a background task (named in code: `usage-flusher`, …) that failed.
    pub fn record_task_failure(&self, task: &'static str) {
        self.inner.jobs.task_failures.get_or_create(&TaskLabels { task }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(text: &str, line: &str) {
        assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
    }

    #[test]
    fn job_attempts_are_counted_and_timed_by_kind_and_outcome() {
        let metrics = Metrics::new();
        metrics.record_job_enqueued(handlers::USAGE_ROLLUP);
        metrics.record_job_finished(handlers::USAGE_ROLLUP, JobOutcome::Completed, Duration::from_millis(40));
        metrics.record_job_finished("billing.invoice", JobOutcome::Retried, Duration::from_secs(2));
        metrics.record_job_finished("billing.invoice", JobOutcome::Discarded, Duration::from_secs(3));
        metrics.record_lease_rescued("billing.invoice");
        metrics.set_job_queue("ready", 12, Duration::from_millis(1500));
        let text = metrics.render();
        has(&text, "tenantry_jobs_enqueued_total{kind=\"tenantry.usage.rollup\"} 1");
        has(&text, "tenantry_jobs_attempts_total{kind=\"tenantry.usage.rollup\",outcome=\"completed\"} 1");
        has(&text, "tenantry_jobs_attempts_total{kind=\"billing.invoice\",outcome=\"retried\"} 1");
        has(&text, "tenantry_jobs_attempts_total{kind=\"billing.invoice\",outcome=\"discarded\"} 1");
        has(&text, "tenantry_jobs_attempt_duration_seconds_count{kind=\"billing.invoice\"} 2");
        has(&text, "tenantry_jobs_lease_rescues_total{kind=\"billing.invoice\"} 1");
        has(&text, "tenantry_jobs_queue_depth{state=\"ready\"} 12");
        has(&text, "tenantry_jobs_oldest_age_seconds{state=\"ready\"} 1.5");
    }

    #[test]
    fn kinds_beyond_the_cap_are_recorded_as_other_and_built_ins_never_are() {
        let metrics = Metrics::new();
        for i in 0..MAX_OTHER_KINDS + 10 {
            metrics.record_job_enqueued(&format!("custom.{i}"));
        }
        metrics.record_job_enqueued(handlers::TENANT_PURGE);
        metrics.record_job_enqueued("custom.0");
        let text = metrics.render();
        let series = text.lines().filter(|l| l.starts_with("tenantry_jobs_enqueued_total{")).count();
        assert_eq!(series, MAX_OTHER_KINDS + 2, "{text}");
        has(&text, "tenantry_jobs_enqueued_total{kind=\"other\"} 10");
        has(&text, "tenantry_jobs_enqueued_total{kind=\"custom.0\"} 2");
        has(&text, "tenantry_jobs_enqueued_total{kind=\"tenantry.tenant.purge\"} 1");
    }

    #[test]
    fn scaling_decisions_and_task_failures_render() {
        let metrics = Metrics::new();
        metrics.record_scaling_decision(ScalingDirection::Hold, LimitingRule::Stabilization);
        metrics.record_task_failure("usage-flusher");
        let text = metrics.render();
        has(&text, "tenantry_scaling_decisions_total{direction=\"hold\",rule=\"stabilization\"} 1");
        has(&text, "tenantry_background_task_failures_total{task=\"usage-flusher\"} 1");
    }
}
