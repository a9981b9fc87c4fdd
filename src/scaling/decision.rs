//! The autoscaling decision: a pure function in the style of the Kubernetes
//! HorizontalPodAutoscaler (autoscaling/v2), with the same steps in the same
//! order as the HPA controller:
//!
//! 1. Outside `[min, max]`, the current count goes straight to the bound.
//! 2. Each tracked signal proposes `ceil(value / target)` replicas, or the
//!    current count when its usage ratio `(value / current) / target` is
//!    within the direction's tolerance of 1. The largest proposal is the raw
//!    recommendation.
//! 3. Stabilization: scaling up uses the lowest recommendation within the
//!    scale-up window, scaling down the highest within the scale-down
//!    window (the raw one included).
//! 4. Rate limits: each rule allows a change relative to the count at the
//!    start of its period (`current - added + removed` within the period);
//!    the select policy picks the most (MAX) or least (MIN) permissive rule,
//!    or forbids the direction (DISABLED). Then `[min, max]`.
//!
//! Every [`Decision`] explains itself: the inputs, each signal's proposal,
//! the raw recommendation and the rule that bounded it. Integer arithmetic is
//! used where the HPA uses floats on replica counts, so results are exact.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::policy::{Policy, RuleType, Rules, SelectPolicy, Signal};

/// What bounded a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitingRule {
    /// Nothing: desired is the raw recommendation.
    None,
    /// Load within tolerance kept the count.
    Tolerance,
    /// A stabilization window kept an earlier recommendation.
    Stabilization,
    /// The scale-up rules limited the increase.
    ScaleUpPolicy,
    /// The scale-down rules limited the decrease.
    ScaleDownPolicy,
    /// Raised to the minimum.
    MinReplicas,
    /// Lowered to the maximum.
    MaxReplicas,
}

impl LimitingRule {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitingRule::None => "none",
            LimitingRule::Tolerance => "tolerance",
            LimitingRule::Stabilization => "stabilization",
            LimitingRule::ScaleUpPolicy => "scale_up_policy",
            LimitingRule::ScaleDownPolicy => "scale_down_policy",
            LimitingRule::MinReplicas => "min_replicas",
            LimitingRule::MaxReplicas => "max_replicas",
        }
    }

    /// Parses the stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [
            LimitingRule::None,
            LimitingRule::Tolerance,
            LimitingRule::Stabilization,
            LimitingRule::ScaleUpPolicy,
            LimitingRule::ScaleDownPolicy,
            LimitingRule::MinReplicas,
            LimitingRule::MaxReplicas,
        ]
        .into_iter()
        .find(|rule| rule.as_str() == text)
    }
}

/// A raw recommendation made at some time (for stabilization).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recommendation {
    /// When.
    pub at: DateTime<Utc>,
    /// Raw recommended replicas.
    pub replicas: u32,
}

/// A change of the replica count (for the rate limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleEvent {
    /// When.
    pub at: DateTime<Utc>,
    /// Replicas added (positive) or removed (negative).
    pub change: i64,
}

/// What earlier decisions left behind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// Earlier raw recommendations.
    pub recommendations: Vec<Recommendation>,
    /// Earlier changes of the count.
    pub events: Vec<ScaleEvent>,
}

impl History {
    /// Adds `decision` and forgets what `policy` can no longer look at.
    pub fn record(&mut self, decision: &Decision, policy: &Policy) {
        self.recommendations.push(Recommendation { at: decision.at, replicas: decision.raw });
        if decision.desired != decision.current {
            self.events.push(ScaleEvent {
                at: decision.at,
                change: i64::from(decision.desired) - i64::from(decision.current),
            });
        }
        let window = policy.scale_up.stabilization_window.max(policy.scale_down.stabilization_window);
        let period =
            policy.scale_up.rules.iter().chain(&policy.scale_down.rules).map(|r| r.period).max().unwrap_or_default();
        let keep_recs = decision.at - chrono_duration(window);
        let keep_events = decision.at - chrono_duration(period);
        self.recommendations.retain(|r| r.at > keep_recs);
        self.events.retain(|e| e.at > keep_events);
    }
}

