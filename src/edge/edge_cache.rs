//! The data centre's cache of channel files (the Cache API's default cache), under the keys and
//! lifetimes [`crate::edge_cache`] decides. Reads look here only after the caller's access check;
//! the channel's index drops a file's copy where it writes or deletes the file. A cache that
//! fails is a miss: the file is then read from R2, as without a cache.

use wasm_bindgen::JsCast;
use web_sys::ReadableStream;
use worker::{Cache, Date, Headers, Response, ResponseBody};

use super::log;
use crate::edge_cache::{
    key, stored_cache_control, usable, CHANNEL_CREATED_HEADER, STORED_AT_HEADER, UPLOADED_HEADER,
};
use crate::names::ChannelFile;

/// A cached copy of a file, with what answers need of it.
pub struct Copy {
    pub etag: String,
    pub uploaded_ms: u64,
    pub size: u64,
    pub body: Option<ReadableStream>,
}

/// The copy of the file at `object_key`, if the cache holds one that may answer for a channel
/// created at `channel_created`.
pub async fn lookup(object_key: &str, kind: ChannelFile, channel_created: u64) -> Option<Copy> {
    let found = Cache::default().get(key(object_key), false).await;
    let response = match found {
        Ok(Some(response)) => response,
        Ok(None) => return None,
        Err(error) => {
            log::error(&format!("edge cache lookup of {object_key}: {error}"));
            return None;
        }
    };
    let headers = response.headers();
    let number = |name: &str| -> Option<u64> { headers.get(name).ok()??.parse().ok() };
    let stored_at = number(STORED_AT_HEADER)?;
    let stored_for = number(CHANNEL_CREATED_HEADER)?;
    if !usable(
        kind,
        stored_at,
        stored_for,
        channel_created,
        Date::now().as_millis(),
    ) {
        return None;
    }
    Some(Copy {
        etag: headers.get("ETag").ok()??,
        uploaded_ms: number(UPLOADED_HEADER)?,
        size: number("Content-Length")?,
        body: match response.body() {
            ResponseBody::Stream(stream) => Some(stream.clone()),
            _ => None,
        },
    })
}

/// Splits a body in two: one for the answer, one for the cache.
pub fn tee(body: ResponseBody) -> (ResponseBody, Option<ReadableStream>) {
    match body {
        ResponseBody::Stream(stream) => {
            let branches = stream.tee();
            (
                ResponseBody::Stream(branches.get(0).unchecked_into()),
                Some(branches.get(1).unchecked_into()),
            )
        }
        other => (other, None),
    }
}

/// What a copy is stored from.
pub struct Stored {
    pub object_key: String,
    pub kind: ChannelFile,
    pub channel_created: u64,
    pub etag: String,
    pub uploaded_ms: u64,
    pub size: u64,
    pub content_type: &'static str,
}

/// Stores a copy of a file read whole from R2 (to run after the answer is sent).
pub async fn store(stored: Stored, body: ReadableStream) {
    let Some(cache_control) = stored_cache_control(stored.kind) else {
        return;
    };
    let put = async {
        let headers = Headers::new();
        headers.set("Cache-Control", &cache_control)?;
        headers.set("ETag", &stored.etag)?;
        headers.set("Content-Type", stored.content_type)?;
        headers.set("Content-Length", &stored.size.to_string())?;
        headers.set(STORED_AT_HEADER, &Date::now().as_millis().to_string())?;
        headers.set(CHANNEL_CREATED_HEADER, &stored.channel_created.to_string())?;
        headers.set(UPLOADED_HEADER, &stored.uploaded_ms.to_string())?;
        let copy = Response::builder()
            .with_status(200)
            .with_headers(headers)
            .stream(body);
        Cache::default().put(key(&stored.object_key), copy).await
    };
    if let Err(error) = put.await {
        log::error(&format!(
            "edge cache store of {}: {error}",
            stored.object_key
        ));
    }
}

/// Drops the copies under these cache keys from this data centre's cache.
pub async fn purge(keys: &[String]) {
    let cache = Cache::default();
    for cache_key in keys {
        if let Err(error) = cache.delete(cache_key.as_str(), false).await {
            log::error(&format!("edge cache purge of {cache_key}: {error}"));
        }
    }
}
