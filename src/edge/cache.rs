//! Small time-limited caches that live as long as the Worker isolate.
//!
//! They keep hot reads off D1: a verified key, a channel's visibility and a membership are
//! looked up once per TTL per isolate instead of once per request. A change made through the
//! Worker's API clears the entry in the isolate that made it; other isolates, and changes made
//! straight in D1 by the admin command, are seen within the TTL (`AUTH_CACHE_SECONDS`,
//! 30 by default).

use std::{cell::RefCell, collections::HashMap};

use worker::{Date, Env};

const DEFAULT_TTL_MS: u64 = 30_000;
/// Absences (unknown channel, unknown key) are trusted for at most this long.
const MAX_MISS_TTL_MS: u64 = 5_000;
const MAX_ENTRIES: usize = 10_000;

/// The TTL configured for this deployment.
pub fn ttl_ms(env: &Env) -> u64 {
    env.var("AUTH_CACHE_SECONDS")
        .ok()
        .and_then(|v| v.to_string().parse::<f64>().ok())
        .map(|seconds| (seconds * 1000.0) as u64)
        .unwrap_or(DEFAULT_TTL_MS)
}

pub struct TtlCache<V> {
    entries: RefCell<HashMap<String, (Option<V>, u64)>>,
}

impl<V: Clone> TtlCache<V> {
    pub fn new() -> Self {
        Self {
            entries: RefCell::new(HashMap::new()),
        }
    }

    /// The cached answer, if fresh: `Some(None)` is a cached absence.
    pub fn get(&self, key: &str) -> Option<Option<V>> {
        let now = Date::now().as_millis();
        let entries = self.entries.borrow();
        let (value, expires) = entries.get(key)?;
        (*expires > now).then(|| value.clone())
    }

    pub fn put(&self, key: String, value: Option<V>, ttl_ms: u64) {
        let ttl = if value.is_some() {
            ttl_ms
        } else {
            ttl_ms.min(MAX_MISS_TTL_MS)
        };
        let now = Date::now().as_millis();
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (value, now + ttl));
    }

    pub fn forget(&self, key: &str) {
        self.entries.borrow_mut().remove(key);
    }

    pub fn forget_where(&self, keep: impl Fn(&str, &Option<V>) -> bool) {
        self.entries
            .borrow_mut()
            .retain(|key, (value, _)| keep(key, value));
    }
}
