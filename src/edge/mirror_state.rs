//! `GET /api/v1/channels/<c>/mirror`: a mirror channel's rules, how fresh its copy of each
//! subdir's repodata.json is, and a page of the package files it keeps (see
//! [`crate::mirror_state`]), under the channel's read policy. A channel that is no mirror is
//! a 404.
//!
//! What it answers: `docs/api.md`, "Mirror state".

use serde::Serialize;
use worker::Response;

use super::auth::Hiding;
use super::context::RequestContext;
use super::error::{json, ApiError, ApiResult};
use super::mirror;
use crate::access::Action;
use crate::mirror::MirrorRulesJson;
use crate::mirror_state::{KeptPage, KeptQuery, SubdirFreshness};
use crate::names::ChannelName;

#[derive(Serialize)]
struct MirrorState<'a> {
    channel: &'a str,
    /// The rules as `GET /api/v1/channels/<c>` shows them: `credentials` is a secret's name.
    #[serde(flatten)]
    rules: MirrorRulesJson,
    /// A read of a subdir's repodata.json older than this asks the upstream again.
    revalidate_seconds: u64,
    subdirs: Vec<SubdirFreshness>,
    #[serde(flatten)]
    kept: KeptPage,
}

pub async fn mirror_state(ctx: &RequestContext, name: &ChannelName) -> ApiResult<Response> {
    let query =
        KeptQuery::from_query(ctx.req().url()?.query_pairs()).map_err(ApiError::bad_request)?;
    let (_, channel) = ctx.authorize(name, Action::Read, Hiding::NotFound).await?;
    let rules = channel
        .mirror
        .ok_or_else(|| ApiError::not_found(format!("channel '{name}' is no mirror")))?;
    let (subdirs, kept) = futures_util::future::try_join(
        mirror::freshness(ctx, name),
        mirror::kept_files(ctx, name, &query),
    )
    .await?;
    json(
        200,
        &MirrorState {
            channel: name,
            rules,
            revalidate_seconds: ctx.config().mirror_revalidate_ms / 1000,
            subdirs,
            kept,
        },
    )
}
