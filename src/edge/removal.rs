//! Removing a package from a channel, for every route that deletes one (owners only): its
//! record through the channel index, then its attestations; one line in the audit log.

use serde::Serialize;
use worker::Response;

use super::attestation;
use super::channel_index::FileRequest;
use super::context::RequestContext;
use super::error::{json, ApiError, ApiResult};
use crate::access::Action;

#[derive(Serialize)]
struct Deleted {
    /// `<channel>/<subdir>/<filename>`.
    deleted: String,
}

/// Deletes `subdir/filename` from the channel; 404 when it holds no such file.
pub async fn remove_package(
    ctx: &RequestContext,
    channel_name: &str,
    subdir: &str,
    filename: &str,
) -> ApiResult<Response> {
    let (caller, channel) = ctx.authorize_change(channel_name, Action::Delete).await?;
    let outcome = ctx
        .channel_index(&channel.name)?
        .delete(&FileRequest {
            channel: channel.name.clone(),
            subdir: subdir.to_owned(),
            filename: filename.to_owned(),
        })
        .await?;
    let path = format!("{channel_name}/{subdir}/{filename}");
    super::log::change(
        "delete",
        &caller.name,
        &path,
        if outcome.deleted { 200 } else { 404 },
    );
    if !outcome.deleted {
        return Err(ApiError::not_found(format!(
            "no file {subdir}/{filename} in channel '{channel_name}'"
        )));
    }
    // After the package: the consistency check deletes attestations left without one.
    attestation::remove(ctx, &channel.name, subdir, filename).await?;
    json(200, &Deleted { deleted: path })
}
