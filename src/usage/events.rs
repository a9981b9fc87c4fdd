//! Client usage events (RecordUsage): validated at the edge into
//! [`UsageEvent`]s, then stored in the tenant's `usage_events` table and
//! added to `platform.usage_counters` in one tenant transaction, committed
//! before the call returns.
//!
//! Idempotency: `event_id` is the table's primary key. An id already stored
//! with the same payload (metric, quantity, time, dimensions — compared by
//! their SHA-256) is a duplicate and adds nothing; with a different payload
//! the whole batch is refused with ALREADY_EXISTS naming the event, since a
//! reused id almost always means a client bug that would otherwise lose data.

use std::{
    collections::{BTreeMap, HashMap, hash_map::Entry},
    time::Instant,
};

use chrono::{DateTime, Duration, TimeZone, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::{
    error::ApiError,
    proto::tenantry::v1 as pb,
    tenancy::{TenantId, TenantTx},
};

/// Most events in one RecordUsage call.
pub const MAX_BATCH: usize = 1000;
/// How far back an event may be dated.
pub const MAX_AGE: Duration = Duration::days(35);
/// How far ahead an event may be dated (clock skew).
pub const MAX_AHEAD: Duration = Duration::minutes(5);

/// A validated usage event.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageEvent {
    /// The idempotency key.
    pub event_id: String,
    /// The metric, never an `api.*` one (those are the meter's).
    pub metric: String,
    /// Finite and not negative.
    pub quantity: f64,
    /// Within [now − 35 days, now + 5 minutes], at microsecond precision.
    pub event_time: DateTime<Utc>,
    /// Whether the client dated the event; when the server did, a retry is
    /// dated anew, so the time is not part of the payload it is compared by.
    pub time_given: bool,
    /// At most 16 attributes.
    pub dimensions: BTreeMap<String, String>,
}

impl UsageEvent {
    /// SHA-256 of everything but the id, so a retry matches and a reuse does not.
    pub fn payload_hash(&self) -> Vec<u8> {
        let mut hash = Sha256::new();
        hash.update(self.metric.as_bytes());
        hash.update([0]);
        hash.update(self.quantity.to_bits().to_be_bytes());
        match self.time_given {
            true => hash.update(self.event_time.timestamp_micros().to_be_bytes()),
            false => hash.update(b"server time"),
        }
        for (key, value) in &self.dimensions {
            hash.update((key.len() as u64).to_be_bytes());
            hash.update(key.as_bytes());
            hash.update((value.len() as u64).to_be_bytes());
            hash.update(value.as_bytes());
        }
        hash.finalize().to_vec()
    }
}

/// Whether `name` is a valid metric name: a letter, then up to 63 of
/// lowercase letters, digits, `_` and `.`.
pub fn is_metric_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

/// A protobuf timestamp as UTC time at microsecond precision.
pub fn timestamp(field: &str, value: &prost_types::Timestamp) -> Result<DateTime<Utc>, ApiError> {
    if !(0..1_000_000_000).contains(&value.nanos) {
        return Err(ApiError::invalid(field, "nanos must be between 0 and 999,999,999"));
    }
    let at = Utc.timestamp_opt(value.seconds, 0).single().ok_or_else(|| ApiError::invalid(field, "is out of range"))?;
    Ok(at + Duration::microseconds(i64::from(value.nanos / 1000)))
}

