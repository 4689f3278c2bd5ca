//! `POST /api/v1/upload/<channel>`: the prefix.dev upload API, an adapter onto
//! [`super::ingest`]: the raw file named by its `X-File-Name` and `X-File-SHA256` headers, or
//! a multipart form whose `file` part names it the same way (with an optional attestation).

use worker::Response;

use super::context::RequestContext;
use super::error::{ApiError, ApiResult};
use super::ingest::{ingest, Body, FormFields, Named, Options};
use crate::multipart::MultipartReader;
use crate::names::ChannelName;

pub async fn upload(ctx: &mut RequestContext, channel_name: &ChannelName) -> ApiResult<Response> {
    let write = ctx.open_channel_write(channel_name).await?;
    let channel = write.channel.name;
    let boundary = MultipartReader::boundary_of(ctx.header("Content-Type").unwrap_or_default())
        .map(str::to_owned);
    let body = match boundary {
        Some(boundary) => Body::Form {
            stream: ctx.body_stream()?,
            boundary,
            length: write.length,
            file: None,
            fields: FormFields {
                attestation: true,
                ..FormFields::default()
            },
        },
        None => {
            let file = Named {
                filename: required_header(ctx, "X-File-Name")?,
                sha256: Some(required_header(ctx, "X-File-SHA256")?),
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

fn required_header(ctx: &RequestContext, name: &str) -> ApiResult<String> {
    ctx.header(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("the {name} header is missing")))
}
