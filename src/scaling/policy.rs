//! A tenant's scaling policy as the domain sees it: the HPA v2 spec with
//! defaults filled in, validated from protobuf at the edge, stored as JSON.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{error::ApiError, jobs::convert, proto::tenantry::v1 as pb};

/// A load signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Requests per second.
    RequestRate,
    /// Handler seconds per second.
    ComputeTime,
    /// Due jobs not yet leased.
    JobBacklog,
}

impl Signal {
    /// Name in explanations.
    pub fn name(self) -> &'static str {
        match self {
            Signal::RequestRate => "request_rate",
            Signal::ComputeTime => "compute_time",
            Signal::JobBacklog => "job_backlog",
        }
    }

    /// From protobuf.
    pub fn from_proto(value: i32) -> Option<Self> {
        match pb::ScalingSignal::try_from(value).ok()? {
            pb::ScalingSignal::RequestRate => Some(Signal::RequestRate),
            pb::ScalingSignal::ComputeTime => Some(Signal::ComputeTime),
            pb::ScalingSignal::JobBacklog => Some(Signal::JobBacklog),
            pb::ScalingSignal::Unspecified => None,
        }
    }

    /// To protobuf.
    pub fn to_proto(self) -> pb::ScalingSignal {
        match self {
            Signal::RequestRate => pb::ScalingSignal::RequestRate,
            Signal::ComputeTime => pb::ScalingSignal::ComputeTime,
            Signal::JobBacklog => pb::ScalingSignal::JobBacklog,
        }
    }
}

/// How to combine one direction's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectPolicy {
    /// The most permissive rule.
    Max,
    /// The least permissive rule.
    Min,
    /// Never scale in this direction.
    Disabled,
}

/// The unit of a rule's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleType {
    /// Replicas.
    Pods,
    /// Percent of the count at the period's start.
    Percent,
}

/// One rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Unit of `value`.
    pub kind: RuleType,
    /// Largest change within `period`.
    pub value: u32,
    /// The window the change is measured over.
    #[serde(with = "millis")]
    pub period: Duration,
}

/// One direction's behavior.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// How far back recommendations are considered.
    #[serde(with = "millis")]
    pub stabilization_window: Duration,
    /// How rules combine.
    pub select: SelectPolicy,
    /// The rate limits (never empty after defaults).
    pub rules: Vec<Rule>,
}

impl Rules {
    /// The HPA's scale-up default: no window, max of +100% and +4 per 15 s.
    pub fn default_up() -> Self {
        Rules {
            stabilization_window: Duration::ZERO,
            select: SelectPolicy::Max,
            rules: vec![
                Rule { kind: RuleType::Percent, value: 100, period: Duration::from_secs(15) },
                Rule { kind: RuleType::Pods, value: 4, period: Duration::from_secs(15) },
            ],
        }
    }

    /// The HPA's scale-down default: 300 s window, -100% per 15 s.
    pub fn default_down() -> Self {
        Rules {
            stabilization_window: Duration::from_secs(300),
            select: SelectPolicy::Max,
            rules: vec![Rule { kind: RuleType::Percent, value: 100, period: Duration::from_secs(15) }],
        }
    }
}

/// A target for one signal.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricTarget {
    /// The signal.
    pub signal: Signal,
    /// Desired value per replica.
    pub target_value: f64,
}

/// A complete policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Lowest count.
    pub min_replicas: u32,
    /// Highest count.
    pub max_replicas: u32,
    /// Signals and targets.
    pub metrics: Vec<MetricTarget>,
    /// Scale-up tolerance on the usage ratio.
    pub scale_up_tolerance: f64,
    /// Scale-down tolerance on the usage ratio.
    pub scale_down_tolerance: f64,
    /// Scale-up behavior.
    pub scale_up: Rules,
    /// Scale-down behavior.
    pub scale_down: Rules,
    /// How often it is evaluated.
    #[serde(with = "millis")]
    pub evaluation_interval: Duration,
}

impl Policy {
    /// The policy a tenant has until it sets one: the plan's bounds, request
    /// rate at 50/s per replica and a backlog of 100 jobs per replica.
    pub fn default_for_plan(plan_min: u32, plan_max: u32) -> Self {
        let min_replicas = plan_min.max(1);
        Policy {
            min_replicas,
            max_replicas: plan_max.max(min_replicas),
            metrics: vec![
                MetricTarget { signal: Signal::RequestRate, target_value: 50.0 },
                MetricTarget { signal: Signal::JobBacklog, target_value: 100.0 },
            ],
            scale_up_tolerance: 0.1,
            scale_down_tolerance: 0.1,
            scale_up: Rules::default_up(),
            scale_down: Rules::default_down(),
            evaluation_interval: Duration::from_secs(15),
        }
    }

