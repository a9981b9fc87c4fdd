//! Scaling data in `platform`: policies, each tenant's simulated deployment
//! (`scaling_state`), stored decisions, and the evaluation that ties them to
//! the pure [`super::decision::decide`].

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use sqlx::{PgConnection, PgPool};

use super::{
    decision::{self, Decision, History, LimitingRule, MetricEvaluation, Recommendation, ScaleEvent},
    metrics,
    policy::{Policy, Signal},
};
use crate::{ids, pagination::Cursor, tenancy::TenantId};

/// Why scaling data could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ScalingError {
    #[error("scaling store unavailable")]
    Store(#[from] sqlx::Error),
    #[error("tenant {0} has no plan")]
    NoTenant(String),
}

impl From<ScalingError> for crate::error::ApiError {
    fn from(error: ScalingError) -> Self {
        match error {
            ScalingError::NoTenant(id) => crate::error::ApiError::NotFound { resource: format!("tenant {id}") },
            ScalingError::Store(error) => error.into(),
        }
    }
}

/// The plan's replica bounds for `tenant`.
pub async fn plan_bounds(pool: &PgPool, tenant: &TenantId) -> Result<(u32, u32), ScalingError> {
    let row: Option<(i32, i32)> = sqlx::query_as(
        "SELECT p.min_replicas, p.max_replicas FROM platform.tenants t JOIN platform.plans p ON p.id = t.plan_id
          WHERE t.id = $1",
    )
    .bind(tenant.as_str())
    .fetch_optional(pool)
    .await?;
    let (min, max) = row.ok_or_else(|| ScalingError::NoTenant(tenant.to_string()))?;
    Ok((min.max(0) as u32, max.max(0) as u32))
}

/// The tenant's policy and when it was set (`None`: the plan's defaults).
pub async fn load_policy(pool: &PgPool, tenant: &TenantId) -> Result<(Policy, Option<DateTime<Utc>>), ScalingError> {
    let stored: Option<(serde_json::Value, DateTime<Utc>)> =
        sqlx::query_as("SELECT policy, updated_at FROM platform.scaling_policies WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(pool)
            .await?;
    if let Some((json, updated_at)) = stored {
        match serde_json::from_value(json) {
            Ok(policy) => return Ok((policy, Some(updated_at))),
            Err(error) => {
                tracing::error!(%error, tenant = %tenant, "stored scaling policy is unreadable; using defaults")
            }
        }
    }
    let (min, max) = plan_bounds(pool, tenant).await?;
    Ok((Policy::default_for_plan(min, max), None))
}

/// Stores the tenant's policy; returns its update time.
pub async fn save_policy(pool: &PgPool, tenant: &TenantId, policy: &Policy) -> Result<DateTime<Utc>, ScalingError> {
    let json = serde_json::to_value(policy).unwrap_or_default();
    Ok(sqlx::query_scalar(
        "INSERT INTO platform.scaling_policies (tenant_id, policy, updated_at) VALUES ($1, $2, now())
         ON CONFLICT (tenant_id) DO UPDATE SET policy = EXCLUDED.policy, updated_at = now()
         RETURNING updated_at",
    )
    .bind(tenant.as_str())
    .bind(json)
    .fetch_one(pool)
    .await?)
}

/// A tenant's simulated deployment.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScalingState {
    /// Replicas now.
    pub current_replicas: i32,
    /// What the last decision asked for.
    pub desired_replicas: i32,
    /// Last evaluation.
    pub last_evaluated_at: Option<DateTime<Utc>>,
    /// Last change of the count.
    pub last_scaled_at: Option<DateTime<Utc>>,
    /// Latest measurements, `[{"signal": …, "value": …}]`.
    pub metrics: serde_json::Value,
}

/// The tenant's state, if it was ever evaluated.
pub async fn state(pool: &PgPool, tenant: &TenantId) -> Result<Option<ScalingState>, ScalingError> {
    Ok(sqlx::query_as(
        "SELECT current_replicas, desired_replicas, last_evaluated_at, last_scaled_at, metrics
           FROM platform.scaling_state WHERE tenant_id = $1",
    )
    .bind(tenant.as_str())
    .fetch_optional(pool)
    .await?)
}

/// A stored decision.
#[derive(Debug, Clone)]
pub struct StoredDecision {
    /// `sdc_…`.
    pub id: String,
    /// The decision.
    pub decision: Decision,
}

