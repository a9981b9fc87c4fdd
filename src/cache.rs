//! The one cache type every node-local copy of tenant, identity, key or plan
//! data uses (DESIGN §10): bounded (moka: per-entry eviction by TinyLFU,
//! never a clear-all at capacity), with a time to live as a safety net, and
//! invalidated across nodes by PostgreSQL NOTIFY through [`crate::db::notify`].
//!
//! Two rules make it safe to cache what other nodes change:
//!
//! - **Only while listening.** Until the change listener is connected, and
//!   from the moment it is lost, the cache answers nothing and stores
//!   nothing: a notification could be missed. On (re)connection it starts
//!   empty.
//! - **A load that races an eviction is not stored.** A loader reads the
//!   cache's generation before it reads the database; every eviction bumps
//!   the generation under an exclusive lock, and a load is stored only under
//!   the shared side of that lock if the generation is unchanged. So a row
//!   read before a change committed can never outlive that change's
//!   notification.

use std::{
    borrow::Borrow,
    hash::Hash,
    sync::{
        RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use moka::{Expiry, sync::Cache};

/// Entries each per-node cache of tenant-keyed state holds by default
/// (`--cache-entries`): the tenant directory, plans, users, API keys,
/// verified tokens, the quota map and the limiter's last decisions. At
/// 7-9 KiB per tenant across them, a node's tenant state stays within about
/// 20 MiB however many tenants it serves: measured 41 MiB of RSS after
/// calling 1,000 tenants and 67 MiB after 100,000 (benches/node_memory.rs,
/// docs/scaling-out.md). A tenant past the bound is served with point
/// queries on a miss; raise it when more tenants than this are active on a
/// node within a minute and memory allows.
pub const DEFAULT_ENTRIES: u64 = 2_048;

/// How long a cached value may be trusted without a notification.
pub trait Ttl {
    /// The time to live of this value (e.g. shorter for "not found").
    fn ttl(&self) -> Duration;
}

struct ByValue;

impl<K, V: Ttl> Expiry<K, V> for ByValue {
    fn expire_after_create(&self, _key: &K, value: &V, _created_at: Instant) -> Option<Duration> {
        Some(value.ttl())
    }
}

/// A bounded, NOTIFY-invalidated cache from `K` to `V`.
pub struct NotifyCache<K, V> {
    /// Names the cache in logs and metrics.
    name: &'static str,
    entries: Cache<K, V>,
    /// Whether the change listener is connected (caching is on).
    listening: AtomicBool,
    /// Bumped by every eviction (see the module docs).
    generation: AtomicU64,
    /// Shared by stores, exclusive for evictions.
    evicting: RwLock<()>,
}

/// What a loader must hand back to [`NotifyCache::store`]: the generation
/// seen before the load began.
#[derive(Debug, Clone, Copy)]
pub struct LoadTicket(u64);

impl<K, V> NotifyCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Ttl + Clone + Send + Sync + 'static,
{
    /// A cache holding at most `capacity` entries.
    pub fn new(name: &'static str, capacity: u64) -> Self {
        NotifyCache {
            name,
            entries: Cache::builder()
                .name(name)
                .max_capacity(capacity)
                .expire_after(ByValue)
                .support_invalidation_closures()
                .build(),
            listening: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            evicting: RwLock::new(()),
        }
    }

    /// The cache's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether caching is on (the change listener is connected).
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// The cached value, when caching is on and one is fresh.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if !self.is_listening() {
            return None;
        }
        self.entries.get(key)
    }

    /// Call before loading from the database; pass the ticket to [`Self::store`].
    pub fn ticket(&self) -> LoadTicket {
        LoadTicket(self.generation.load(Ordering::Acquire))
    }

    /// Stores a loaded value unless caching is off or an eviction happened
    /// since `ticket` was taken (the load may predate a change).
    pub fn store(&self, ticket: LoadTicket, key: K, value: V) {
        if !self.is_listening() {
            return;
        }
        let _shared = self.evicting.read().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) == ticket.0 {
            self.entries.insert(key, value);
        }
    }

    /// The cached value, or `load`'s, stored for the next caller. A hit
    /// only borrows `key`; a miss copies it to store the load.
    pub async fn get_or_load<E, F>(&self, key: &K, load: F) -> Result<V, E>
    where
        K: Clone,
        F: Future<Output = Result<V, E>>,
    {
        if let Some(hit) = self.get(key) {
            return Ok(hit);
        }
        let ticket = self.ticket();
        let value = load.await?;
        self.store(ticket, key.clone(), value.clone());
        Ok(value)
    }

    /// Evicts one key on this node.
    pub fn evict<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let _exclusive = self.begin_eviction();
        self.entries.invalidate(key);
    }

    /// Evicts every entry `predicate` selects (a tenant's users, a plan's tenants).
    pub fn evict_where(&self, predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static) {
        let _exclusive = self.begin_eviction();
        if self.entries.invalidate_entries_if(predicate).is_err() {
            // Only possible without invalidation closures, which `new` enables.
            self.entries.invalidate_all();
        }
    }

    fn begin_eviction(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        let guard = self.evicting.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        guard
    }

    /// The listener connected: start empty, then cache.
    pub fn connected(&self) {
        self.forget_all();
        self.listening.store(true, Ordering::Release);
    }

    /// The listener is lost: stop trusting and storing until it reconnects.
    pub fn disconnected(&self) {
        self.listening.store(false, Ordering::Release);
        self.forget_all();
    }

    /// Turns caching on without a listener: benchmarks and single-node tools only.
    pub fn assume_listening(&self) {
        self.listening.store(true, Ordering::Release);
    }

    fn forget_all(&self) {
        let _exclusive = self.begin_eviction();
        self.entries.invalidate_all();
    }

    /// Entries held now (approximate; for metrics and tests).
    pub fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Value(u32);

    impl Ttl for Value {
        fn ttl(&self) -> Duration {
            Duration::from_secs(60)
        }
    }

    fn cache(capacity: u64) -> NotifyCache<String, Value> {
        let cache = NotifyCache::new("test", capacity);
        cache.connected();
        cache
    }

    #[test]
    fn nothing_is_cached_while_not_listening() {
        let cache = NotifyCache::<String, Value>::new("test", 10);
        cache.store(cache.ticket(), "a".into(), Value(1));
        assert_eq!(cache.get("a"), None);
        cache.connected();
        cache.store(cache.ticket(), "a".into(), Value(1));
        assert_eq!(cache.get("a"), Some(Value(1)));
        cache.disconnected();
        assert_eq!(cache.get("a"), None);
    }

    #[test]
    fn a_load_that_raced_an_eviction_is_not_stored() {
        let cache = cache(10);
        let ticket = cache.ticket();
        cache.evict("a");
        cache.store(ticket, "a".into(), Value(1));
        assert_eq!(cache.get("a"), None);
        cache.store(cache.ticket(), "a".into(), Value(2));
        assert_eq!(cache.get("a"), Some(Value(2)));
    }

    #[test]
    fn at_capacity_entries_are_evicted_one_by_one_not_all_at_once() {
        let cache = cache(100);
        for i in 0..1_000 {
            cache.store(cache.ticket(), format!("k{i}"), Value(i));
        }
        let held = cache.len();
        assert!(held > 0 && held <= 100, "held {held}");
    }

    #[test]
    fn evict_where_removes_only_what_it_selects() {
        let cache = cache(10);
        cache.store(cache.ticket(), "a1".into(), Value(1));
        cache.store(cache.ticket(), "b2".into(), Value(2));
        cache.evict_where(|key, _| key.starts_with('a'));
        assert_eq!(cache.get("a1"), None);
        assert_eq!(cache.get("b2"), Some(Value(2)));
    }
}
