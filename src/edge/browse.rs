//! The browse API the web app's pages read (see [`crate::browse`]), answered from the
//! channel's index under the channel's read policy, and what the server tells the pages of
//! itself.
//!
//! Its routes and what they answer: `docs/api.md`, "Browse API".

use serde::Serialize;
use worker::Response;

use super::auth::Hiding;
use super::context::RequestContext;
use super::error::{json, ApiError, ApiResult};
use crate::access::Action;
use crate::browse::BrowseQuery;
use crate::names::ChannelName;
use crate::signin::Method;

pub async fn list_packages(ctx: &RequestContext, channel: &ChannelName) -> ApiResult<Response> {
    let query =
        BrowseQuery::from_query(ctx.req().url()?.query_pairs()).map_err(ApiError::bad_request)?;
    let (_, channel) = ctx
        .authorize(channel, Action::Read, Hiding::NotFound)
        .await?;
    let page = ctx.channel_index(&channel.name)?.browse(&query).await?;
    json(200, &page)
}

pub async fn package(
    ctx: &RequestContext,
    channel: &ChannelName,
    name: &str,
) -> ApiResult<Response> {
    let (_, channel) = ctx
        .authorize(channel, Action::Read, Hiding::NotFound)
        .await?;
    let records = ctx
        .channel_index(&channel.name)?
        .package(&channel.name, name)
        .await?
        .ok_or_else(|| ApiError::not_found("no package of that name in this channel"))?;
    json(200, &records)
}

#[derive(Serialize)]
struct ServerInfo {
    max_upload_bytes: u64,
    /// The identity sign-in methods that are on (key sign-in always is).
    sign_in: Vec<Method>,
}

pub async fn server_info(ctx: &RequestContext) -> ApiResult<Response> {
    json(
        200,
        &ServerInfo {
            max_upload_bytes: ctx.config().max_upload_bytes,
            sign_in: ctx.sign_in_config()?.methods(),
        },
    )
}