#[derive(sqlx::FromRow)]
struct DecisionRow {
    id: String,
    evaluated_at: DateTime<Utc>,
    current_replicas: i32,
    desired_replicas: i32,
    raw_recommendation: i32,
    limiting_rule: String,
    metrics: serde_json::Value,
    explanation: String,
}

impl DecisionRow {
    fn into_stored(self) -> StoredDecision {
        let metrics = self
            .metrics
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|m| {
                        Some(MetricEvaluation {
                            signal: serde_json::from_value::<Signal>(m.get("signal")?.clone()).ok()?,
                            current_value: m.get("current_value")?.as_f64()?,
                            target_value: m.get("target_value")?.as_f64()?,
                            proposed: u32::try_from(m.get("proposed")?.as_u64()?).ok()?,
                            within_tolerance: m.get("within_tolerance").and_then(|v| v.as_bool()).unwrap_or(false),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        StoredDecision {
            id: self.id,
            decision: Decision {
                at: self.evaluated_at,
                current: self.current_replicas.max(0) as u32,
                desired: self.desired_replicas.max(0) as u32,
                raw: self.raw_recommendation.max(0) as u32,
                metrics,
                limiting_rule: LimitingRule::parse(&self.limiting_rule).unwrap_or(LimitingRule::None),
                explanation: self.explanation,
            },
        }
    }
}

const DECISION_COLUMNS: &str =
    "id, evaluated_at, current_replicas, desired_replicas, raw_recommendation, limiting_rule, metrics, explanation";

/// Filters of [`list_decisions`].
#[derive(Debug, Clone, Default)]
pub struct DecisionFilter {
    /// Evaluated at or after.
    pub start: Option<DateTime<Utc>>,
    /// Evaluated before.
    pub end: Option<DateTime<Utc>>,
    /// Only decisions that changed the count.
    pub changes_only: bool,
}

/// The order of [`list_decisions`], newest first.
pub const LIST_ORDER: &str = "evaluated_at desc, id desc";

/// A page of the tenant's decisions, newest first (one extra row fetched).
pub async fn list_decisions(
    pool: &PgPool,
    tenant: &TenantId,
    filter: &DecisionFilter,
    limit: i64,
    cursor: Option<&Cursor>,
) -> Result<Vec<StoredDecision>, ScalingError> {
    let rows: Vec<DecisionRow> = sqlx::query_as(&format!(
        "SELECT {DECISION_COLUMNS} FROM platform.scaling_decisions
          WHERE tenant_id = $1
            AND ($2::timestamptz IS NULL OR evaluated_at >= $2)
            AND ($3::timestamptz IS NULL OR evaluated_at < $3)
            AND (NOT $4 OR desired_replicas <> current_replicas)
            AND ($5::timestamptz IS NULL OR (evaluated_at, id) < ($5, $6::text))
          ORDER BY evaluated_at DESC, id DESC
          LIMIT $7"
    ))
    .bind(tenant.as_str())
    .bind(filter.start)
    .bind(filter.end)
    .bind(filter.changes_only)
    .bind(cursor.map(|c| c.created_at))
    .bind(cursor.map(|c| c.id.clone()))
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(DecisionRow::into_stored).collect())
}

/// The latest decision of the tenant.
pub async fn last_decision(pool: &PgPool, tenant: &TenantId) -> Result<Option<StoredDecision>, ScalingError> {
    Ok(list_decisions(pool, tenant, &DecisionFilter::default(), 0, None).await?.into_iter().next())
}

/// How long after its last metered request a tenant without a policy is
/// still evaluated: the measurement window (a minute at least) plus the
/// minute buckets' granularity.
const ACTIVITY_WINDOW_SECONDS: i64 = 120;

/// What earlier decisions left for `decide`, and the newest stored raw
/// recommendation.
///
/// Decisions are stored only when they change something (see [`evaluate`]),
/// so a stored recommendation stands until the next stored one: each row is
/// handed to `decide` as a recommendation made at the end of its span (the
/// next row's time, or now for the newest), which puts it inside every
/// stabilization window it overlapped. The newest row from before the last
/// hour (the longest window) is read too, since it may still stand.
async fn history(
    conn: &mut PgConnection,
    tenant: &TenantId,
    now: DateTime<Utc>,
) -> Result<(History, Option<u32>), ScalingError> {
    let rows: Vec<(DateTime<Utc>, i32, i32, i32)> = sqlx::query_as(
        "(SELECT evaluated_at, raw_recommendation, current_replicas, desired_replicas
            FROM platform.scaling_decisions WHERE tenant_id = $1 AND evaluated_at > $2)
         UNION ALL
         (SELECT evaluated_at, raw_recommendation, current_replicas, desired_replicas
            FROM platform.scaling_decisions WHERE tenant_id = $1 AND evaluated_at <= $2
           ORDER BY evaluated_at DESC, id DESC LIMIT 1)
         ORDER BY evaluated_at",
    )
    .bind(tenant.as_str())
    .bind(now - ChronoDuration::hours(1))
    .fetch_all(&mut *conn)
    .await?;
    let mut history = History::default();
    for (index, &(at, raw, current, desired)) in rows.iter().enumerate() {
        let until = rows.get(index + 1).map_or(now, |next| next.0 - ChronoDuration::microseconds(1));
        history.recommendations.push(Recommendation { at: until.max(at), replicas: raw.max(0) as u32 });
        if desired != current {
            history.events.push(ScaleEvent { at, change: i64::from(desired) - i64::from(current) });
        }
    }
    let last_raw = rows.last().map(|row| row.1.max(0) as u32);
    Ok((history, last_raw))
}

/// What one [`evaluate`] did.
#[derive(Debug, Clone)]
pub enum Evaluation {
    /// The tenant's last evaluation is more recent than its interval.
    NotDue,
    /// Evaluated; the decision changed neither the count nor the raw
    /// recommendation, so only the state's evaluation time and metrics
    /// were updated (the stored decision before it still stands).
    Unchanged(Decision),
    /// Evaluated and stored.
    Stored(StoredDecision),
}

impl Evaluation {
    /// What was decided, stored or not (nothing when not due).
    pub fn decision(&self) -> Option<&Decision> {
        match self {
            Evaluation::NotDue => None,
            Evaluation::Unchanged(decision) | Evaluation::Stored(StoredDecision { decision, .. }) => Some(decision),
        }
    }

