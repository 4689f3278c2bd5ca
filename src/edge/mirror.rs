//! A mirror channel's glue in the Worker: keeping a subdir's index fresh before a read
//! ([`sync`]; the refresh itself runs in the channel's Durable Object,
//! `channel_index::mirror`), the record facts package fetching checks bytes against
//! ([`admitted_file`]), and the fetch of a package file on its first request.

use std::time::Duration;

use futures_util::future;
use worker::{Delay, Fetch, FixedLengthStream, HttpMetadata, Method, Request};

use super::context::RequestContext;
use super::error::{ApiError, ApiResult};
use super::storage::file_key;
use crate::index_store::UpstreamFile;
use crate::mirror::{MirrorRulesJson, UpstreamFailure, UPSTREAM_TIMEOUT_MS};
use crate::names::ChannelFile;
use crate::r2_checksum::sha256_refusal;

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

/// The record facts of a mirror's file from the channel's index (after [`sync`]): `None`
/// when the rules leave it out (denied, too young, not upstream).
pub async fn admitted_file(
    ctx: &RequestContext,
    channel: &str,
    subdir: &str,
    filename: &str,
    rules: &MirrorRulesJson,
) -> ApiResult<Option<UpstreamFile>> {
    sync(ctx, channel, subdir, rules).await?;
    ctx.channel_index(channel)?
        .mirror_file(subdir, filename)
        .await
}

/// Fetches a package file the mirror admits but has not kept (its serving missed) from the
/// upstream, written with R2 checking the SHA-256 and the size that its record in the
/// channel's index gives it, so bytes that differ are refused and nothing is kept. A file the
/// rules leave out (denied, too young, not upstream) is 404 even when asked for by URL.
///
/// Concurrent first requests each fetch the file; each put is checked alike and stores the
/// same bytes.
pub async fn fetch_package(
    ctx: &RequestContext,
    channel: &str,
    subdir: &str,
    filename: &str,
    rules: &MirrorRulesJson,
) -> ApiResult<()> {
    let bucket = ctx.bucket()?;
    let key = file_key(channel, subdir, filename);
    let not_admitted = || {
        ApiError::not_found(format!(
            "mirror channel '{channel}' serves no {subdir}/{filename}"
        ))
    };
    let record = admitted_file(ctx, channel, subdir, filename, rules)
        .await?
        .ok_or_else(not_admitted)?;
    let url = format!("{}/{subdir}/{filename}", rules.url.trim_end_matches('/'));
    let unusable = |why: &str| UpstreamFailure::Failed(why.to_owned()).error(&url);
    let (Ok(sha256), Some(size)) = (hex::decode(&record.sha256), record.size) else {
        return Err(unusable("its record has no sha256 or size"));
    };
    let request = Box::pin(async {
        let request =
            Request::new(&url, Method::Get).map_err(|e| UpstreamFailure::Failed(e.to_string()))?;
        Fetch::Request(request)
            .send()
            .await
            .map_err(|e| UpstreamFailure::Failed(e.to_string()))
    });
    let timeout = Box::pin(Delay::from(Duration::from_millis(UPSTREAM_TIMEOUT_MS)));
    let mut response = match future::select(request, timeout).await {
        future::Either::Left((answer, _)) => answer,
        future::Either::Right(_) => Err(UpstreamFailure::TimedOut),
    }
    .map_err(|failure| failure.error(&url))?;
    match response.status_code() {
        200 => {}
        404 | 410 => return Err(UpstreamFailure::Missing.error(&url)),
        status => return Err(unusable(&format!("HTTP {status}"))),
    }
    let body = response.stream()?;
    let stored = bucket
        .put(&key, FixedLengthStream::wrap(body, size))
        .sha256(sha256)
        .http_metadata(HttpMetadata {
            content_type: Some(ChannelFile::content_type(filename).to_owned()),
            ..Default::default()
        })
        .execute()
        .await;
    // A put that failed left no object.
    stored.map(|_| ()).map_err(|error| {
        let message = error.to_string();
        worker::console_warn!("mirror {channel}: {url}: {message}");
        if sha256_refusal(&message).is_some() {
            unusable("its bytes do not have the SHA-256 its repodata.json gives; nothing was kept")
        } else {
            unusable(&format!(
                "its bytes could not be stored as {size} bytes; nothing was kept"
            ))
        }
    })
}
