//! A mirror channel's repodata.json and package files. repodata.json: fetched from the upstream, filtered by the rules
//! ([`crate::mirror`]), and stored in R2 at the channel file's own key, so that the serving
//! code answers it as any channel's. The copy carries the upstream's ETag and its fetch time;
//! it is revalidated with `If-None-Match` once its time is up, and stands in while the
//! upstream fails.
//!
//! Revalidation runs in the Worker, not the channel's Durable Object: a mirror's object holds
//! no index to keep consistent with the copy, and concurrent revalidations write the same
//! filtered bytes, so coalescing them would only save upstream requests (at most one per
//! isolate per `MIRROR_REVALIDATE_SECONDS`).

use std::collections::HashMap;

use futures_util::StreamExt;
use worker::HttpMetadata;

use super::channel_index::{FileRequest, MirrorFetchRequest, MirrorFetched};
use super::context::RequestContext;
use super::error::{ApiError, ApiResult};
use super::mirror_counter;
use super::storage::file_key;
use super::upstream::{within_timeout, UpstreamAccess};
use crate::mirror::{
    find_record, needs_revalidation, MirrorRules, MirrorRulesJson, UpstreamFailure,
};
use crate::mirror_state::{kept_file, KeptFile, KeptPage, KeptQuery, SubdirFreshness};

const ETAG: &str = "upstream_etag";
const FETCHED: &str = "fetched_ms";

/// Makes sure the mirror's copy of `<subdir>/repodata.json` is in R2 and fresh enough. Answers
/// the copy's age in seconds when it stands in for an upstream that failed, `None` when it is
/// fresh.
pub async fn refresh_repodata(
    ctx: &RequestContext,
    channel: &str,
    subdir: &str,
    rules: &MirrorRulesJson,
) -> ApiResult<Option<u64>> {
    // Stored rules were checked when the channel was created.
    let rules = MirrorRules::from_parts(rules, true).map_err(|e| {
        worker::console_error!("channel {channel}: mirror rules: {e}");
        ApiError::internal()
    })?;
    let config = ctx.config();
    let bucket = ctx.bucket()?;
    let key = file_key(channel, subdir, "repodata.json");
    let now = worker::Date::now().as_millis();
    let cached = bucket.head(&key).await?.map(|object| {
        let meta = object.custom_metadata().unwrap_or_default();
        let fetched = meta.get(FETCHED).and_then(|v| v.parse::<u64>().ok());
        (meta.get(ETAG).cloned(), fetched.unwrap_or(0))
    });
    if let Some((_, fetched)) = &cached {
        if !needs_revalidation(*fetched, now, config.mirror_revalidate_ms) {
            return Ok(None);
        }
    }
    let url = rules.upstream_url(subdir, "repodata.json");
    let etag = cached.as_ref().and_then(|(etag, _)| etag.clone());
    let access = UpstreamAccess::new(&rules.to_json(), config.mirror_allow_http, |name| {
        ctx.secret(name)
    });
    let fetched = async {
        let access = access?;
        mirror_counter::upstream_fetch(channel);
        within_timeout(fetch(
            &access,
            &url,
            etag.as_deref(),
            config.mirror_max_repodata_bytes,
        ))
        .await
    };
    let metadata = |etag: Option<String>| {
        let mut meta = HashMap::from([(FETCHED.to_owned(), now.to_string())]);
        if let Some(etag) = etag {
            meta.insert(ETAG.to_owned(), etag);
        }
        meta
    };
    let failure = match fetched.await {
        Ok(Upstream::NotModified) => {
            // R2 has no metadata-only update: the same bytes are stored again with the new time.
            if let Some(object) = bucket.get(&key).execute().await? {
                let bytes = object
                    .body()
                    .ok_or_else(ApiError::internal)?
                    .bytes()
                    .await?;
                put(ctx, &key, bytes, metadata(etag)).await?;
            }
            return Ok(None);
        }
        Ok(Upstream::Body { bytes, etag }) => match rules.filter_repodata(&bytes, now) {
            Ok(filtered) => {
                put(ctx, &key, filtered.bytes, metadata(etag)).await?;
                // This data centre's copy would answer the old document for its lifetime.
                super::edge_cache::purge(&[crate::edge_cache::key(&key)]).await;
                return Ok(None);
            }
            Err(e) => UpstreamFailure::Failed(e.0),
        },
        Err(failure) => failure,
    };
    worker::console_warn!("mirror {channel}: {url}: {failure:?}");
    match cached {
        Some((_, fetched)) => Ok(Some(now.saturating_sub(fetched) / 1000)),
        None => Err(failure.error(&url)),
    }
}

