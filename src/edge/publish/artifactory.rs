//! `PUT /<channel>/<subdir>/<filename>`: Artifactory's deploy, as `rattler-build upload
//! artifactory` sends it: the raw file (chunked) at the URL it is then served from, the key as
//! `Authorization: Bearer` or as the password of `Basic`. Stored exactly like a prefix.dev
//! upload; `X-Checksum-Sha256` (Artifactory's checksum header) is checked when sent, and
//! `?force=true` replaces a file of that name with other bytes.

use worker::Response;

use super::super::context::RequestContext;
use super::super::error::ApiResult;
use super::super::upload::stored_response;
use crate::access::Action;
use crate::publish::UploadQuery;

pub async fn deploy(
    ctx: &mut RequestContext,
    channel_name: &str,
    subdir: &str,
    filename: &str,
) -> ApiResult<Response> {
    let (caller, channel) = ctx.authorize_change(channel_name, Action::Write).await?;
    let force = UploadQuery::parse(ctx.req().url()?.query_pairs()).force;
    let sha256 = ctx.req().headers().get("X-Checksum-Sha256")?;
    let channel = channel.name;
    let result = match super::receive_body(ctx, &channel, filename, sha256).await {
        Ok(mut received) => {
            received.expect_subdir(subdir);
            received.commit(ctx, &channel, force, true).await
        }
        Err(refusal) => Err(refusal),
    };
    let status = result.as_ref().map_or_else(|e| e.status(), |r| r.status);
    let path = format!("{channel}/{subdir}/{filename}");
    super::super::log::change("upload (artifactory)", &caller.name, &path, status);
    stored_response(&channel, filename, &result?)
}
