//! GetUsage: sums per metric over UTC-aligned buckets of a minute, hour,
//! day or calendar month, read from `platform.usage_counters` (the meter's
//! `api.*` metrics and clients' recorded metrics alike; the meter's are at
//! most one flush interval behind).

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use sqlx::PgPool;

use crate::tenancy::TenantId;

/// Most buckets one series may have.
pub const MAX_BUCKETS: i64 = 10_000;

/// The size of the buckets usage is summed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Minute,
    Hour,
    Day,
    Month,
}

impl Granularity {
    fn sql_unit(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
            Granularity::Month => "month",
        }
    }

    /// `at` rounded down to the start of its bucket.
    pub fn truncate(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let date = at.date_naive();
        let naive = match self {
            Granularity::Minute => date.and_hms_opt(at.hour(), at.minute(), 0),
            Granularity::Hour => date.and_hms_opt(at.hour(), 0, 0),
            Granularity::Day => date.and_hms_opt(0, 0, 0),
            Granularity::Month => date.with_day(1).and_then(|d| d.and_hms_opt(0, 0, 0)),
        };
        naive.map_or(at, |n| Utc.from_utc_datetime(&n))
    }

    /// How many buckets `[start, end)` spans.
    pub fn buckets(self, start: DateTime<Utc>, end: DateTime<Utc>) -> i64 {
        let span = end - start;
        match self {
            Granularity::Minute => span.num_minutes() + 1,
            Granularity::Hour => span.num_hours() + 1,
            Granularity::Day => span.num_days() + 1,
            Granularity::Month => {
                (i64::from(end.year()) - i64::from(start.year())) * 12 + i64::from(end.month())
                    - i64::from(start.month())
                    + 1
            }
        }
    }
}

/// One metric's buckets, in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub metric: String,
    pub buckets: Vec<(DateTime<Utc>, f64)>,
}

/// Sums of `metrics` (every metric when empty) for `tenant` over
/// `[start, end)`, `start` already truncated to the granularity.
pub async fn usage(
    pool: &PgPool,
    tenant: &TenantId,
    metrics: &[String],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    granularity: Granularity,
) -> Result<Vec<Series>, sqlx::Error> {
    let rows: Vec<(String, DateTime<Utc>, f64)> = sqlx::query_as(
        "SELECT metric, date_trunc($2, bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS bucket, sum(value)
         FROM platform.usage_counters
         WHERE tenant_id = $1 AND bucket_start >= $3 AND bucket_start < $4
           AND (cardinality($5::text[]) = 0 OR metric = ANY($5))
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(tenant.as_str())
    .bind(granularity.sql_unit())
    .bind(start)
    .bind(end)
    .bind(metrics)
    .fetch_all(pool)
    .await?;
    let mut series: Vec<Series> = Vec::new();
    for (metric, bucket, value) in rows {
        match series.last_mut() {
            Some(last) if last.metric == metric => last.buckets.push((bucket, value)),
            _ => series.push(Series { metric, buckets: vec![(bucket, value)] }),
        }
    }
    Ok(series)
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    #[test]
    fn buckets_are_aligned_and_counted() {
        let at = Utc.with_ymd_and_hms(2026, 11, 27, 13, 45, 30).unwrap();
        assert_eq!(Granularity::Hour.truncate(at), Utc.with_ymd_and_hms(2026, 11, 27, 13, 0, 0).unwrap());
        assert_eq!(Granularity::Month.truncate(at), Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap());
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(Granularity::Month.buckets(start, at), 11);
        assert_eq!(Granularity::Day.buckets(start, start + Duration::days(3)), 4);
    }
}
