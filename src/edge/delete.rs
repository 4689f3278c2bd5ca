//! `DELETE /api/v1/delete/<channel>/<subdir>/<filename>`: removes a package (owners only).

use worker::{Env, Request, Response};

use super::auth::{authorize, find_channel, principal};
use super::channel_index::{ChannelIndexClient, DeleteRequest};
use super::error::{ApiError, ApiResult};
use crate::access::Action;

pub async fn delete(
    env: &Env,
    req: &Request,
    path_token: Option<&str>,
    channel_name: &str,
    subdir: &str,
    filename: &str,
) -> ApiResult<Response> {
    let caller = principal(env, req, path_token).await?.ok_or_else(|| {
        ApiError::unauthorized("deleting needs an API key: send 'Authorization: Bearer <key>'")
    })?;
    let channel = find_channel(env, channel_name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no channel named '{channel_name}'")))?;
    authorize(env, Action::Write, &channel, Some(&caller)).await?;
    let outcome = ChannelIndexClient::new(env, &channel.name)?
        .delete(&DeleteRequest {
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
    Ok(Response::from_json(
        &serde_json::json!({ "deleted": path }),
    )?)
}
