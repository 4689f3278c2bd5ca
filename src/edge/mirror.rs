//! A mirror channel's glue in the Worker: keeping a subdir's index fresh before a read
//! ([`sync`]; the refresh itself runs in the channel's Durable Object,
//! `channel_index::mirror_refresh`), the record facts package fetching checks bytes against
//! ([`upstream_file`], from the channel's index), the fetch of a package file on its first
//! request, and what the mirror's state shows: each subdir's freshness and the files it keeps.

use super::channel_index::{FileRequest, MirrorFetchRequest, MirrorFetched};
use super::context::RequestContext;
use super::error::{ApiError, ApiResult};
use crate::mirror::{MirrorRulesJson, UpstreamFailure};
use crate::mirror_state::{kept_file, KeptFile, KeptPage, KeptQuery, SubdirFreshness};

/// Makes sure the mirror's index of `subdir` is fresh enough to answer a read. Answers its
/// age in seconds when it stands in for an upstream that failed, `None` otherwise.
///
/// Only the first read of a subdir waits for the upstream: a later one that finds the index
/// due is answered from it while the refresh runs after the answer (unless
/// `MIRROR_REFRESH_IN_BACKGROUND` is off).
pub async fn sync(
    ctx: &RequestContext,
    channel: &str,
    subdir: &str,
    rules: &MirrorRulesJson,
) -> ApiResult<Option<u64>> {
    let index = ctx.channel_index(channel)?;
    let wait = !ctx.config().mirror_refresh_in_background;
    let state = index.mirror_refresh(channel, subdir, rules, wait).await?;
    if state.behind {
        let (channel, subdir, rules) = (channel.to_owned(), subdir.to_owned(), rules.clone());
        ctx.wait_until(async move {
            if let Err(error) = index.mirror_refresh(&channel, &subdir, &rules, true).await {
                super::log::error(&format!(
                    "mirror {channel}/{subdir}: refresh: {}",
                    error.message
                ));
            }
        });
    }
    Ok(state.stale_age)
}

/// A package file as the mirror's upstream has it: where, and what its record says it is.
pub struct UpstreamFile {
    /// Hex.
    pub sha256: String,
    pub size: u64,
    pub url: String,
}

/// The upstream record of a package file the mirror admits, from the channel's index (after
/// [`sync`]). A file the rules leave out (denied, too young, not upstream) is 404 even when
/// asked for by URL.
pub async fn upstream_file(
    ctx: &RequestContext,
    channel: &str,
    subdir: &str,
    filename: &str,
    rules: &MirrorRulesJson,
) -> ApiResult<UpstreamFile> {
    sync(ctx, channel, subdir, rules).await?;
    let record = ctx
        .channel_index(channel)?
        .mirror_file(subdir, filename)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "mirror channel '{channel}' serves no {subdir}/{filename}"
            ))
        })?;
    let url = format!("{}/{subdir}/{filename}", rules.url.trim_end_matches('/'));
    let Some(size) = record.size else {
        return Err(UpstreamFailure::Failed("its record has no size".into()).error(&url));
    };
    Ok(UpstreamFile {
        sha256: record.sha256,
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

/// When the mirror last had each subdir's index from its upstream, as the channel's index
/// records it: the time moves only when the upstream answers (200 or 304), and `stale` says
/// that the last revalidation failed, so the index stands in for a failing upstream.
pub async fn freshness(ctx: &RequestContext, channel: &str) -> ApiResult<Vec<SubdirFreshness>> {
    let subdirs = ctx.channel_index(channel)?.mirror_subdirs(channel).await?;
    let now = worker::Date::now().as_millis();
    Ok(subdirs
        .into_iter()
        .map(|(subdir, state)| {
            SubdirFreshness::new(subdir, state.fetched_at, state.failure.is_some(), now)
        })
        .collect())
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