/// When the mirror last had each subdir's repodata.json from its upstream: every subdir it
/// holds a copy of, with the fetch time stored with the copy. The time moves only when the
/// upstream answers (200 or 304), so a copy standing in for a failing upstream grows old.
pub async fn freshness(ctx: &RequestContext, channel: &str) -> ApiResult<Vec<SubdirFreshness>> {
    let bucket = ctx.bucket()?;
    let prefix = format!("{channel}/");
    let listed = bucket
        .list()
        .prefix(prefix.as_str())
        .delimiter("/")
        .execute()
        .await?;
    let subdirs: Vec<String> = listed
        .delimited_prefixes()
        .iter()
        .filter_map(|p| p.strip_prefix(&prefix)?.strip_suffix('/'))
        .map(str::to_owned)
        .collect();
    let copies = subdirs
        .iter()
        .map(|subdir| bucket.head(file_key(channel, subdir, "repodata.json")));
    let copies = futures_util::future::join_all(copies).await;
    let now = worker::Date::now().as_millis();
    let mut fresh = Vec::new();
    for (subdir, copy) in subdirs.into_iter().zip(copies) {
        let Some(copy) = copy? else { continue };
        let meta = copy.custom_metadata().unwrap_or_default();
        if let Some(fetched) = meta.get(FETCHED).and_then(|v| v.parse::<u64>().ok()) {
            fresh.push(SubdirFreshness::new(subdir, fetched, now));
        }
    }
    Ok(fresh)
}

/// A page of the package files the mirror keeps in R2, in key order (subdir, then filename);
/// its index copies are no kept files. Lists until the page is full or the files end.
pub async fn kept_files(
    ctx: &RequestContext,
    channel: &str,
    query: &KeptQuery,
) -> ApiResult<KeptPage> {
    let bucket = ctx.bucket()?;
    let prefix = format!("{channel}/");
    let mut after = query.after.as_ref().map(|after| format!("{prefix}{after}"));
    let mut kept = Vec::new();
    loop {
        let wanted = query.limit - kept.len() as u32;
        let mut request = bucket.list().prefix(prefix.as_str()).limit(wanted);
        if let Some(after) = after.take() {
            request = request.start_after(after);
        }
        let listed = request.execute().await?;
        let objects = listed.objects();
        for object in &objects {
            let key = object.key();
            if let Some((subdir, filename)) = key.strip_prefix(&prefix).and_then(kept_file) {
                kept.push(KeptFile {
                    subdir: subdir.to_owned(),
                    filename: filename.to_owned(),
                    size: object.size(),
                    kept_at: object.uploaded().as_millis(),
                });
            }
        }
        if !listed.truncated() {
            return Ok(KeptPage {
                kept,
                next_cursor: None,
            });
        }
        if kept.len() as u32 == query.limit {
            let next_cursor = kept.last().map(|f| format!("{}/{}", f.subdir, f.filename));
            return Ok(KeptPage { kept, next_cursor });
        }
        let Some(last) = objects.last() else {
            return Ok(KeptPage {
                kept,
                next_cursor: None,
            });
        };
        after = Some(last.key());
    }
}

async fn put(
    ctx: &RequestContext,
    key: &str,
    bytes: Vec<u8>,
    metadata: HashMap<String, String>,
) -> ApiResult<()> {
    ctx.bucket()?
        .put(key, bytes)
        .http_metadata(HttpMetadata {
            content_type: Some("application/json".into()),
            ..Default::default()
        })
        .custom_metadata(metadata)
        .execute()
        .await?;
    Ok(())
}

enum Upstream {
    NotModified,
    Body {
        bytes: Vec<u8>,
        etag: Option<String>,
    },
}

