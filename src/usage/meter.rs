//! The meter: what every tenant call costs (request count, handler compute
//! time, request and response bytes), per tenant, method and minute.
//!
//! Calls add to an in-memory aggregate split into shards, each behind its
//! own short lock, and the request path never touches the database. The
//! shard is picked by tenant and method *and* by the recording thread, so
//! even one busy tenant's calls on different worker threads do not queue on
//! one lock; a flush merges the shards' entries per key. A flusher writes the
//! aggregate every interval as one multi-row upsert per batch into
//! `platform.usage_counters`, and once more at shutdown after the servers
//! have drained. The aggregate is bounded: a call that would need a new
//! entry beyond the bound is dropped and counted, never queued without limit.
//! A failed write puts its rows back (within the same bound).

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, TimeZone, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    metrics::{FlushOutcome, Metrics},
    ratelimit::QuotaBook,
    tenancy::TenantId,
};

/// Metric names of the automatic usage.
pub mod metrics {
    /// Calls made.
    pub const REQUESTS: &str = "api.requests";
    /// Milliseconds spent in handlers.
    pub const COMPUTE_MS: &str = "api.compute_ms";
    /// Bytes of request bodies (gRPC frames).
    pub const REQUEST_BYTES: &str = "api.request_bytes";
    /// Bytes of response bodies (gRPC frames).
    pub const RESPONSE_BYTES: &str = "api.response_bytes";
}

const SHARDS: usize = 32;
/// Keys per upsert statement (each key is up to four rows).
const BATCH_KEYS: usize = 2_500;

/// What one call cost.
#[derive(Debug, Clone)]
pub struct CallUsage {
    /// The tenant the call acted in.
    pub tenant: TenantId,
    /// The gRPC method, `tenantry.v1.UsageService/GetQuota`.
    pub method: Arc<str>,
    /// When the call ended.
    pub at: DateTime<Utc>,
    /// Time spent in the handler.
    pub compute: Duration,
    /// Request body bytes.
    pub request_bytes: u64,
    /// Response body bytes.
    pub response_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    tenant: TenantId,
    method: Arc<str>,
    /// Unix seconds of the minute's start.
    minute: i64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    requests: u64,
    compute_ms: f64,
    request_bytes: u64,
    response_bytes: u64,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.requests += other.requests;
        self.compute_ms += other.compute_ms;
        self.request_bytes += other.request_bytes;
        self.response_bytes += other.response_bytes;
    }
}

#[derive(Default)]
struct Counters {
    recorded: AtomicU64,
    dropped: AtomicU64,
    flush_batches: AtomicU64,
    flush_rows: AtomicU64,
    flush_failures: AtomicU64,
}

/// A snapshot of the meter's counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeterStats {
    /// Calls metered.
    pub recorded: u64,
    /// Calls dropped because the buffer was full.
    pub dropped: u64,
    /// Upsert statements written.
    pub flush_batches: u64,
    /// Counter rows written.
    pub flush_rows: u64,
    /// Flushes that failed (their rows were kept for the next one).
    pub flush_failures: u64,
    /// Entries waiting to be written.
    pub buffered: u64,
}

struct Inner {
    shards: Vec<Mutex<HashMap<Key, Totals>>>,
    hasher: RandomState,
    entries: AtomicUsize,
    capacity: usize,
    counters: Counters,
    quotas: QuotaBook,
    /// Where flushes and drops are exported.
    metrics: Option<Metrics>,
    /// One flush at a time (the interval flusher and the final one).
    flushing: tokio::sync::Mutex<()>,
}

impl Inner {
    /// The shard for `key` on this thread: each thread has its own stripe,
    /// so threads recording the same key use different locks.
    fn shard_of(&self, key: &Key) -> usize {
        static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static STRIPE: usize = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed);
        }
        let stripe = STRIPE.with(|stripe| *stripe);
        (self.hasher.hash_one((&key.tenant, &key.method)) as usize).wrapping_add(stripe) % SHARDS
    }
}

/// See the module docs; cheap to clone.
#[derive(Clone)]
pub struct Meter {
    inner: Arc<Inner>,
}

impl Meter {
    /// A meter holding at most `capacity` entries between flushes, feeding
    /// the in-memory quota counts of `quotas`.
    pub fn new(capacity: usize, quotas: QuotaBook) -> Self {
        Self::build(capacity, quotas, None)
    }

    /// [`Self::new`], also exporting flushes and drops to `metrics`.
    pub fn with_metrics(capacity: usize, quotas: QuotaBook, metrics: Metrics) -> Self {
        Self::build(capacity, quotas, Some(metrics))
    }

