//! `POST /api/v1/upload/<channel>`: the prefix.dev upload API, an adapter onto
//! [`super::ingest`]: the raw file named by its `X-File-Name` and `X-File-SHA256` headers, or
//! a multipart form whose `file` part names it the same way (with an optional attestation).

use worker::{Headers, Response};

use super::context::RequestContext;
use super::error::{ApiError, ApiResult};
use super::ingest::{ingest, Body, FormFields, Named, Options};
use crate::multipart::MultipartReader;
use crate::names::ChannelName;

pub async fn upload(ctx: &mut RequestContext, channel_name: &ChannelName) -> ApiResult<Response> {
    let write = ctx.open_channel_write(channel_name).await?;
    let channel = write.channel.name;
    let content_type = ctx.req().headers().get("Content-Type")?.unwrap_or_default();
    let body = match MultipartReader::boundary_of(&content_type) {
        Some(boundary) => Body::Form {
            stream: ctx.body_stream()?,
            boundary: boundary.to_owned(),
            length: write.length,
            file: None,
            fields: FormFields {
                attestation: true,
                ..FormFields::default()
            },
        },
        None => {
            let headers = ctx.req().headers();
            let file = Named {
                filename: required_header(headers, "X-File-Name")?,
                sha256: Some(required_header(headers, "X-File-SHA256")?),
            };
            Body::Request {
                file,
                stream: ctx.body(),
            }
        }
    };
    let options = Options::upload("upload", &write.caller, write.force);
    ingest(ctx, &channel, body, options)
        .await?
        .response(&channel)
}

fn required_header(headers: &Headers, name: &str) -> ApiResult<String> {
    headers
        .get(name)?
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("the {name} header is missing")))
}
