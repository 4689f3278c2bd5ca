//! `POST /api/v1/reindex/<channel>/<subdir>`: prefix.dev's reindex, for the channel's writers.
//! The channel index rebuilds every artifact from its records, so this rewrites the subdir's
//! shards, shard index, repodata.json and run_exports.json (and those of the channel's other
//! subdirs with it: one rebuild of the records serves them all).

use serde::Serialize;
use worker::Response;

use super::super::context::RequestContext;
use super::super::error::{json, ApiResult};
use crate::access::Action;
use crate::names::{ChannelName, Subdir};

#[derive(Serialize)]
struct Reindexed<'a> {
    channel: &'a str,
    subdir: &'a str,
    /// Every subdir whose artifacts were rewritten.
    rebuilt: Vec<String>,
}

pub async fn reindex(
    ctx: &RequestContext,
    channel_name: &ChannelName,
    subdir: &Subdir,
) -> ApiResult<Response> {
    let (caller, channel) = ctx.authorize_change(channel_name, Action::Write).await?;
    let rebuilt = ctx
        .channel_index(&channel.name)?
        .rebuild(&channel.name)
        .await?;
    let path = format!("{}/{subdir}", channel.name);
    super::super::log::change("reindex", &caller.name, &path, 200);
    json(
        200,
        &Reindexed {
            channel: &channel.name,
            subdir,
            rebuilt,
        },
    )
}