    /// The policy as protobuf.
    pub fn to_proto(&self, update_time: Option<chrono::DateTime<chrono::Utc>>) -> pb::ScalingPolicy {
        let rules = |r: &Rules| pb::ScalingRules {
            stabilization_window: Some(convert::duration(r.stabilization_window)),
            select_policy: match r.select {
                SelectPolicy::Max => pb::ScalingSelectPolicy::Max,
                SelectPolicy::Min => pb::ScalingSelectPolicy::Min,
                SelectPolicy::Disabled => pb::ScalingSelectPolicy::Disabled,
            } as i32,
            rules: r
                .rules
                .iter()
                .map(|rule| pb::ScalingPolicyRule {
                    r#type: match rule.kind {
                        RuleType::Pods => pb::ScalingPolicyRuleType::Pods,
                        RuleType::Percent => pb::ScalingPolicyRuleType::Percent,
                    } as i32,
                    value: rule.value,
                    period: Some(convert::duration(rule.period)),
                })
                .collect(),
        };
        pb::ScalingPolicy {
            min_replicas: self.min_replicas,
            max_replicas: self.max_replicas,
            metrics: self
                .metrics
                .iter()
                .map(|m| pb::MetricTarget { signal: m.signal.to_proto() as i32, target_value: m.target_value })
                .collect(),
            scale_up_tolerance: Some(self.scale_up_tolerance),
            scale_down_tolerance: Some(self.scale_down_tolerance),
            scale_up: Some(rules(&self.scale_up)),
            scale_down: Some(rules(&self.scale_down)),
            evaluation_interval: Some(convert::duration(self.evaluation_interval)),
            update_time: update_time.map(crate::proto::timestamp),
        }
    }

    /// Checks the policy on its own (the plan's bounds are checked by the
    /// caller), naming the field at fault under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<(), ApiError> {
        let field = |name: &str| format!("{prefix}{name}");
        if self.min_replicas < 1 {
            return Err(ApiError::invalid(field("min_replicas"), "must be at least 1"));
        }
        if self.max_replicas < self.min_replicas {
            return Err(ApiError::invalid(field("max_replicas"), "must be at least min_replicas"));
        }
        if self.max_replicas > 10_000 {
            return Err(ApiError::invalid(field("max_replicas"), "must be at most 10000"));
        }
        for (i, m) in self.metrics.iter().enumerate() {
            if !(m.target_value.is_finite() && m.target_value > 0.0) {
                return Err(ApiError::invalid(field(&format!("metrics[{i}].target_value")), "must be greater than 0"));
            }
            if self.metrics[..i].iter().any(|other| other.signal == m.signal) {
                return Err(ApiError::invalid(field(&format!("metrics[{i}].signal")), "is tracked twice"));
            }
        }
        for (name, value) in
            [("scale_up_tolerance", self.scale_up_tolerance), ("scale_down_tolerance", self.scale_down_tolerance)]
        {
            if !(value.is_finite() && (0.0..=10.0).contains(&value)) {
                return Err(ApiError::invalid(field(name), "must be between 0 and 10"));
            }
        }
        for (name, rules) in [("scale_up", &self.scale_up), ("scale_down", &self.scale_down)] {
            if rules.stabilization_window > Duration::from_secs(3600) {
                return Err(ApiError::invalid(
                    field(&format!("{name}.stabilization_window")),
                    "must be at most 1 hour",
                ));
            }
            if rules.rules.is_empty() {
                return Err(ApiError::invalid(field(&format!("{name}.rules")), "must not be empty"));
            }
            for (i, rule) in rules.rules.iter().enumerate() {
                if rule.value == 0 {
                    return Err(ApiError::invalid(
                        field(&format!("{name}.rules[{i}].value")),
                        "must be greater than 0",
                    ));
                }
                if name == "scale_down" && rule.kind == RuleType::Percent && rule.value > 100 {
                    return Err(ApiError::invalid(
                        field(&format!("{name}.rules[{i}].value")),
                        "must be at most 100 percent",
                    ));
                }
                if rule.period.is_zero() || rule.period > Duration::from_secs(1800) {
                    return Err(ApiError::invalid(
                        field(&format!("{name}.rules[{i}].period")),
                        "must be greater than 0 and at most 30 minutes",
                    ));
                }
            }
        }
        if !(Duration::from_secs(5)..=Duration::from_secs(3600)).contains(&self.evaluation_interval) {
            return Err(ApiError::invalid(field("evaluation_interval"), "must be between 5 seconds and 1 hour"));
        }
        Ok(())
    }
}

/// The fields UpdateScalingPolicy may change: whole fields, and the parts
/// of each direction's rules.
pub const MUTABLE: crate::field_mask::Mutable = crate::field_mask::Mutable {
    message: "tenantry.v1.ScalingPolicy",
    paths: &[
        "min_replicas",
        "max_replicas",
        "metrics",
        "scale_up_tolerance",
        "scale_down_tolerance",
        "scale_up",
        "scale_down",
        "scale_up.stabilization_window",
        "scale_up.select_policy",
        "scale_up.rules",
        "scale_down.stabilization_window",
        "scale_down.select_policy",
        "scale_down.rules",
        "evaluation_interval",
    ],
};

