//! Small time-limited caches that live as long as the Worker isolate.
//!
//! They keep hot reads off D1: a verified key, a channel's visibility and a membership are
//! looked up once per TTL per isolate instead of once per request. A change made through the
//! Worker's API clears the entry in the isolate that made it; other isolates, and changes made
//! straight in D1 by the admin command, are seen within the TTL (`AUTH_CACHE_SECONDS`, read into
//! [`Config::auth_cache_ms`]).

use std::{cell::RefCell, collections::HashMap, future::Future, thread::LocalKey};

use worker::Date;

use super::error::ApiResult;
use crate::config::Config;

/// Absences (unknown channel, unknown key) are trusted for at most this long.
const MAX_MISS_TTL_MS: u64 = 5_000;
const MAX_ENTRIES: usize = 10_000;

/// The answer cached under `key`, or else `load`'s, which is then cached.
pub async fn cached<V: Clone + 'static>(
    cache: &'static LocalKey<TtlCache<V>>,
    key: String,
    config: &Config,
    load: impl Future<Output = ApiResult<Option<V>>>,
) -> ApiResult<Option<V>> {
    if let Some(hit) = cache.with(|cache| cache.get(&key)) {
        return Ok(hit);
    }
    let value = load.await?;
    cache.with(|cache| cache.put(key, value.clone(), config.auth_cache_ms));
    Ok(value)
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
    fn get(&self, key: &str) -> Option<Option<V>> {
        let now = Date::now().as_millis();
        let entries = self.entries.borrow();
        let (value, expires) = entries.get(key)?;
        (*expires > now).then(|| value.clone())
    }

    fn put(&self, key: String, value: Option<V>, ttl_ms: u64) {
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
