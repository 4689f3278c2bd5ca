//! A mirror channel's glue in the Worker: keeping a subdir's index fresh before a read
//! ([`sync`]; the refresh itself runs in the channel's Durable Object,
//! `channel_index::mirror_refresh`), the record facts package fetching checks bytes against
//! ([`upstream_file`], from the channel's index), and the fetch of a package file on its first
//! request.

use super::channel_index::{FileRequest, MirrorFetchRequest, MirrorFetched};
use super::context::RequestContext;
use super::error::{ApiError, ApiResult};
use crate::mirror::{MirrorRulesJson, UpstreamFailure};

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
