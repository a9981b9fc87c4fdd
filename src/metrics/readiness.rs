//! `tenantry_ready` and `tenantry_dependency_up`: the health probe's last
//! results, read when scraped, so an alert sees a node that answers
//! `/metrics` but has taken itself out of the load balancer.

use std::sync::{Arc, OnceLock};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, gauge::ConstGauge},
};

use crate::health::{DependencyState, Readiness};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabels {
    dependency: &'static str,
}

/// The watched readiness, encoded at every scrape.
#[derive(Debug)]
pub(super) struct ReadinessGauges(pub(super) Arc<OnceLock<Arc<Readiness>>>);

impl Collector for ReadinessGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(readiness) = self.0.get() else { return Ok(()) };
        let ready = encoder.encode_descriptor(
            "ready",
            "1 while this node reports ready (/readyz answers 200), else 0.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(readiness.is_ready())).encode(ready)?;
        let mut up = encoder.encode_descriptor(
            "dependency_up",
            "The last health probe of each dependency: 1 answering, 0 not.",
            None,
            MetricType::Gauge,
        )?;
        for (dependency, state) in [("postgres", readiness.postgres()), ("redis", readiness.redis())] {
            let value = match state {
                DependencyState::Disabled => continue,
                DependencyState::Up => 1,
                DependencyState::Down => 0,
            };
            ConstGauge::new(value).encode(up.encode_family(&DependencyLabels { dependency })?)?;
        }
        Ok(())
    }
}
