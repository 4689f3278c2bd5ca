//! `DELETE /api/v1/delete/<channel>/<subdir>/<filename>`: removes a package and its
//! attestations (owners only), through [`super::removal`].

use worker::Response;

use super::context::RequestContext;
use super::error::ApiResult;
use super::removal::remove_package;
use crate::names::{ChannelName, PackageFilename, Subdir};

pub async fn delete(
    ctx: &RequestContext,
    channel_name: &ChannelName,
    subdir: &Subdir,
    filename: &PackageFilename,
) -> ApiResult<Response> {
    remove_package(ctx, channel_name, subdir, filename).await
}