    fn build(capacity: usize, quotas: QuotaBook, metrics: Option<Metrics>) -> Self {
        Meter {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                hasher: RandomState::new(),
                entries: AtomicUsize::new(0),
                capacity,
                counters: Counters::default(),
                quotas,
                metrics,
                flushing: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Adds one call; never waits on I/O.
    pub fn record(&self, call: CallUsage) {
        let inner = &self.inner;
        let minute = call.at.timestamp().div_euclid(60) * 60;
        let key = Key { tenant: call.tenant, method: call.method, minute };
        let totals = Totals {
            requests: 1,
            compute_ms: call.compute.as_secs_f64() * 1000.0,
            request_bytes: call.request_bytes,
            response_bytes: call.response_bytes,
        };
        let shard = &inner.shards[inner.shard_of(&key)];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = map.get_mut(&key) {
            existing.add(&totals);
        } else if inner.entries.fetch_add(1, Ordering::AcqRel) < inner.capacity {
            map.insert(key.clone(), totals);
        } else {
            inner.entries.fetch_sub(1, Ordering::AcqRel);
            inner.counters.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(metrics) = &inner.metrics {
                metrics.record_usage_dropped(1);
            }
            tracing::warn!(tenant = %key.tenant, "usage buffer full; a call was not metered");
            return;
        }
        drop(map);
        inner.counters.recorded.fetch_add(1, Ordering::Relaxed);
        inner.quotas.counted(&key.tenant, 1);
    }

    /// Empties every shard, merging one key's entries from several shards.
    fn take(&self) -> Vec<(Key, Totals)> {
        let mut taken: HashMap<Key, Totals> = HashMap::new();
        for shard in &self.inner.shards {
            let map = std::mem::take(&mut *shard.lock().unwrap_or_else(|e| e.into_inner()));
            self.inner.entries.fetch_sub(map.len(), Ordering::AcqRel);
            for (key, totals) in map {
                taken.entry(key).or_default().add(&totals);
            }
        }
        taken.into_iter().collect()
    }

    /// Puts rows of a failed write back, within the bound.
    fn restore(&self, rows: Vec<(Key, Totals)>) {
        let inner = &self.inner;
        for (key, totals) in rows {
            let mut map = inner.shards[inner.shard_of(&key)].lock().unwrap_or_else(|e| e.into_inner());
            if let Some(existing) = map.get_mut(&key) {
                existing.add(&totals);
            } else if inner.entries.fetch_add(1, Ordering::AcqRel) < inner.capacity {
                map.insert(key, totals);
            } else {
                inner.entries.fetch_sub(1, Ordering::AcqRel);
                inner.counters.dropped.fetch_add(totals.requests, Ordering::Relaxed);
                if let Some(metrics) = &inner.metrics {
                    metrics.record_usage_dropped(totals.requests);
                }
                inner.quotas.dropped(&key.tenant, totals.requests);
            }
        }
    }

    /// Writes everything buffered; returns the number of counter rows.
    pub async fn flush(&self, pool: &PgPool) -> Result<u64, sqlx::Error> {
        let _one_at_a_time = self.inner.flushing.lock().await;
        let mut rows = self.take();
        let mut written = 0;
        while !rows.is_empty() {
            let rest = rows.split_off(rows.len().min(BATCH_KEYS));
            match upsert(pool, &rows).await {
                Ok(count) => {
                    written += count;
                    self.inner.counters.flush_batches.fetch_add(1, Ordering::Relaxed);
                    self.inner.counters.flush_rows.fetch_add(count, Ordering::Relaxed);
                    if let Some(metrics) = &self.inner.metrics {
                        metrics.record_usage_flush(FlushOutcome::Ok, count);
                    }
                    for (key, totals) in &rows {
                        let at = Utc.timestamp_opt(key.minute, 0).single().unwrap_or_else(Utc::now);
                        self.inner.quotas.flushed(&key.tenant, at, totals.requests);
                    }
                }
                Err(error) => {
                    self.inner.counters.flush_failures.fetch_add(1, Ordering::Relaxed);
                    if let Some(metrics) = &self.inner.metrics {
                        metrics.record_usage_flush(FlushOutcome::Failed, 0);
                    }
                    rows.extend(rest);
                    self.restore(rows);
                    return Err(error);
                }
            }
            rows = rest;
        }
        Ok(written)
    }

    /// Flushes every `interval` until `stop`, then once more, so a graceful
    /// shutdown loses no metered call (the servers have drained by then).
    /// Every 30 s it also reconciles the quota counts with the database.
    pub async fn run_flusher(self, pool: PgPool, interval: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reconcile_every = (Duration::from_secs(30).as_millis() / interval.as_millis().max(1)).max(1) as u64;
        let mut flushes = 0u64;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Err(error) = self.flush(&pool).await {
                tracing::warn!(%error, "usage flush failed; rows kept for the next one");
                continue;
            }
            flushes += 1;
            if flushes.is_multiple_of(reconcile_every)
                && let Err(error) = self.inner.quotas.reconcile().await
            {
                tracing::warn!(%error, "quota reconciliation failed");
            }
        }
        match self.flush(&pool).await {
            Ok(rows) => tracing::info!(rows, "usage flushed"),
            Err(error) => tracing::error!(%error, "final usage flush failed; the last interval's usage is lost"),
        }
    }

    /// The meter's counters since start.
    pub fn stats(&self) -> MeterStats {
        let c = &self.inner.counters;
        MeterStats {
            recorded: c.recorded.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            flush_batches: c.flush_batches.load(Ordering::Relaxed),
            flush_rows: c.flush_rows.load(Ordering::Relaxed),
            flush_failures: c.flush_failures.load(Ordering::Relaxed),
            buffered: self.inner.entries.load(Ordering::Relaxed) as u64,
        }
    }
}

/// One `INSERT … SELECT FROM unnest(…) ON CONFLICT DO UPDATE` for a batch.
async fn upsert(pool: &PgPool, rows: &[(Key, Totals)]) -> Result<u64, sqlx::Error> {
    let mut tenants = Vec::with_capacity(rows.len() * 4);
    let mut names = Vec::with_capacity(rows.len() * 4);
    let mut methods = Vec::with_capacity(rows.len() * 4);
    let mut buckets = Vec::with_capacity(rows.len() * 4);
    let mut values = Vec::with_capacity(rows.len() * 4);
    // Sorted so concurrent writers lock rows in the same order.
    let mut sorted: Vec<&(Key, Totals)> = rows.iter().collect();
    sorted.sort_by(|a, b| {
        (a.0.tenant.as_str(), &*a.0.method, a.0.minute).cmp(&(b.0.tenant.as_str(), &*b.0.method, b.0.minute))
    });
    for (key, totals) in sorted {
        let bucket = Utc.timestamp_opt(key.minute, 0).single().unwrap_or_else(Utc::now);
        for (metric, value) in [
            (metrics::COMPUTE_MS, totals.compute_ms),
            (metrics::REQUEST_BYTES, totals.request_bytes as f64),
            (metrics::REQUESTS, totals.requests as f64),
            (metrics::RESPONSE_BYTES, totals.response_bytes as f64),
        ] {
            if value == 0.0 && metric != metrics::REQUESTS {
                continue;
            }
            tenants.push(key.tenant.as_str());
            names.push(metric);
            methods.push(&*key.method);
            buckets.push(bucket);
            values.push(value);
        }
    }
    let result = sqlx::query(
        "INSERT INTO platform.usage_counters AS c (tenant_id, metric, method, bucket_start, value)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::float8[])
         ON CONFLICT (tenant_id, metric, method, bucket_start) DO UPDATE SET value = c.value + excluded.value",
    )
    .bind(&tenants)
    .bind(&names)
    .bind(&methods)
    .bind(&buckets)
    .bind(&values)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One key recorded on several threads lands in several shards; a flush
    /// sees it once, with every call counted (one upsert row per key).
    #[tokio::test]
    async fn one_key_from_many_threads_is_taken_once_with_every_call() {
        let pool = sqlx::postgres::PgPoolOptions::new().connect_lazy("postgres://localhost/unused").unwrap();
        let meter = Meter::new(1_000, QuotaBook::new(pool));
        let tenant = TenantId::generate();
        let at = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (meter, tenant) = (meter.clone(), tenant.clone());
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        meter.record(CallUsage {
                            tenant: tenant.clone(),
                            method: Arc::from("tenantry.v1.UsageService/GetQuota"),
                            at,
                            compute: Duration::from_micros(10),
                            request_bytes: 5,
                            response_bytes: 7,
                        });
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let taken = meter.take();
        assert_eq!(taken.len(), 1, "{taken:?}");
        let (key, totals) = &taken[0];
        assert_eq!((&key.tenant, key.minute), (&tenant, 1_800_000_000 / 60 * 60));
        assert_eq!((totals.requests, totals.request_bytes, totals.response_bytes), (4_000, 20_000, 28_000));
        assert!((totals.compute_ms - 40.0).abs() < 1e-6, "{}", totals.compute_ms);
        assert_eq!(meter.stats().buffered, 0);
    }
}
