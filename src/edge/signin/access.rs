//! `POST /api/v1/signin/access`: Cloudflare Access in front of the deployment vouches for the
//! person in the `Cf-Access-Jwt-Assertion` header; verified against the team's certs with the
//! application's AUD tag, it becomes a session. Users are matched by the assertion's email.
//! The sign-in page calls it (so the cross-site rule of key sign-in applies), and it answers as
//! key sign-in does.

use worker::{Date, Response};

use crate::edge::context::RequestContext;
use crate::edge::error::{json, ApiError, ApiResult, ErrorCode};
use crate::edge::jwt::{self, KeySource};
use crate::edge::sessions;
use crate::jwt::Expected;
use crate::signin::Profile;

pub async fn sign_in(ctx: &RequestContext) -> ApiResult<Response> {
    ctx.refuse_other_sites()?;
    let config = ctx.sign_in_config()?;
    let settings = config.access.as_ref().ok_or_else(|| {
        ApiError::not_found("Cloudflare Access sign-in is not configured on this server")
    })?;
    let assertion = ctx.header("Cf-Access-Jwt-Assertion").ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthenticated,
            "no Cloudflare Access assertion came with this request: open this site through Access",
        )
    })?;
    let audiences = [settings.audience.clone()];
    let expected = Expected {
        issuer: &settings.issuer,
        audiences: &audiences,
        now: Date::now().as_millis() / 1000,
    };
    let claims = jwt::verify(
        KeySource::Jwks {
            url: &settings.certs_url,
        },
        assertion.trim(),
        &expected,
    )
    .await?;
    let profile = Profile::of_access_claims(&claims.extra)
        .map_err(|_| ApiError::invalid_key("the Access assertion names no email address"))?;
    let started = super::sign_in(ctx, &config, profile, sessions::held(ctx)?).await?;
    let mut response = json(201, &started.body)?;
    response.headers_mut().set("Set-Cookie", &started.cookie)?;
    Ok(response)
}
