//! The gRPC `ScalingService`: the tenant's policy, status and decisions, and
//! a simulator that replays a load series through the pure decision function
//! without storing anything. Every method acts in the call's tenant.

use std::collections::HashMap;

use sqlx::PgPool;
use tonic::{Request, Response, Status};

use super::{
    decision::{self, Decision, History, LimitingRule},
    metrics,
    policy::{self, Signal},
    store::{self, DecisionFilter},
};
use crate::{
    context,
    error::ApiError,
    field_mask::UpdateMask,
    pagination::{self, Cursor, ListQuery, PageTokens},
    proto::{
        tenantry::v1::{self as pb, scaling_service_server::ScalingService},
        timestamp,
    },
};

/// Most samples one simulation replays.
pub const MAX_SAMPLES: usize = 10_000;

/// The ScalingService implementation.
#[derive(Clone)]
pub struct ScalingApi {
    pool: PgPool,
    /// Signs and reads ListScalingDecisions page tokens.
    page_tokens: PageTokens,
}

impl ScalingApi {
    /// Handlers over `pool`.
    pub fn new(pool: PgPool, page_tokens: PageTokens) -> Self {
        ScalingApi { pool, page_tokens }
    }
}

fn rule_to_pb(rule: LimitingRule) -> pb::ScalingLimitingRule {
    match rule {
        LimitingRule::None => pb::ScalingLimitingRule::None,
        LimitingRule::Tolerance => pb::ScalingLimitingRule::Tolerance,
        LimitingRule::Stabilization => pb::ScalingLimitingRule::Stabilization,
        LimitingRule::ScaleUpPolicy => pb::ScalingLimitingRule::ScaleUpPolicy,
        LimitingRule::ScaleDownPolicy => pb::ScalingLimitingRule::ScaleDownPolicy,
        LimitingRule::MinReplicas => pb::ScalingLimitingRule::MinReplicas,
        LimitingRule::MaxReplicas => pb::ScalingLimitingRule::MaxReplicas,
    }
}

/// A decision as the API shows it (`id` empty for simulations).
pub fn decision_to_pb(id: &str, decision: &Decision) -> pb::ScalingDecision {
    pb::ScalingDecision {
        id: id.to_owned(),
        evaluate_time: Some(timestamp(decision.at)),
        current_replicas: decision.current,
        desired_replicas: decision.desired,
        raw_recommendation: decision.raw,
        metrics: decision
            .metrics
            .iter()
            .map(|m| pb::MetricEvaluation {
                signal: m.signal.to_proto() as i32,
                current_value: m.current_value,
                target_value: m.target_value,
                proposed_replicas: m.proposed,
            })
            .collect(),
        limiting_rule: rule_to_pb(decision.limiting_rule) as i32,
        explanation: decision.explanation.clone(),
    }
}

/// Replays `samples` through `policy` from `initial` replicas.
pub fn simulate(
    policy: &policy::Policy,
    initial: u32,
    samples: &[pb::SimulationSample],
) -> Result<Vec<Decision>, ApiError> {
    if samples.is_empty() || samples.len() > MAX_SAMPLES {
        return Err(ApiError::invalid("samples", "must hold 1 to 10000 samples"));
    }
    let mut values: HashMap<Signal, f64> = HashMap::new();
    let mut history = History::default();
    let mut current = initial;
    let mut previous = None;
    let mut decisions = Vec::with_capacity(samples.len());
    for (i, sample) in samples.iter().enumerate() {
        let at = sample
            .sample_time
            .as_ref()
            .and_then(crate::proto::from_timestamp)
            .ok_or_else(|| ApiError::invalid(format!("samples[{i}].sample_time"), "is required"))?;
        if previous.is_some_and(|p| at <= p) {
            return Err(ApiError::invalid(format!("samples[{i}].sample_time"), "must be after the previous sample"));
        }
        previous = Some(at);
        for (j, metric) in sample.metrics.iter().enumerate() {
            let signal = Signal::from_proto(metric.signal).ok_or_else(|| {
                ApiError::invalid(format!("samples[{i}].metrics[{j}].signal"), "must be a known signal")
            })?;
            if !(metric.value.is_finite() && metric.value >= 0.0) {
                return Err(ApiError::invalid(format!("samples[{i}].metrics[{j}].value"), "must be 0 or more"));
            }
            values.insert(signal, metric.value);
        }
        let measured: Vec<(Signal, f64)> = values.iter().map(|(s, v)| (*s, *v)).collect();
        let decision = decision::decide(policy, at, current, &measured, &history);
        history.record(&decision, policy);
        current = decision.desired;
        decisions.push(decision);
    }
    Ok(decisions)
}