/// Validates a RecordUsage batch, all or nothing, naming the first bad field
/// (`events[3].event_time`).
pub fn validate(events: Vec<pb::UsageEvent>, now: DateTime<Utc>) -> Result<Vec<UsageEvent>, ApiError> {
    if events.is_empty() || events.len() > MAX_BATCH {
        return Err(ApiError::invalid("events", format!("must hold 1 to {MAX_BATCH} events")));
    }
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            let field = |name: &str| format!("events[{i}].{name}");
            if event.event_id.is_empty() || event.event_id.len() > 128 {
                return Err(ApiError::invalid(field("event_id"), "must be 1 to 128 characters"));
            }
            if !is_metric_name(&event.metric) {
                return Err(ApiError::invalid(
                    field("metric"),
                    "must be 1 to 64 characters: lowercase letters, digits, `_` and `.`, starting with a letter",
                ));
            }
            if event.metric.starts_with("api.") {
                return Err(ApiError::invalid(field("metric"), "`api.*` metrics are metered by Tenantry itself"));
            }
            if !event.quantity.is_finite() || event.quantity < 0.0 {
                return Err(ApiError::invalid(field("quantity"), "must be finite and not negative"));
            }
            let event_time = match &event.event_time {
                None => now,
                Some(ts) => timestamp(&field("event_time"), ts)?,
            };
            if event_time < now - MAX_AGE || event_time > now + MAX_AHEAD {
                return Err(ApiError::invalid(
                    field("event_time"),
                    "must be within the last 35 days and at most 5 minutes in the future",
                ));
            }
            if event.dimensions.len() > 16 {
                return Err(ApiError::invalid(field("dimensions"), "at most 16 entries"));
            }
            if let Some((key, _)) = event.dimensions.iter().find(|(k, v)| k.is_empty() || k.len() > 64 || v.len() > 256)
            {
                return Err(ApiError::invalid(
                    format!("events[{i}].dimensions[{key}]"),
                    "keys must be 1 to 64 and values at most 256 characters",
                ));
            }
            Ok(UsageEvent {
                event_id: event.event_id,
                metric: event.metric,
                quantity: event.quantity,
                event_time,
                time_given: event.event_time.is_some(),
                dimensions: event.dimensions.into_iter().collect(),
            })
        })
        .collect()
}

/// What a RecordUsage call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Events newly stored.
    pub accepted: usize,
    /// Events whose id was already stored (or repeated in the batch).
    pub duplicates: usize,
}

