//! `PUT /<channel>/<subdir>/<filename>`: Artifactory's deploy, as `rattler-build upload
//! artifactory` sends it: the raw file (chunked) at the URL it is then served from, the key as
//! `Authorization: Bearer` or as the password of `Basic`. Stored exactly like a prefix.dev
//! upload; `X-Checksum-Sha256` (Artifactory's checksum header) is checked when sent, and
//! `?force=true` replaces a file of that name with other bytes.

use worker::Response;

use super::super::context::RequestContext;
use super::super::error::ApiResult;
use super::super::ingest::{ingest, Body, Named, Options};
use crate::access::Action;
use crate::names::{ChannelName, PackageFilename, Subdir};
use crate::publish::UploadQuery;

pub async fn deploy(
    ctx: &mut RequestContext,
    channel_name: &ChannelName,
    subdir: &Subdir,
    filename: &PackageFilename,
) -> ApiResult<Response> {
    let force = UploadQuery::parse(ctx.req().url()?.query_pairs()).force;
    let (caller, channel) = ctx
        .authorize_change(channel_name, Action::upload(force))
        .await?;
    let body = Body::Request {
        file: Named {
            filename: filename.to_string(),
            sha256: ctx.header("X-Checksum-Sha256").map(str::to_owned),
        },
        stream: ctx.body(),
    };
    let options = Options {
        subdir: Some(subdir),
        ..Options::upload("upload (artifactory)", &caller, force)
    };
    ingest(ctx, &channel.name, body, options)
        .await?
        .response(&channel.name)
}