#[tonic::async_trait]
impl ScalingService for ScalingApi {
    async fn get_scaling_policy(
        &self,
        request: Request<pb::GetScalingPolicyRequest>,
    ) -> Result<Response<pb::GetScalingPolicyResponse>, Status> {
        let tenant = context::of(&request)?.tenant()?.id.clone();
        let (policy, updated) = store::load_policy(&self.pool, &tenant).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::GetScalingPolicyResponse { policy: Some(policy.to_proto(updated)) }))
    }

    async fn update_scaling_policy(
        &self,
        request: Request<pb::UpdateScalingPolicyRequest>,
    ) -> Result<Response<pb::UpdateScalingPolicyResponse>, Status> {
        let tenant = context::of(&request)?.tenant()?.id.clone();
        let request = request.into_inner();
        let update = request.policy.ok_or_else(|| ApiError::invalid("policy", "is required"))?;
        let paths =
            UpdateMask::parse(request.update_mask.as_ref(), policy::MUTABLE)?.map(|m| m.paths).unwrap_or_default();
        let (base, _) = store::load_policy(&self.pool, &tenant).await.map_err(ApiError::from)?;
        let policy = policy::apply_update(&base, &update, &paths)?;
        let (plan_min, plan_max) = store::plan_bounds(&self.pool, &tenant).await.map_err(ApiError::from)?;
        if policy.min_replicas < plan_min {
            return Err(
                ApiError::invalid("policy.min_replicas", format!("must be at least the plan's {plan_min}")).into()
            );
        }
        if policy.max_replicas > plan_max {
            return Err(
                ApiError::invalid("policy.max_replicas", format!("must be at most the plan's {plan_max}")).into()
            );
        }
        let updated = store::save_policy(&self.pool, &tenant, &policy).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::UpdateScalingPolicyResponse { policy: Some(policy.to_proto(Some(updated))) }))
    }

    async fn get_scaling_status(
        &self,
        request: Request<pb::GetScalingStatusRequest>,
    ) -> Result<Response<pb::GetScalingStatusResponse>, Status> {
        let tenant = context::of(&request)?.tenant()?.id.clone();
        let (policy, _) = store::load_policy(&self.pool, &tenant).await.map_err(ApiError::from)?;
        let state = store::state(&self.pool, &tenant).await.map_err(ApiError::from)?;
        let last = store::last_decision(&self.pool, &tenant).await.map_err(ApiError::from)?;
        let measured =
            metrics::measure(&self.pool, &tenant, policy.evaluation_interval).await.map_err(ApiError::from)?;
        let tracked: Vec<pb::MetricValue> = policy
            .metrics
            .iter()
            .map(|m| pb::MetricValue {
                signal: m.signal.to_proto() as i32,
                value: measured.iter().find(|(s, _)| *s == m.signal).map_or(0.0, |(_, v)| *v),
            })
            .collect();
        let status = pb::ScalingStatus {
            current_replicas: state.as_ref().map_or(policy.min_replicas, |s| s.current_replicas.max(0) as u32),
            desired_replicas: state.as_ref().map_or(policy.min_replicas, |s| s.desired_replicas.max(0) as u32),
            last_decision: last.as_ref().map(|d| decision_to_pb(&d.id, &d.decision)),
            last_evaluate_time: state.as_ref().and_then(|s| s.last_evaluated_at).map(timestamp),
            last_scale_time: state.as_ref().and_then(|s| s.last_scaled_at).map(timestamp),
            current_metrics: tracked,
        };
        Ok(Response::new(pb::GetScalingStatusResponse { status: Some(status) }))
    }

    async fn list_scaling_decisions(
        &self,
        request: Request<pb::ListScalingDecisionsRequest>,
    ) -> Result<Response<pb::ListScalingDecisionsResponse>, Status> {
        let tenant = context::of(&request)?.tenant()?.id.clone();
        let request = request.into_inner();
        let size = pagination::page_size(request.page_size)?;
        let query = ListQuery::new("scaling_decisions", store::LIST_ORDER)
            .filter("start_time", request.start_time)
            .filter("end_time", request.end_time)
            .filter("changes_only", request.changes_only);
        let cursor = self.page_tokens.cursor(&query, &request.page_token)?;
        let time = |field: &'static str, value: Option<&prost_types::Timestamp>| {
            value
                .map(|t| crate::proto::from_timestamp(t).ok_or_else(|| ApiError::invalid(field, "is not a valid time")))
                .transpose()
        };
        let filter = DecisionFilter {
            start: time("start_time", request.start_time.as_ref())?,
            end: time("end_time", request.end_time.as_ref())?,
            changes_only: request.changes_only,
        };
        let mut decisions =
            store::list_decisions(&self.pool, &tenant, &filter, size, cursor.as_ref()).await.map_err(ApiError::from)?;
        let next_page_token = self
            .page_tokens
            .next_page(&query, &mut decisions, size, |d| Cursor { created_at: d.decision.at, id: d.id.clone() });
        Ok(Response::new(pb::ListScalingDecisionsResponse {
            decisions: decisions.iter().map(|d| decision_to_pb(&d.id, &d.decision)).collect(),
            next_page_token,
        }))
    }

    async fn simulate_scaling(
        &self,
        request: Request<pb::SimulateScalingRequest>,
    ) -> Result<Response<pb::SimulateScalingResponse>, Status> {
        let tenant = context::of(&request)?.tenant()?.id.clone();
        let request = request.into_inner();
        let policy = match &request.policy {
            Some(given) => policy::from_proto(given)?,
            None => store::load_policy(&self.pool, &tenant).await.map_err(ApiError::from)?.0,
        };
        let initial = match request.initial_replicas {
            0 => policy.min_replicas,
            n => n,
        };
        let decisions = simulate(&policy, initial, &request.samples)?;
        Ok(Response::new(pb::SimulateScalingResponse {
            decisions: decisions.iter().map(|d| decision_to_pb("", d)).collect(),
        }))
    }
}