/// How one signal was evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricEvaluation {
    /// The signal.
    pub signal: Signal,
    /// Measured value for the whole tenant.
    pub current_value: f64,
    /// Target per replica.
    pub target_value: f64,
    /// Replicas this signal proposes.
    pub proposed: u32,
    /// Whether tolerance kept the current count.
    pub within_tolerance: bool,
}

/// One evaluation's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// When it was evaluated.
    pub at: DateTime<Utc>,
    /// Replicas before.
    pub current: u32,
    /// Replicas after.
    pub desired: u32,
    /// The largest proposal, before stabilization, rate limits and bounds.
    pub raw: u32,
    /// Each signal's evaluation.
    pub metrics: Vec<MetricEvaluation>,
    /// What bounded it.
    pub limiting_rule: LimitingRule,
    /// A sentence for humans.
    pub explanation: String,
}

fn chrono_duration(value: Duration) -> chrono::Duration {
    chrono::Duration::from_std(value).unwrap_or(chrono::Duration::MAX)
}

/// `ceil(value / target)` for non-negative finite inputs, robust to float
/// noise like `1.1 / 0.1 = 11.000000000000002`, saturating at `u32::MAX`.
fn ceil_div(value: f64, target: f64) -> u32 {
    let ratio = value.max(0.0) / target;
    if !ratio.is_finite() {
        return u32::MAX;
    }
    let nearest = ratio.round();
    let ceiled = if (ratio - nearest).abs() <= 1e-9 * nearest.max(1.0) { nearest } else { ratio.ceil() };
    ceiled.min(f64::from(u32::MAX)) as u32
}