/// Applies the fields of `update` named by `paths` (proto paths from
/// [`crate::field_mask::UpdateMask`], within [`MUTABLE`]; or, with no paths,
/// every field set to a non-default value) onto `base`, then validates. A
/// named field that `update` leaves unset takes its default.
pub fn apply_update(base: &Policy, update: &pb::ScalingPolicy, paths: &[String]) -> Result<Policy, ApiError> {
    let mut policy = base.clone();
    let explicit = !paths.is_empty();
    let named = |path: &str| paths.iter().any(|p| p == path);
    let set = |path: &str, present: bool| if explicit { named(path) } else { present };
    if set("min_replicas", update.min_replicas != 0) {
        policy.min_replicas = update.min_replicas;
    }
    if set("max_replicas", update.max_replicas != 0) {
        policy.max_replicas = update.max_replicas;
    }
    if set("metrics", !update.metrics.is_empty()) {
        policy.metrics = update
            .metrics
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let signal = Signal::from_proto(m.signal).ok_or_else(|| {
                    ApiError::invalid(format!("policy.metrics[{i}].signal"), "must be a known signal")
                })?;
                Ok(MetricTarget { signal, target_value: m.target_value })
            })
            .collect::<Result<_, ApiError>>()?;
    }
    if set("scale_up_tolerance", update.scale_up_tolerance.is_some()) {
        policy.scale_up_tolerance = update.scale_up_tolerance.unwrap_or(0.1);
    }
    if set("scale_down_tolerance", update.scale_down_tolerance.is_some()) {
        policy.scale_down_tolerance = update.scale_down_tolerance.unwrap_or(0.1);
    }
    for (name, target, given, default) in [
        ("scale_up", &mut policy.scale_up, update.scale_up.as_ref(), Rules::default_up()),
        ("scale_down", &mut policy.scale_down, update.scale_down.as_ref(), Rules::default_down()),
    ] {
        let whole = if explicit { named(name) } else { given.is_some() };
        let part = |field: &str, present: bool| {
            whole || (explicit && named(&format!("{name}.{field}"))) || (!explicit && present)
        };
        let empty = pb::ScalingRules::default();
        let given_rules = given.unwrap_or(&empty);
        if whole && given.is_none() {
            *target = default;
            continue;
        }
        if part("stabilization_window", given_rules.stabilization_window.is_some()) {
            target.stabilization_window = match &given_rules.stabilization_window {
                Some(d) => convert::from_duration(d).ok_or_else(|| {
                    ApiError::invalid(format!("policy.{name}.stabilization_window"), "must not be negative")
                })?,
                None => default.stabilization_window,
            };
        }
        if part("select_policy", given_rules.select_policy != 0) {
            target.select = select_from_proto(given_rules.select_policy).ok_or_else(|| {
                ApiError::invalid(format!("policy.{name}.select_policy"), "must be a known select policy")
            })?;
        }
        if part("rules", !given_rules.rules.is_empty()) {
            target.rules = if given_rules.rules.is_empty() {
                default.rules.clone()
            } else {
                rules_from_proto(&given_rules.rules, name)?
            };
        }
    }
    if set("evaluation_interval", update.evaluation_interval.is_some()) {
        policy.evaluation_interval = match &update.evaluation_interval {
            Some(d) => convert::from_duration(d)
                .ok_or_else(|| ApiError::invalid("policy.evaluation_interval", "must not be negative"))?,
            None => Duration::from_secs(15),
        };
    }
    policy.validate("policy.")?;
    Ok(policy)
}

/// A full policy from protobuf, defaults for unset fields (SimulateScaling).
pub fn from_proto(value: &pb::ScalingPolicy) -> Result<Policy, ApiError> {
    let base = Policy::default_for_plan(value.min_replicas.max(1), value.max_replicas.max(value.min_replicas.max(1)));
    apply_update(&base, value, &[])
}

fn select_from_proto(value: i32) -> Option<SelectPolicy> {
    match pb::ScalingSelectPolicy::try_from(value).ok()? {
        pb::ScalingSelectPolicy::Unspecified | pb::ScalingSelectPolicy::Max => Some(SelectPolicy::Max),
        pb::ScalingSelectPolicy::Min => Some(SelectPolicy::Min),
        pb::ScalingSelectPolicy::Disabled => Some(SelectPolicy::Disabled),
    }
}

fn rules_from_proto(rules: &[pb::ScalingPolicyRule], direction: &str) -> Result<Vec<Rule>, ApiError> {
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let field = |f: &str| format!("policy.{direction}.rules[{i}].{f}");
            let kind = match pb::ScalingPolicyRuleType::try_from(rule.r#type) {
                Ok(pb::ScalingPolicyRuleType::Pods) => RuleType::Pods,
                Ok(pb::ScalingPolicyRuleType::Percent) => RuleType::Percent,
                _ => return Err(ApiError::invalid(field("type"), "must be PODS or PERCENT")),
            };
            let period = rule
                .period
                .as_ref()
                .and_then(convert::from_duration)
                .ok_or_else(|| ApiError::invalid(field("period"), "is required and must not be negative"))?;
            Ok(Rule { kind, value: rule.value, period })
        })
        .collect()
}

/// Durations stored as whole milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(deserializer)?))
    }
}
