//! `POST /api/channels/<channel>/upload/<filename>?sha256=…&force=…`: quetz's upload API, as
//! `rattler-build upload quetz` sends it: the raw file as the body (chunked), the key as
//! `X-API-Key`, the checksum in the query. Answers as quetz does where the client can tell:
//! 406 for a checksum mismatch, 409 for a file of that name with other bytes.

use worker::Response;

use super::super::context::RequestContext;
use super::super::error::{self, ApiError, ApiResult};
use super::super::ingest::{ingest, Body, Named, Options};
use crate::access::Action;
use crate::names::{ChannelName, PackageFilename};
use crate::publish::{quetz_status, UploadQuery};

pub async fn upload(
    ctx: &mut RequestContext,
    channel_name: &ChannelName,
    filename: &PackageFilename,
) -> ApiResult<Response> {
    match store(ctx, channel_name, filename).await {
        Ok(response) => Ok(response),
        Err(refusal) => {
            let status = quetz_status(refusal.code);
            Ok(error::response(&refusal).with_status(status))
        }
    }
}

async fn store(
    ctx: &mut RequestContext,
    channel_name: &ChannelName,
    filename: &PackageFilename,
) -> ApiResult<Response> {
    let query = UploadQuery::parse(ctx.req().url()?.query_pairs());
    let (caller, channel) = ctx
        .authorize_change(channel_name, Action::upload(query.force))
        .await?;
    let sha256 = query
        .sha256
        .ok_or_else(|| ApiError::bad_request("the sha256 query parameter is missing"))?;
    let body = Body::Request {
        file: Named {
            filename: filename.to_string(),
            sha256: Some(sha256),
        },
        stream: ctx.body(),
    };
    let options = Options::upload("upload (quetz)", &caller, query.force);
    ingest(ctx, &channel.name, body, options)
        .await?
        .response(&channel.name)
}