/// Decides the replica count at `now` from the measured `values` (signals
/// not measured count as 0), the `current` count and `history`.
pub fn decide(
    policy: &Policy,
    now: DateTime<Utc>,
    current: u32,
    values: &[(Signal, f64)],
    history: &History,
) -> Decision {
    let value_of = |signal: Signal| {
        values.iter().find(|(s, _)| *s == signal).map(|(_, v)| if v.is_finite() { v.max(0.0) } else { 0.0 })
    };
    let metrics: Vec<MetricEvaluation> = policy
        .metrics
        .iter()
        .map(|target| {
            let value = value_of(target.signal).unwrap_or(0.0);
            let untolerated = ceil_div(value, target.target_value);
            let within_tolerance = current > 0 && {
                let ratio = value / f64::from(current) / target.target_value;
                (ratio >= 1.0 && ratio - 1.0 <= policy.scale_up_tolerance)
                    || (ratio < 1.0 && 1.0 - ratio <= policy.scale_down_tolerance)
            };
            let proposed = if within_tolerance { current } else { untolerated };
            MetricEvaluation {
                signal: target.signal,
                current_value: value,
                target_value: target.target_value,
                proposed,
                within_tolerance: within_tolerance && untolerated != current,
            }
        })
        .collect();
    let raw = metrics.iter().map(|m| m.proposed).max().unwrap_or(current);
    let mut notes: Vec<String> = metrics
        .iter()
        .map(|m| {
            format!(
                "{} {} over target {} per replica proposes {}{}",
                m.signal.name(),
                trim(m.current_value),
                trim(m.target_value),
                m.proposed,
                if m.within_tolerance { " (within tolerance)" } else { "" }
            )
        })
        .collect();
    if metrics.is_empty() {
        notes.push("no signals tracked".to_owned());
    }
    let decision = |desired: u32, limiting_rule: LimitingRule, mut notes: Vec<String>, why: String| {
        notes.push(why);
        Decision {
            at: now,
            current,
            desired,
            raw,
            metrics: metrics.clone(),
            limiting_rule,
            explanation: notes.join("; "),
        }
    };

    // 1. Out of bounds: straight to the bound, as the HPA does.
    if current > policy.max_replicas {
        return decision(
            policy.max_replicas,
            LimitingRule::MaxReplicas,
            notes,
            format!(
                "current {current} is above max_replicas {}: scale to {}",
                policy.max_replicas, policy.max_replicas
            ),
        );
    }
    if current < policy.min_replicas {
        return decision(
            policy.min_replicas,
            LimitingRule::MinReplicas,
            notes,
            format!(
                "current {current} is below min_replicas {}: scale to {}",
                policy.min_replicas, policy.min_replicas
            ),
        );
    }

    // 3. Stabilization.
    let in_window = |window: Duration| {
        let cutoff = now - chrono_duration(window);
        history.recommendations.iter().filter(move |r| r.at > cutoff).map(|r| r.replicas)
    };
    let up_floor = in_window(policy.scale_up.stabilization_window).fold(raw, u32::min);
    let down_ceiling = in_window(policy.scale_down.stabilization_window).fold(raw, u32::max);
    let stabilized = if current < up_floor {
        up_floor
    } else if current > down_ceiling {
        down_ceiling
    } else {
        current
    };

    // 4. Rate limits and bounds.
    let (desired, bounded_by) = if stabilized > current {
        if policy.scale_up.select == SelectPolicy::Disabled {
            (current, Some((LimitingRule::ScaleUpPolicy, "scale-up is disabled".to_owned())))
        } else {
            let limit = rate_limit(current, now, &history.events, &policy.scale_up, true).max(i64::from(current));
            let (allowed, rule) = if limit < i64::from(policy.max_replicas) {
                (limit as u32, LimitingRule::ScaleUpPolicy)
            } else {
                (policy.max_replicas, LimitingRule::MaxReplicas)
            };
            if stabilized > allowed {
                let why = match rule {
                    LimitingRule::ScaleUpPolicy => format!("scale-up rules allow at most {allowed}"),
                    _ => format!("max_replicas is {allowed}"),
                };
                (allowed, Some((rule, why)))
            } else {
                (stabilized, None)
            }
        }
    } else if stabilized < current {
        if policy.scale_down.select == SelectPolicy::Disabled {
            (current, Some((LimitingRule::ScaleDownPolicy, "scale-down is disabled".to_owned())))
        } else {
            let limit = rate_limit(current, now, &history.events, &policy.scale_down, false).min(i64::from(current));
            let (allowed, rule) = if limit > i64::from(policy.min_replicas) {
                (limit as u32, LimitingRule::ScaleDownPolicy)
            } else {
                (policy.min_replicas, LimitingRule::MinReplicas)
            };
            if stabilized < allowed {
                let why = match rule {
                    LimitingRule::ScaleDownPolicy => format!("scale-down rules allow at least {allowed}"),
                    _ => format!("min_replicas is {allowed}"),
                };
                (allowed, Some((rule, why)))
            } else {
                (stabilized, None)
            }
        }
    } else {
        (current, None)
    };

    let raw_note = format!("raw recommendation {raw}");
    notes.push(raw_note);
    if let Some((rule, why)) = bounded_by {
        return decision(desired, rule, notes, format!("{why}: {current} -> {desired}"));
    }
    if stabilized != raw {
        let why = if raw < current {
            format!(
                "scale-down stabilization window ({}s) keeps {stabilized}",
                policy.scale_down.stabilization_window.as_secs()
            )
        } else {
            format!(
                "scale-up stabilization window ({}s) keeps {stabilized}",
                policy.scale_up.stabilization_window.as_secs()
            )
        };
        return decision(desired, LimitingRule::Stabilization, notes, format!("{why}: {current} -> {desired}"));
    }
    if desired == current && metrics.iter().any(|m| m.within_tolerance) {
        return decision(desired, LimitingRule::Tolerance, notes, format!("within tolerance: keep {current}"));
    }
    let why = if desired == current { format!("keep {current}") } else { format!("scale {current} -> {desired}") };
    decision(desired, LimitingRule::None, notes, why)
}

