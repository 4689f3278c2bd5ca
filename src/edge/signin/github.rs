//! `GET /api/v1/signin/github` and its callback: GitHub's OAuth web flow (authorize, then the
//! code exchanged for an access token, then `GET /user`), users matched by GitHub's user id.

use worker::{Method, Response};

use super::{begin, finish, navigation, send, take, Step};
use crate::edge::context::RequestContext;
use crate::edge::error::ApiResult;
use crate::signin::{
    access_token_of, callback_url, github_authorization_url, github_token_request, AttemptSecrets,
    Profile, Provider, Refusal,
};

pub async fn start(ctx: &RequestContext) -> ApiResult<Response> {
    let answer = started(ctx).await;
    navigation(Provider::Github, answer)
}

async fn started(ctx: &RequestContext) -> Step<Response> {
    let config = ctx.sign_in_config()?;
    let settings = config.github.as_ref().ok_or(Refusal::Disabled)?;
    let secrets = AttemptSecrets::new();
    let redirect_uri = callback_url(&ctx.own_origin()?, Provider::Github);
    let url = github_authorization_url(settings, &redirect_uri, &secrets);
    begin(ctx, Provider::Github, &secrets, &url).await
}

pub async fn callback(ctx: &RequestContext) -> ApiResult<Response> {
    let answer = called_back(ctx).await;
    navigation(Provider::Github, answer)
}

async fn called_back(ctx: &RequestContext) -> Step<Response> {
    let config = ctx.sign_in_config()?;
    let settings = config.github.as_ref().ok_or(Refusal::Disabled)?;
    let (callback, attempt) = take(ctx, Provider::Github).await?;
    let redirect_uri = callback_url(&ctx.own_origin()?, Provider::Github);
    let (url, body) = github_token_request(settings, &callback.code, &redirect_uri);
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let (status, answer) = send(Method::Post, &url, &form, Some(body)).await?;
    let token = access_token_of(status, &answer)?;
    let bearer = format!("Bearer {token}");
    let (status, user) = send(
        Method::Get,
        &format!("{}/user", settings.api_url),
        &[
            ("Authorization", &bearer),
            ("Accept", "application/vnd.github+json"),
        ],
        None,
    )
    .await?;
    if status != 200 {
        return Err(Refusal::Unavailable.into());
    }
    let profile = Profile::of_github_user(&user)?;
    finish(ctx, &config, profile, &attempt).await
}
