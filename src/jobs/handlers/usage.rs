//! Usage housekeeping and exports over the metering table
//! `platform.usage_counters (tenant_id, metric, method, bucket_start, value)`
//! (one row per tenant, metric, method and minute). Both handlers check that
//! the table exists, so a deployment without metering simply skips them.
//!
//! - `tenantry.usage.rollup` (platform-level, periodic): folds minute rows
//!   older than the rollup age into one row per hour (sums are preserved
//!   exactly; only minute resolution of old data is given up), then deletes
//!   rows older than the retention. Batched, `SKIP LOCKED`, safe to overlap.
//! - `tenantry.usage.export` (tenant-enqueueable): the tenant's usage as CSV
//!   (`bucket_start,metric,method,value`), kept as the job's result
//!   `{"csv": …, "rows": n, "truncated": bool}`; the tenant is the job's,
//!   never one named in the payload.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{Handler, HandlerError, HandlerFuture, JobContext};

/// Rows folded or deleted per statement.
const BATCH: i64 = 50_000;
/// Minute rows younger than this are never folded: usage can be recorded up
/// to 35 days back, and minute resolution is kept for recent data.
pub const ROLLUP_AGE: Duration = Duration::from_secs(40 * 86_400);
/// Counters older than this are deleted (a billing year and a month).
pub const RETENTION: Duration = Duration::from_secs(400 * 86_400);
/// CSV bytes kept in a result (results are at most 256 KiB).
const MAX_CSV: usize = 250 * 1024;

async fn metering_installed(pool: &PgPool) -> Result<bool, HandlerError> {
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('platform.usage_counters')::text")
        .fetch_one(pool)
        .await
        .map_err(|e| HandlerError::retry(format!("database unavailable: {e}")))?;
    Ok(table.is_some())
}

/// Folds one batch of old minute rows into hour rows; returns rows folded.
pub async fn fold_batch(pool: &PgPool, older_than: Duration) -> Result<u64, sqlx::Error> {
    let folded: Option<i64> = sqlx::query_scalar(
        "WITH picked AS (
            SELECT tenant_id, metric, method, bucket_start FROM platform.usage_counters
             WHERE bucket_start < date_trunc('hour', now() - $1 * interval '1 millisecond')
               AND bucket_start <> date_trunc('hour', bucket_start)
             LIMIT $2 FOR UPDATE SKIP LOCKED),
         gone AS (
            DELETE FROM platform.usage_counters u USING picked p
             WHERE (u.tenant_id, u.metric, u.method, u.bucket_start) = (p.tenant_id, p.metric, p.method, p.bucket_start)
            RETURNING u.tenant_id, u.metric, u.method, date_trunc('hour', u.bucket_start) AS hour, u.value),
         folded AS (
            INSERT INTO platform.usage_counters AS c (tenant_id, metric, method, bucket_start, value)
            SELECT tenant_id, metric, method, hour, sum(value) FROM gone GROUP BY 1, 2, 3, 4
            ON CONFLICT (tenant_id, metric, method, bucket_start) DO UPDATE SET value = c.value + EXCLUDED.value
            RETURNING 1)
         SELECT (SELECT count(*) FROM gone) + 0 * (SELECT count(*) FROM folded)",
    )
    .bind(older_than.as_millis() as i64)
    .bind(BATCH)
    .fetch_one(pool)
    .await?;
    Ok(folded.unwrap_or(0).max(0) as u64)
}

/// Deletes one batch of counters older than `retention`; returns rows deleted.
pub async fn expire_batch(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM platform.usage_counters u USING (
            SELECT tenant_id, metric, method, bucket_start FROM platform.usage_counters
             WHERE bucket_start < now() - $1 * interval '1 millisecond'
             LIMIT $2 FOR UPDATE SKIP LOCKED) p
          WHERE (u.tenant_id, u.metric, u.method, u.bucket_start) = (p.tenant_id, p.metric, p.method, p.bucket_start)",
    )
    .bind(retention.as_millis() as i64)
    .bind(BATCH)
    .execute(pool)
    .await?
    .rows_affected())
}

/// See the module docs.
pub struct UsageRollup;