async fn fetch(
    access: &UpstreamAccess,
    url: &str,
    etag: Option<&str>,
    max_bytes: u64,
) -> Result<Upstream, UpstreamFailure> {
    let failed = |why: String| UpstreamFailure::Failed(why);
    let headers: Vec<(&str, &str)> = etag
        .map(|etag| ("If-None-Match", etag))
        .into_iter()
        .collect();
    let mut response = access.get(url, &headers).await?;
    match response.status_code() {
        200 => {}
        304 if etag.is_some() => return Ok(Upstream::NotModified),
        404 | 410 => return Err(UpstreamFailure::Missing),
        status => return Err(failed(format!("HTTP {status}"))),
    }
    let too_large = || {
        failed(format!(
            "its repodata.json is larger than MIRROR_MAX_REPODATA_BYTES ({max_bytes} bytes); \
             a subdir this large needs the shard path, which mirrors do not have yet"
        ))
    };
    let length = response.headers().get("Content-Length").ok().flatten();
    if length
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > max_bytes)
    {
        return Err(too_large());
    }
    let etag = response.headers().get("ETag").ok().flatten();
    let mut stream = response.stream().map_err(|e| failed(e.to_string()))?;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.map_err(|e| failed(e.to_string()))?);
        if bytes.len() as u64 > max_bytes {
            return Err(too_large());
        }
    }
    Ok(Upstream::Body { bytes, etag })
}

/// A package file as the mirror's upstream has it: where, and what its record says it is.
pub struct UpstreamFile {
    /// Hex.
    pub sha256: String,
    pub size: u64,
    pub url: String,
}

/// The upstream record of a package file the mirror admits, from the mirror's filtered
/// repodata.json (revalidated first). A file the rules leave out (denied, too young, not
/// upstream) is 404 even when asked for by URL.
async fn upstream_file(
    ctx: &RequestContext,
    channel: &str,
    subdir: &str,
    filename: &str,
    rules: &MirrorRulesJson,
) -> ApiResult<UpstreamFile> {
    refresh_repodata(ctx, channel, subdir, rules).await?;
    let not_admitted = || {
        ApiError::not_found(format!(
            "mirror channel '{channel}' serves no {subdir}/{filename}"
        ))
    };
    let copy = ctx
        .bucket()?
        .get(file_key(channel, subdir, "repodata.json"))
        .execute()
        .await?
        .ok_or_else(not_admitted)?;
    let document = copy.body().ok_or_else(ApiError::internal)?.bytes().await?;
    let record = find_record(&document, filename).ok_or_else(not_admitted)?;
    let url = format!("{}/{subdir}/{filename}", rules.url.trim_end_matches('/'));
    let (Some(sha256), Some(size)) = (record.sha256, record.size) else {
        return Err(UpstreamFailure::Failed("its record has no sha256 or size".into()).error(&url));
    };
    Ok(UpstreamFile {
        sha256: hex::encode(sha256),
        size,
        url,
    })
}

/// Brings a package file the mirror admits but has not kept (its serving missed) from the
/// upstream into R2, through the channel's object so that concurrent first requests make one
/// upstream fetch; R2 checks the SHA-256 and the size the record gives, so bytes that differ
/// are refused and nothing is kept. With `stream`, a request that starts the fetch gets the
/// bytes as they come ([`MirrorFetched::Streamed`]); every other answer is
/// [`MirrorFetched::Stored`], once the file is in R2.
pub async fn fetch_package(
    ctx: &RequestContext,
    channel: &str,
    subdir: &str,
    filename: &str,
    rules: &MirrorRulesJson,
    stream: bool,
) -> ApiResult<(MirrorFetched, u64)> {
    let file = upstream_file(ctx, channel, subdir, filename, rules).await?;
    let request = MirrorFetchRequest {
        file: FileRequest {
            channel: channel.to_owned(),
            subdir: subdir.to_owned(),
            filename: filename.to_owned(),
        },
        url: file.url,
        rules: rules.clone(),
        sha256: file.sha256,
        size: file.size,
        stream,
    };
    let fetched = ctx.channel_index(channel)?.mirror_fetch(&request).await?;
    Ok((fetched, file.size))
}
