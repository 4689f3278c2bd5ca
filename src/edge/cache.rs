//! The isolate's caches (see [`crate::ttl_cache`]): they keep hot reads off D1, so a verified
//! key, a channel's visibility and a membership are looked up once per TTL per isolate instead
//! of once per request. A change made through the Worker's API clears the entry in the isolate
//! that made it; other isolates, and changes made straight in D1 by the admin command, are seen
//! within the TTL (`AUTH_CACHE_SECONDS`, read into [`Config::auth_cache_ms`]).

use std::{cell::RefCell, future::Future, thread::LocalKey};

use worker::Date;

use super::error::ApiResult;
use crate::config::Config;
use crate::ttl_cache::TtlCache;

/// One isolate-wide cache.
pub type IsolateCache<V> = RefCell<TtlCache<V>>;

/// The answer cached under `key`, or else `load`'s, which is then cached.
pub async fn cached<V: Clone + 'static>(
    cache: &'static LocalKey<IsolateCache<V>>,
    key: String,
    config: &Config,
    load: impl Future<Output = ApiResult<Option<V>>>,
) -> ApiResult<Option<V>> {
    let now = Date::now().as_millis();
    if let Some(hit) = cache.with(|cache| cache.borrow().get(&key, now)) {
        return Ok(hit);
    }
    let value = load.await?;
    let now = Date::now().as_millis();
    cache.with(|cache| {
        cache
            .borrow_mut()
            .put(key, value.clone(), config.auth_cache_ms, now)
    });
    Ok(value)
}
