//! Small time-limited caches that live as long as the Worker isolate.
//!
//! They keep hot reads off D1: a verified key, a channel's visibility and a membership are
//! looked up once per [`TTL_MS`] per isolate instead of once per request. Changes made in D1
//! (revoking a key, removing a member, making a channel private) therefore take effect within
//! that bound.

use std::{cell::RefCell, collections::HashMap};

use worker::Date;

/// How long a looked-up fact is trusted.
pub const TTL_MS: u64 = 30_000;
/// How long an absence (unknown channel, unknown key) is trusted.
pub const MISS_TTL_MS: u64 = 5_000;
const MAX_ENTRIES: usize = 10_000;

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

    pub fn put(&self, key: String, value: Option<V>) {
        let ttl = if value.is_some() { TTL_MS } else { MISS_TTL_MS };
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
}
