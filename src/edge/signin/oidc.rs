//! `GET /api/v1/signin/oidc` and its callback: the OpenID Connect authorization code flow with
//! PKCE (S256), `state` and `nonce`, against the issuer's discovery document; the id_token
//! verified by [`crate::edge::jwt`] (signature against the issuer's JWKS, `iss`, `aud` = the
//! client id, `exp`) and then for the attempt's nonce. Users are matched by issuer and `sub`.

use worker::{Date, Method, Response};

use super::{begin, finish, navigation, provider_failure, send, take, Step};
use crate::edge::context::RequestContext;
use crate::edge::error::ApiResult;
use crate::edge::jwt::{self, KeySource};
use crate::jwt::Expected;
use crate::signin::{
    basic_credentials, callback_url, check_authorized_party, check_nonce, flow_endpoints,
    id_token_of, oidc_authorization_url, oidc_token_request, AttemptSecrets, OidcSettings, Profile,
    Provider, Refusal,
};

/// The issuer's authorization and token endpoints, from its discovery document.
async fn endpoints(settings: &OidcSettings) -> Step<(String, String)> {
    let metadata = jwt::provider(&settings.issuer)
        .await
        .map_err(provider_failure)?;
    Ok(flow_endpoints(
        metadata.authorization_endpoint.as_deref(),
        metadata.token_endpoint.as_deref(),
    )?)
}

pub async fn start(ctx: &RequestContext) -> ApiResult<Response> {
    let answer = started(ctx).await;
    navigation(Provider::Oidc, answer)
}

async fn started(ctx: &RequestContext) -> Step<Response> {
    let config = ctx.sign_in_config()?;
    let settings = config.oidc.as_ref().ok_or(Refusal::Disabled)?;
    let (authorization, _) = endpoints(settings).await?;
    let secrets = AttemptSecrets::new();
    let redirect_uri = callback_url(&ctx.own_origin()?, Provider::Oidc);
    let url = oidc_authorization_url(&authorization, settings, &redirect_uri, &secrets);
    begin(ctx, Provider::Oidc, &secrets, &url).await
}

pub async fn callback(ctx: &RequestContext) -> ApiResult<Response> {
    let answer = called_back(ctx).await;
    navigation(Provider::Oidc, answer)
}

async fn called_back(ctx: &RequestContext) -> Step<Response> {
    let config = ctx.sign_in_config()?;
    let settings = config.oidc.as_ref().ok_or(Refusal::Disabled)?;
    let (callback, attempt) = take(ctx, Provider::Oidc).await?;
    let (_, token_endpoint) = endpoints(settings).await?;
    let redirect_uri = callback_url(&ctx.own_origin()?, Provider::Oidc);
    let credentials = basic_credentials(&settings.client_id, &settings.client_secret);
    let (status, answer) = send(
        Method::Post,
        &token_endpoint,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", &credentials),
        ],
        Some(oidc_token_request(
            &callback.code,
            &redirect_uri,
            &attempt.verifier,
        )),
    )
    .await?;
    let id_token = id_token_of(status, &answer)?;
    let audiences = [settings.client_id.clone()];
    let expected = Expected {
        issuer: &settings.issuer,
        audiences: &audiences,
        now: Date::now().as_millis() / 1000,
    };
    let claims = jwt::verify(
        KeySource::Discovery {
            issuer: &settings.issuer,
        },
        &id_token,
        &expected,
    )
    .await
    .map_err(provider_failure)?;
    check_nonce(claims.extra.get("nonce"), &attempt.nonce)?;
    check_authorized_party(&claims.aud, claims.text("azp"), &settings.client_id)?;
    let profile = Profile::of_id_token(&settings.issuer, claims.sub.as_deref(), &claims.extra)?;
    finish(ctx, &config, profile, &attempt).await
}
