//! `DELETE /api/v1/delete/<channel>/<subdir>/<filename>`: removes a package (owners only).

use worker::{Env, Request, Response};

use super::auth::authorize_change;
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
    let (caller, channel) =
        authorize_change(env, req, path_token, channel_name, Action::Write).await?;
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
