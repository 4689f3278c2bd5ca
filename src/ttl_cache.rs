//! A small time-limited cache for answers that may be absences: the store behind the Worker
//! isolate's caches of keys, channels and roles (`edge::cache`). Plain Rust, with the time
//! passed in, so its bounds are tested natively.
//!
//! What was found and what was not are kept apart, each within its own bound: a caller who
//! sends many unknown keys fills only the absences, and never pushes out the keys, channels and
//! roles that answer real requests.

use std::collections::HashMap;

/// Absences (unknown channel, unknown key) are trusted for at most this long.
pub const MAX_MISS_TTL_MS: u64 = 5_000;
/// The most answers of each kind (found, absent) a cache holds.
pub const MAX_ENTRIES: usize = 10_000;

pub struct TtlCache<V> {
    /// Values found, with when they expire (ms).
    found: HashMap<String, (V, u64)>,
    /// Keys found to have no value, with when that expires (ms).
    absent: HashMap<String, u64>,
}

impl<V: Clone> Default for TtlCache<V> {
    fn default() -> Self {
        Self {
            found: HashMap::new(),
            absent: HashMap::new(),
        }
    }
}

impl<V: Clone> TtlCache<V> {
    /// The cached answer at `now`, if fresh: `Some(None)` is a cached absence.
    pub fn get(&self, key: &str, now: u64) -> Option<Option<V>> {
        if let Some((value, expires)) = self.found.get(key) {
            return (*expires > now).then(|| Some(value.clone()));
        }
        let expires = *self.absent.get(key)?;
        (expires > now).then_some(None)
    }

    /// Caches `value` under `key` for `ttl_ms` (an absence for at most [`MAX_MISS_TTL_MS`]).
    pub fn put(&mut self, key: String, value: Option<V>, ttl_ms: u64, now: u64) {
        match value {
            Some(value) => {
                if self.found.len() >= MAX_ENTRIES {
                    self.found.retain(|_, (_, expires)| *expires > now);
                }
                if self.found.len() >= MAX_ENTRIES {
                    // Every entry is fresh: the one closest to expiring makes room.
                    let soonest = self
                        .found
                        .iter()
                        .min_by_key(|(_, (_, expires))| *expires)
                        .map(|(key, _)| key.clone());
                    if let Some(soonest) = soonest {
                        self.found.remove(&soonest);
                    }
                }
                self.absent.remove(&key);
                self.found.insert(key, (value, now + ttl_ms));
            }
            None => {
                if self.absent.len() >= MAX_ENTRIES {
                    self.absent.retain(|_, expires| *expires > now);
                }
                if self.absent.len() >= MAX_ENTRIES {
                    // Forgetting absences costs a lookup each, never a wrong answer.
                    self.absent.clear();
                }
                self.found.remove(&key);
                self.absent.insert(key, now + ttl_ms.min(MAX_MISS_TTL_MS));
            }
        }
    }

    pub fn forget(&mut self, key: &str) {
        self.found.remove(key);
        self.absent.remove(key);
    }

    /// Keeps only the entries for which `keep(key, value)` holds (`None`: an absence).
    pub fn forget_where(&mut self, keep: impl Fn(&str, Option<&V>) -> bool) {
        self.found.retain(|key, (value, _)| keep(key, Some(value)));
        self.absent.retain(|key, _| keep(key, None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: u64 = 30_000;

    #[test]
    fn answers_expire_and_absences_sooner() {
        let mut cache = TtlCache::default();
        cache.put("key".into(), Some(1), TTL, 0);
        cache.put("unknown".into(), None, TTL, 0);
        assert_eq!(cache.get("key", TTL - 1), Some(Some(1)));
        assert_eq!(cache.get("key", TTL), None);
        assert_eq!(cache.get("unknown", MAX_MISS_TTL_MS - 1), Some(None));
        assert_eq!(cache.get("unknown", MAX_MISS_TTL_MS), None);
        assert_eq!(cache.get("never", 0), None);
    }

    #[test]
    fn a_flood_of_unknown_keys_never_pushes_out_a_known_one() {
        let mut cache = TtlCache::default();
        cache.put("good".into(), Some("alice"), TTL, 0);
        for n in 0..3 * MAX_ENTRIES {
            cache.put(format!("unknown-{n}"), None, TTL, 1);
        }
        assert_eq!(cache.get("good", 2), Some(Some("alice")));
        assert!(cache.absent.len() <= MAX_ENTRIES);
        // The newest absences are still known.
        let last = format!("unknown-{}", 3 * MAX_ENTRIES - 1);
        assert_eq!(cache.get(&last, 2), Some(None));
    }

    #[test]
    fn a_full_cache_of_answers_makes_room_with_the_oldest() {
        let mut cache = TtlCache::default();
        for n in 0..MAX_ENTRIES {
            cache.put(format!("key-{n}"), Some(n), TTL, n as u64);
        }
        cache.put("new".into(), Some(0), TTL, MAX_ENTRIES as u64);
        assert_eq!(cache.found.len(), MAX_ENTRIES);
        assert_eq!(cache.get("key-0", MAX_ENTRIES as u64), None);
        assert_eq!(cache.get("key-1", MAX_ENTRIES as u64), Some(Some(1)));
        assert_eq!(cache.get("new", MAX_ENTRIES as u64), Some(Some(0)));
    }

    #[test]
    fn an_answer_replaces_an_absence_and_forgetting_drops_both() {
        let mut cache = TtlCache::default();
        cache.put("k".into(), None, TTL, 0);
        cache.put("k".into(), Some(5), TTL, 1);
        assert_eq!(cache.get("k", 2), Some(Some(5)));
        cache.put("gone".into(), None, TTL, 0);
        cache.forget_where(|key, value| key != "gone" && value != Some(&6));
        assert_eq!(cache.get("gone", 1), None);
        cache.forget("k");
        assert_eq!(cache.get("k", 2), None);
    }
}