/// The count the rules allow, relative to each rule's period start
/// (`current - added + removed` within the period): the highest (scale up)
/// or lowest (scale down) reachable count, per the select policy.
fn rate_limit(current: u32, now: DateTime<Utc>, events: &[ScaleEvent], rules: &Rules, up: bool) -> i64 {
    let most_permissive = rules.select != SelectPolicy::Min;
    let mut result: Option<i64> = None;
    for rule in &rules.rules {
        let cutoff = now - chrono_duration(rule.period);
        let (added, removed) = events
            .iter()
            .filter(|e| e.at > cutoff)
            .fold((0i64, 0i64), |(a, r), e| if e.change > 0 { (a + e.change, r) } else { (a, r - e.change) });
        let start = i64::from(current) - added + removed;
        let value = i64::from(rule.value);
        let proposed = match (rule.kind, up) {
            (RuleType::Pods, true) => start + value,
            (RuleType::Pods, false) => start - value,
            // ceil(start * (1 + value/100)), exactly.
            (RuleType::Percent, true) => (start * (100 + value) + 99).div_euclid(100),
            // floor(start * (1 - value/100)), exactly.
            (RuleType::Percent, false) => (start * (100 - value)).div_euclid(100),
        };
        let more_permissive = |a: i64, b: i64| if up { a.max(b) } else { a.min(b) };
        let less_permissive = |a: i64, b: i64| if up { a.min(b) } else { a.max(b) };
        result = Some(match result {
            None => proposed,
            Some(best) if most_permissive => more_permissive(best, proposed),
            Some(best) => less_permissive(best, proposed),
        });
    }
    result.unwrap_or(if up { i64::MAX } else { 0 })
}