/// Stores `events` for `tenant` durably, idempotent by event id.
pub async fn record(
    pool: &PgPool,
    tenant: &TenantId,
    deadline: Instant,
    events: Vec<UsageEvent>,
) -> Result<Recorded, ApiError> {
    // Repeats inside the batch: the same payload is a duplicate, another is an error.
    let mut unique: HashMap<&str, (usize, Vec<u8>)> = HashMap::with_capacity(events.len());
    let mut batch: Vec<(&UsageEvent, Vec<u8>)> = Vec::with_capacity(events.len());
    let mut duplicates = 0;
    for (i, event) in events.iter().enumerate() {
        let hash = event.payload_hash();
        match unique.entry(&event.event_id) {
            Entry::Occupied(first) if first.get().1 == hash => duplicates += 1,
            Entry::Occupied(first) => {
                return Err(ApiError::invalid(
                    format!("events[{i}].event_id"),
                    format!("repeats events[{}].event_id with a different payload", first.get().0),
                ));
            }
            Entry::Vacant(slot) => {
                slot.insert((i, hash.clone()));
                batch.push((event, hash));
            }
        }
    }
    // One lock order for concurrent batches.
    batch.sort_by(|a, b| a.0.event_id.cmp(&b.0.event_id));

    let mut tx = TenantTx::begin(pool, tenant, deadline).await.map_err(ApiError::from)?;
    let ids: Vec<&str> = batch.iter().map(|(e, _)| e.event_id.as_str()).collect();
    let metrics: Vec<&str> = batch.iter().map(|(e, _)| e.metric.as_str()).collect();
    let quantities: Vec<f64> = batch.iter().map(|(e, _)| e.quantity).collect();
    let times: Vec<DateTime<Utc>> = batch.iter().map(|(e, _)| e.event_time).collect();
    let dimensions: Vec<String> =
        batch.iter().map(|(e, _)| serde_json::to_string(&e.dimensions).unwrap_or_else(|_| "{}".into())).collect();
    let hashes: Vec<&[u8]> = batch.iter().map(|(_, h)| h.as_slice()).collect();
    let inserted: Vec<(String,)> = sqlx::query_as(
        "INSERT INTO usage_events (event_id, metric, quantity, event_time, dimensions, payload_hash)
         SELECT e, m, q, t, d::jsonb, h
         FROM unnest($1::text[], $2::text[], $3::float8[], $4::timestamptz[], $5::text[], $6::bytea[])
             AS u(e, m, q, t, d, h)
         ON CONFLICT (event_id) DO NOTHING
         RETURNING event_id",
    )
    .bind(&ids)
    .bind(&metrics)
    .bind(&quantities)
    .bind(&times)
    .bind(&dimensions)
    .bind(&hashes)
    .fetch_all(&mut *tx)
    .await
    .map_err(ApiError::from)?;
    let inserted: std::collections::HashSet<String> = inserted.into_iter().map(|(id,)| id).collect();

    let seen: Vec<&str> = ids.iter().copied().filter(|id| !inserted.contains(*id)).collect();
    if !seen.is_empty() {
        let stored: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT event_id, payload_hash FROM usage_events WHERE event_id = ANY($1)")
                .bind(&seen)
                .fetch_all(&mut *tx)
                .await
                .map_err(ApiError::from)?;
        for (id, stored_hash) in stored {
            if unique.get(id.as_str()).is_some_and(|(_, hash)| *hash != stored_hash) {
                return Err(ApiError::AlreadyExists {
                    message: format!(
                        "usage event `{id}` was already recorded with a different payload; \
                         an event_id must not be reused for another event (nothing in this batch was recorded)"
                    ),
                });
            }
        }
        duplicates += seen.len();
    }

    // Counters of the newly stored events, by metric and minute.
    let mut sums: BTreeMap<(&str, i64), f64> = BTreeMap::new();
    for (event, _) in batch.iter().filter(|(e, _)| inserted.contains(&e.event_id)) {
        let minute = event.event_time.timestamp().div_euclid(60) * 60;
        *sums.entry((event.metric.as_str(), minute)).or_default() += event.quantity;
    }
    if !sums.is_empty() {
        let tenants: Vec<&str> = vec![tenant.as_str(); sums.len()];
        let names: Vec<&str> = sums.keys().map(|(m, _)| *m).collect();
        let buckets: Vec<DateTime<Utc>> =
            sums.keys().map(|(_, minute)| Utc.timestamp_opt(*minute, 0).single().unwrap_or_else(Utc::now)).collect();
        let values: Vec<f64> = sums.values().copied().collect();
        sqlx::query(
            "INSERT INTO platform.usage_counters AS c (tenant_id, metric, method, bucket_start, value)
             SELECT t, m, '', b, v FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::float8[]) AS u(t, m, b, v)
             ON CONFLICT (tenant_id, metric, method, bucket_start) DO UPDATE SET value = c.value + excluded.value",
        )
        .bind(&tenants)
        .bind(&names)
        .bind(&buckets)
        .bind(&values)
        .execute(&mut *tx)
        .await
        .map_err(ApiError::from)?;
    }
    tx.commit().await.map_err(ApiError::from)?;
    Ok(Recorded { accepted: inserted.len(), duplicates })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> pb::UsageEvent {
        pb::UsageEvent { event_id: id.into(), metric: "emails.sent".into(), quantity: 1.0, ..Default::default() }
    }

    #[test]
    fn bad_events_are_named_by_index_and_field() {
        let now = Utc::now();
        let mut old = event("b");
        old.event_time = Some(prost_types::Timestamp { seconds: (now - Duration::days(36)).timestamp(), nanos: 0 });
        let error = validate(vec![event("a"), old], now).unwrap_err();
        assert!(matches!(&error, ApiError::InvalidArgument { field, .. } if field == "events[1].event_time"));
        let mut future = event("c");
        future.event_time =
            Some(prost_types::Timestamp { seconds: (now + Duration::minutes(6)).timestamp(), nanos: 0 });
        assert!(validate(vec![future], now).is_err());
        let mut reserved = event("d");
        reserved.metric = "api.requests".into();
        assert!(validate(vec![reserved], now).is_err());
        let mut negative = event("e");
        negative.quantity = f64::NAN;
        assert!(validate(vec![negative], now).is_err());
        assert!(validate(vec![], now).is_err());
    }

    #[test]
    fn the_payload_hash_ignores_the_id_but_not_the_payload() {
        let now = Utc::now();
        let a = validate(vec![event("a")], now).unwrap().remove(0);
        let b = UsageEvent { event_id: "b".into(), ..a.clone() };
        assert_eq!(a.payload_hash(), b.payload_hash());
        let c = UsageEvent { quantity: 2.0, ..a.clone() };
        assert_ne!(a.payload_hash(), c.payload_hash());
        let retried_later = UsageEvent { event_time: a.event_time + Duration::seconds(3), ..a.clone() };
        assert_eq!(a.payload_hash(), retried_later.payload_hash(), "an undated event is dated by the server");
        let dated = UsageEvent { time_given: true, ..a.clone() };
        assert_ne!(
            dated.payload_hash(),
            UsageEvent { event_time: retried_later.event_time, ..dated.clone() }.payload_hash()
        );
    }
}