impl Handler for UsageRollup {
    fn run(&self, job: JobContext) -> HandlerFuture {
        Box::pin(async move {
            if !metering_installed(&job.pool).await? {
                return Ok(serde_json::json!({ "skipped": "usage metering is not installed" }));
            }
            let (mut folded, mut expired) = (0u64, 0u64);
            loop {
                if job.cancel.is_cancelled() {
                    return Err(HandlerError::retry("stopped before finishing; the next run continues"));
                }
                let n = fold_batch(&job.pool, ROLLUP_AGE).await.map_err(|e| HandlerError::retry(e.to_string()))?;
                folded += n;
                if n < BATCH as u64 {
                    break;
                }
            }
            loop {
                let n = expire_batch(&job.pool, RETENTION).await.map_err(|e| HandlerError::retry(e.to_string()))?;
                expired += n;
                if n < BATCH as u64 || job.cancel.is_cancelled() {
                    break;
                }
            }
            Ok(serde_json::json!({ "folded_rows": folded, "expired_rows": expired }))
        })
    }
}

/// An export request, from the job's payload.
struct ExportRequest {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    granularity: &'static str,
    metrics: Vec<String>,
}

fn parse_export(payload: &serde_json::Value) -> Result<ExportRequest, HandlerError> {
    let time = |name: &str| -> Result<Option<DateTime<Utc>>, HandlerError> {
        payload
            .get(name)
            .map(|v| {
                v.as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.with_timezone(&Utc))
                    .ok_or_else(|| HandlerError::discard(format!("{name} must be an RFC 3339 time")))
            })
            .transpose()
    };
    let end = time("end_time")?.unwrap_or_else(Utc::now);
    let start = time("start_time")?.ok_or_else(|| HandlerError::discard("start_time is required"))?;
    if start >= end {
        return Err(HandlerError::discard("start_time must be before end_time"));
    }
    let granularity = match payload.get("granularity").and_then(|g| g.as_str()).unwrap_or("day") {
        "minute" => "minute",
        "hour" => "hour",
        "day" => "day",
        "month" => "month",
        _ => return Err(HandlerError::discard("granularity must be minute, hour, day or month")),
    };
    let metrics = match payload.get("metrics") {
        None => Vec::new(),
        Some(list) => list
            .as_array()
            .and_then(|items| items.iter().map(|m| m.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>())
            .filter(|items| items.len() <= 100)
            .ok_or_else(|| HandlerError::discard("metrics must be a list of at most 100 metric names"))?,
    };
    Ok(ExportRequest { start, end, granularity, metrics })
}

/// One CSV field, quoted when it needs to be.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_owned() }
}

/// See the module docs.
pub struct UsageExport;

impl Handler for UsageExport {
    fn run(&self, job: JobContext) -> HandlerFuture {
        Box::pin(async move {
            let tenant = job.job.tenant().ok_or_else(|| HandlerError::discard("a usage export needs a tenant"))?;
            let request = parse_export(&job.job.payload)?;
            if !metering_installed(&job.pool).await? {
                return Err(HandlerError::discard("usage metering is not installed"));
            }
            let rows: Vec<(DateTime<Utc>, String, String, f64)> = sqlx::query_as(
                "SELECT date_trunc($4, bucket_start, 'UTC') AS bucket, metric, method, sum(value)
                   FROM platform.usage_counters
                  WHERE tenant_id = $1 AND bucket_start >= $2 AND bucket_start < $3
                    AND (cardinality($5::text[]) = 0 OR metric = ANY($5::text[]))
                  GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            )
            .bind(tenant.as_str())
            .bind(request.start)
            .bind(request.end)
            .bind(request.granularity)
            .bind(&request.metrics)
            .fetch_all(&job.pool)
            .await
            .map_err(|e| HandlerError::retry(format!("reading usage failed: {e}")))?;
            let mut csv = String::from("bucket_start,metric,method,value\n");
            let (mut written, mut truncated) = (0usize, false);
            for (bucket, metric, method, value) in &rows {
                let line = format!(
                    "{},{},{},{}\n",
                    bucket.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    csv_field(metric),
                    csv_field(method),
                    value
                );
                if csv.len() + line.len() > MAX_CSV {
                    truncated = true;
                    break;
                }
                csv.push_str(&line);
                written += 1;
            }
            Ok(serde_json::json!({ "csv": csv, "rows": written, "truncated": truncated }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("api.requests"), "api.requests");
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
    }

    #[test]
    fn export_payloads_are_checked() {
        assert!(parse_export(&serde_json::json!({})).is_err());
        assert!(
            parse_export(&serde_json::json!({"start_time": "2026-11-01T00:00:00Z", "granularity": "week"})).is_err()
        );
        let ok = parse_export(&serde_json::json!({"start_time": "2026-11-01T00:00:00Z", "metrics": ["api.requests"]}));
        assert_eq!(ok.unwrap().granularity, "day");
    }
}