/// A number without a useless `.0`.
fn trim(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 { format!("{}", value as i64) } else { format!("{value:.3}") }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;
    use crate::scaling::policy::{MetricTarget, Rule};

    fn t(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + seconds, 0).single().unwrap()
    }

    fn policy(min: u32, max: u32, target: f64) -> Policy {
        Policy {
            min_replicas: min,
            max_replicas: max,
            metrics: vec![MetricTarget { signal: Signal::RequestRate, target_value: target }],
            ..Policy::default_for_plan(min, max)
        }
    }

    fn rate(value: f64) -> Vec<(Signal, f64)> {
        vec![(Signal::RequestRate, value)]
    }

    #[test]
    fn the_hpa_formula_rounds_up_the_per_replica_ratio() {
        // 180 rps over 3 replicas at 50 rps each: ratio 1.2, ceil(3 * 1.2) = ceil(3.6) = 4.
        let d = decide(&policy(1, 10, 50.0), t(0), 3, &rate(180.0), &History::default());
        assert_eq!((d.raw, d.desired, d.limiting_rule), (4, 4, LimitingRule::None));
        assert_eq!(d.metrics[0].proposed, 4);
        assert!(d.explanation.contains("request_rate 180 over target 50 per replica proposes 4"), "{}", d.explanation);
    }

    #[test]
    fn load_within_tolerance_keeps_the_count() {
        // 210 over 4 replicas at 50: ratio 1.05 is within the 10% tolerance.
        let d = decide(&policy(1, 10, 50.0), t(0), 4, &rate(210.0), &History::default());
        assert_eq!((d.raw, d.desired, d.limiting_rule), (4, 4, LimitingRule::Tolerance));
        // 230: ratio 1.15 is not; ceil(230 / 50) = 5.
        let d = decide(&policy(1, 10, 50.0), t(0), 4, &rate(230.0), &History::default());
        assert_eq!((d.raw, d.desired), (5, 5));
    }

    #[test]
    fn the_default_scale_up_rules_allow_the_larger_of_4_pods_and_100_percent() {
        // From 2 replicas, 1000 rps at 50 wants 20; +4 pods gives 6, +100% gives 4: MAX is 6.
        let d = decide(&policy(1, 50, 50.0), t(0), 2, &rate(1000.0), &History::default());
        assert_eq!((d.raw, d.desired, d.limiting_rule), (20, 6, LimitingRule::ScaleUpPolicy));
        // From 10, +100% gives 20 (> +4 = 14): the whole jump is allowed.
        let d = decide(&policy(1, 50, 50.0), t(0), 10, &rate(1000.0), &History::default());
        assert_eq!((d.raw, d.desired, d.limiting_rule), (20, 20, LimitingRule::None));
    }

    #[test]
    fn scale_up_rules_count_changes_already_made_in_the_period() {
        // Already +4 ten seconds ago (6 -> 10 counts from 6): +100% of 6 = 12, +4 = 10: MAX 12.
        let history = History { recommendations: vec![], events: vec![ScaleEvent { at: t(-10), change: 4 }] };
        let d = decide(&policy(1, 50, 50.0), t(0), 10, &rate(1000.0), &history);
        assert_eq!((d.desired, d.limiting_rule), (12, LimitingRule::ScaleUpPolicy));
        // With MIN select: min(6 + 4, 12) = 10, no growth this period.
        let mut p = policy(1, 50, 50.0);
        p.scale_up.select = SelectPolicy::Min;
        let d = decide(&p, t(0), 10, &rate(1000.0), &history);
        assert_eq!((d.desired, d.limiting_rule), (10, LimitingRule::ScaleUpPolicy));
    }

    #[test]
    fn scale_down_waits_for_the_highest_recommendation_in_the_window() {
        // Load fell to 2 replicas' worth, but 200 s ago 8 were recommended (300 s window).
        let history = History {
            recommendations: vec![
                Recommendation { at: t(-400), replicas: 10 },
                Recommendation { at: t(-200), replicas: 8 },
                Recommendation { at: t(-100), replicas: 6 },
            ],
            events: vec![],
        };
        let d = decide(&policy(1, 20, 50.0), t(0), 10, &rate(100.0), &history);
        assert_eq!((d.raw, d.desired, d.limiting_rule), (2, 8, LimitingRule::Stabilization));
        // After the window, it scales down fully (100% per 15 s), to the minimum of 1 at most.
        let d = decide(&policy(1, 20, 50.0), t(0), 10, &rate(0.0), &History::default());
        assert_eq!((d.raw, d.desired, d.limiting_rule), (0, 1, LimitingRule::MinReplicas));
    }

    #[test]
    fn scale_down_rules_limit_the_decrease() {
        let mut p = policy(1, 20, 50.0);
        p.scale_down = Rules {
            stabilization_window: Duration::ZERO,
            select: SelectPolicy::Max,
            rules: vec![
                Rule { kind: RuleType::Pods, value: 2, period: Duration::from_secs(60) },
                Rule { kind: RuleType::Percent, value: 10, period: Duration::from_secs(60) },
            ],
        };
        // From 10: -2 pods gives 8, -10% gives floor(9) = 9; MAX (biggest change) is 8.
        let d = decide(&p, t(0), 10, &rate(100.0), &History::default());
        assert_eq!((d.raw, d.desired, d.limiting_rule), (2, 8, LimitingRule::ScaleDownPolicy));
        p.scale_down.select = SelectPolicy::Min;
        let d = decide(&p, t(0), 10, &rate(100.0), &History::default());
        assert_eq!(d.desired, 9);
        p.scale_down.select = SelectPolicy::Disabled;
        let d = decide(&p, t(0), 10, &rate(100.0), &History::default());
        assert_eq!((d.desired, d.limiting_rule), (10, LimitingRule::ScaleDownPolicy));
    }

    #[test]
    fn the_largest_signal_wins_and_bounds_apply() {
        let mut p = policy(2, 5, 50.0);
        p.metrics.push(MetricTarget { signal: Signal::JobBacklog, target_value: 10.0 });
        let values = vec![(Signal::RequestRate, 60.0), (Signal::JobBacklog, 45.0)];
        // request rate proposes ceil(1.2) = 2, backlog ceil(4.5) = 5.
        let d = decide(&p, t(0), 3, &values, &History::default());
        assert_eq!((d.raw, d.desired), (5, 5));
        let values = vec![(Signal::JobBacklog, 1000.0)];
        let d = decide(&p, t(0), 4, &values, &History::default());
        assert_eq!((d.raw, d.desired, d.limiting_rule), (100, 5, LimitingRule::MaxReplicas));
        // Above max (the policy was lowered): straight to max.
        let d = decide(&p, t(0), 9, &values, &History::default());
        assert_eq!((d.desired, d.limiting_rule), (5, LimitingRule::MaxReplicas));
    }

    #[test]
    fn float_noise_does_not_add_a_replica() {
        assert_eq!(ceil_div(1.1, 0.1), 11);
        assert_eq!(ceil_div(0.7, 0.1), 7);
        assert_eq!(ceil_div(3.6, 1.0), 4);
    }

    fn arb_rules(up: bool) -> impl Strategy<Value = Rules> {
        let rule = (prop_oneof![Just(RuleType::Pods), Just(RuleType::Percent)], 1u32..=200, 1u64..=600).prop_map(
            move |(kind, value, period)| Rule {
                kind,
                value: if !up && kind == RuleType::Percent { value.min(100) } else { value },
                period: Duration::from_secs(period),
            },
        );
        (
            0u64..=900,
            prop_oneof![Just(SelectPolicy::Max), Just(SelectPolicy::Min), Just(SelectPolicy::Disabled)],
            proptest::collection::vec(rule, 1..4),
        )
            .prop_map(|(window, select, rules)| Rules {
                stabilization_window: Duration::from_secs(window),
                select,
                rules,
            })
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (1u32..=20, 0u32..=30, 0.0f64..=0.5, 0.0f64..=0.5, 0.5f64..=200.0, arb_rules(true), arb_rules(false)).prop_map(
            |(min, spread, up_tol, down_tol, target, scale_up, scale_down)| Policy {
                min_replicas: min,
                max_replicas: min + spread,
                metrics: vec![
                    MetricTarget { signal: Signal::RequestRate, target_value: target },
                    MetricTarget { signal: Signal::JobBacklog, target_value: target / 2.0 },
                ],
                scale_up_tolerance: up_tol,
                scale_down_tolerance: down_tol,
                scale_up,
                scale_down,
                evaluation_interval: Duration::from_secs(15),
            },
        )
    }

    /// A policy and a replayed series of (seconds since start, request rate, backlog).
    fn arb_run() -> impl Strategy<Value = (Policy, u32, Vec<(i64, f64, f64)>)> {
        (arb_policy(), 0u32..=60, proptest::collection::vec((1i64..=120, 0.0f64..=5000.0, 0.0f64..=5000.0), 1..60))
            .prop_map(|(policy, initial, steps)| {
                let mut at = 0;
                let series = steps
                    .into_iter()
                    .map(|(gap, rps, backlog)| {
                        at += gap;
                        (at, rps, backlog)
                    })
                    .collect();
                (policy, initial, series)
            })
    }

    proptest! {
        #[test]
        fn decisions_never_leave_the_replica_bounds((policy, initial, series) in arb_run()) {
            let mut history = History::default();
            let mut current = initial;
            for (at, rps, backlog) in series {
                let d = decide(&policy, t(at), current, &[(Signal::RequestRate, rps), (Signal::JobBacklog, backlog)], &history);
                prop_assert!(d.desired >= policy.min_replicas && d.desired <= policy.max_replicas,
                    "{} outside [{}, {}]: {}", d.desired, policy.min_replicas, policy.max_replicas, d.explanation);
                history.record(&d, &policy);
                current = d.desired;
            }
        }

        #[test]
        fn no_scale_down_below_a_recommendation_inside_the_window((policy, initial, series) in arb_run()) {
            let mut history = History::default();
            let mut current = initial.clamp(policy.min_replicas, policy.max_replicas);
            for (at, rps, backlog) in series {
                let now = t(at);
                let d = decide(&policy, now, current, &[(Signal::RequestRate, rps), (Signal::JobBacklog, backlog)], &history);
                if d.desired < current {
                    let cutoff = now - chrono_duration(policy.scale_down.stabilization_window);
                    for rec in history.recommendations.iter().filter(|r| r.at > cutoff) {
                        prop_assert!(d.desired >= rec.replicas.min(current),
                            "scaled down to {} while {} was recommended at {} (window {:?})",
                            d.desired, rec.replicas, rec.at, policy.scale_down.stabilization_window);
                    }
                    prop_assert!(d.desired >= d.raw.min(current));
                }
                history.record(&d, &policy);
                current = d.desired;
            }
        }

        #[test]
        fn scale_up_never_exceeds_the_most_permissive_rule((policy, initial, series) in arb_run()) {
            let mut history = History::default();
            let mut current = initial.clamp(policy.min_replicas, policy.max_replicas);
            for (at, rps, backlog) in series {
                let now = t(at);
                let d = decide(&policy, now, current, &[(Signal::RequestRate, rps), (Signal::JobBacklog, backlog)], &history);
                if d.desired > current {
                    prop_assert!(policy.scale_up.select != SelectPolicy::Disabled);
                    let limit = rate_limit(current, now, &history.events, &policy.scale_up, true);
                    prop_assert!(i64::from(d.desired) <= limit.max(i64::from(current)));
                }
                history.record(&d, &policy);
                current = d.desired;
            }
        }
    }
}
