//! A small map whose entries expire: the kubelet API's memory of token and access reviews, so a
//! caller's stream of requests costs the virtual API server one review per interval, as a
//! kubelet's webhook caches do. Bounded: when full, expired entries go first, then everything.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept at most before the cache is cleared.
const CAPACITY: usize = 4096;

#[derive(Debug)]
pub struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash, V: Clone> Default for TtlCache<K, V> {
    fn default() -> Self {
        TtlCache {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    /// The value of `key`, if it has one that has not expired at `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(value, _)| value.clone())
    }

    /// Keeps `value` for `key` until `now + ttl`.
    pub fn insert(&self, key: K, value: V, ttl: Duration, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, (value, now + ttl));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_their_ttl() {
        let cache = TtlCache::default();
        let now = Instant::now();
        cache.insert("a", 1, Duration::from_secs(30), now);
        cache.insert("b", 2, Duration::from_secs(300), now);
        assert_eq!(cache.get(&"a", now + Duration::from_secs(29)), Some(1));
        assert_eq!(cache.get(&"a", now + Duration::from_secs(30)), None);
        assert_eq!(cache.get(&"b", now + Duration::from_secs(299)), Some(2));
        assert_eq!(cache.get(&"c", now), None);
    }

    #[test]
    fn a_full_cache_drops_expired_entries_then_everything() {
        let cache = TtlCache::default();
        let now = Instant::now();
        for key in 0..CAPACITY {
            cache.insert(key, key, Duration::from_secs(if key == 0 { 300 } else { 1 }), now);
        }
        let later = now + Duration::from_secs(2);
        cache.insert(CAPACITY, CAPACITY, Duration::from_secs(300), later);
        assert_eq!(cache.get(&0, later), Some(0), "a live entry survives");
        assert_eq!(cache.entries.lock().unwrap().len(), 2);
        for key in 0..CAPACITY {
            cache.insert(key + 10_000, key, Duration::from_secs(300), later);
        }
        assert!(cache.entries.lock().unwrap().len() <= CAPACITY);
    }
}