    /// The stored decision, if one was stored.
    pub fn stored(self) -> Option<StoredDecision> {
        match self {
            Evaluation::Stored(stored) => Some(stored),
            _ => None,
        }
    }
}

/// Evaluates the tenant's policy now, unless its last evaluation is more
/// recent than its `evaluation_interval` (minus a little slack for timer
/// jitter), and applies the decision to the simulated deployment;
/// concurrent evaluations of one tenant serialize on its state row.
///
/// The decision is stored when it changes the replica count or its raw
/// recommendation differs from the last stored one: everything the
/// stabilization windows and scale policies read is then still there
/// (see [`history`]), and a steady tenant costs no new row per evaluation.
pub async fn evaluate(pool: &PgPool, tenant: &TenantId) -> Result<Evaluation, ScalingError> {
    let (policy, _) = load_policy(pool, tenant).await?;
    let values = metrics::measure(pool, tenant, policy.evaluation_interval).await?;
    let mut tx = crate::db::begin(pool).await?;
    sqlx::query(
        "INSERT INTO platform.scaling_state (tenant_id, current_replicas, desired_replicas)
         VALUES ($1, $2, $2) ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(policy.min_replicas as i32)
    .execute(&mut *tx)
    .await?;
    let (current, last): (i32, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT current_replicas, last_evaluated_at FROM platform.scaling_state WHERE tenant_id = $1 FOR UPDATE",
    )
    .bind(tenant.as_str())
    .fetch_one(&mut *tx)
    .await?;
    let now = Utc::now();
    let slack = chrono::Duration::from_std(policy.evaluation_interval).unwrap_or_default() * 9 / 10;
    if last.is_some_and(|last| now - last < slack) {
        return Ok(Evaluation::NotDue);
    }
    let (history, last_raw) = history(&mut tx, tenant, now).await?;
    let decision = decision::decide(&policy, now, current.max(0) as u32, &values, &history);
    let changed = decision.desired != decision.current || last_raw != Some(decision.raw);
    let mut stored = None;
    if changed {
        let id = ids::new_id("sdc");
        let metrics_json: Vec<serde_json::Value> = decision
            .metrics
            .iter()
            .map(|m| {
                serde_json::json!({
                    "signal": m.signal, "current_value": m.current_value, "target_value": m.target_value,
                    "proposed": m.proposed, "within_tolerance": m.within_tolerance,
                })
            })
            .collect();
        sqlx::query(
            "INSERT INTO platform.scaling_decisions
                (id, tenant_id, evaluated_at, current_replicas, desired_replicas, raw_recommendation, limiting_rule,
                 metrics, explanation)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&id)
        .bind(tenant.as_str())
        .bind(decision.at)
        .bind(decision.current as i32)
        .bind(decision.desired as i32)
        .bind(decision.raw as i32)
        .bind(decision.limiting_rule.as_str())
        .bind(serde_json::Value::Array(metrics_json))
        .bind(&decision.explanation)
        .execute(&mut *tx)
        .await?;
        stored = Some(id);
    }
    let measured: Vec<serde_json::Value> =
        values.iter().map(|(signal, value)| serde_json::json!({"signal": signal, "value": value})).collect();
    sqlx::query(
        "UPDATE platform.scaling_state
            SET current_replicas = $2, desired_replicas = $2, last_evaluated_at = $3,
                last_scaled_at = CASE WHEN $2 <> current_replicas THEN $3 ELSE last_scaled_at END,
                metrics = $4
          WHERE tenant_id = $1",
    )
    .bind(tenant.as_str())
    .bind(decision.desired as i32)
    .bind(decision.at)
    .bind(serde_json::Value::Array(measured))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(match stored {
        Some(id) => Evaluation::Stored(StoredDecision { id, decision }),
        None => Evaluation::Unchanged(decision),
    })
}

/// Active tenants whose evaluation is due, oldest first: only those with
/// something to decide. That is a tenant with its own policy, with metered
/// requests in the last two minutes, with due jobs waiting, or whose
/// simulated deployment is off its plan's floor (it may need to scale
/// down). An idle tenant on the plan's defaults at its minimum would be
/// told to stay where it is, so it is not evaluated at all: idle tenants
/// cost nothing but this query.
pub async fn tenants_due(pool: &PgPool, limit: i64) -> Result<Vec<TenantId>, ScalingError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT t.id FROM platform.tenants t
           JOIN platform.plans pl ON pl.id = t.plan_id
           LEFT JOIN platform.scaling_state s ON s.tenant_id = t.id
           LEFT JOIN platform.scaling_policies p ON p.tenant_id = t.id
          WHERE t.state = 'active'
            AND (s.last_evaluated_at IS NULL OR s.last_evaluated_at + COALESCE(
                    (p.policy ->> 'evaluation_interval')::bigint, 15000) * interval '1 millisecond' * 0.9 <= now())
            AND (p.tenant_id IS NOT NULL
                 OR s.current_replicas <> pl.min_replicas
                 OR EXISTS (SELECT 1 FROM platform.usage_counters u
                             WHERE u.tenant_id = t.id AND u.metric = 'api.requests'
                               AND u.bucket_start >= now() - $2 * interval '1 second')
                 OR EXISTS (SELECT 1 FROM platform.jobs j
                             WHERE j.tenant_id = t.id AND j.state IN ('available', 'scheduled', 'retryable')
                               AND j.run_at <= now()))
          ORDER BY s.last_evaluated_at NULLS FIRST
          LIMIT $1",
    )
    .bind(limit)
    .bind(ACTIVITY_WINDOW_SECONDS)
    .fetch_all(pool)
    .await?;
    Ok(ids.iter().filter_map(|id| TenantId::parse(id)).collect())
}

/// Deletes decisions older than `retention`, at most `batch` of them,
/// always keeping each tenant's newest (it still stands, see [`history`]).
/// Returns how many were deleted.
pub async fn prune_decisions(pool: &PgPool, retention: std::time::Duration, batch: i64) -> Result<u64, ScalingError> {
    let deleted = sqlx::query(
        "DELETE FROM platform.scaling_decisions WHERE id IN (
            SELECT d.id FROM platform.scaling_decisions d
             WHERE d.evaluated_at < now() - $1 * interval '1 millisecond'
               AND EXISTS (SELECT 1 FROM platform.scaling_decisions n
                            WHERE n.tenant_id = d.tenant_id AND n.evaluated_at > d.evaluated_at)
             LIMIT $2)",
    )
    .bind(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX))
    .bind(batch)
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}
