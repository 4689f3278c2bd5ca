//! `/api/v1/session`: a browser signs in with an API key and gets a session cookie (see
//! [`crate::session`]).
//!
//! `POST` signs in, `GET` answers the session, `DELETE` signs out; what each answers is in
//! `docs/api.md`, the security model in `docs/access.md`, "Sessions".

use serde::Deserialize;
use worker::{Date, Response};

use super::auth::{self, forget_session};
use super::context::RequestContext;
use super::error::{json, ApiError, ApiResult, ErrorCode};
use super::sessions::{self, SessionBody};
use crate::directory;
use crate::session::{cleared_cookie, session_hash};

#[derive(Deserialize)]
struct SignIn {
    key: String,
}

pub async fn sign_in(ctx: &mut RequestContext) -> ApiResult<Response> {
    ctx.refuse_other_sites()?;
    let body: SignIn = ctx.json_body().await?;
    let principal = auth::verify_key(ctx, body.key.trim()).await?;
    let started = sessions::start(ctx, principal, false, sessions::held(ctx)?).await?;
    let mut response = json(201, &started.body)?;
    response.headers_mut().set("Set-Cookie", &started.cookie)?;
    Ok(response)
}

pub async fn current(ctx: &RequestContext) -> ApiResult<Response> {
    let principal = ctx.session_caller().await?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthenticated,
            "no session: sign in with an API key or an identity",
        )
    })?;
    let expires_at = principal.session_expires_at.unwrap_or_default();
    json(200, &SessionBody::of(principal, expires_at))
}

/// Ends the cookie's session, if it names a live one, and clears the cookie either way.
pub async fn sign_out(ctx: &RequestContext) -> ApiResult<Response> {
    if let Some(principal) = ctx.session_caller().await? {
        let id = ctx.session_id()?.unwrap_or_default();
        let hash = session_hash(&id);
        let now = Date::now().as_millis() as i64;
        ctx.db()?
            .batch([directory::end_session(&hash, now)])
            .await?;
        forget_session(&hash);
        super::log::change(
            "session end",
            &principal.name,
            &principal.key.id.to_string(),
            204,
        );
    }
    let mut response = Response::empty()?.with_status(204);
    response
        .headers_mut()
        .set("Set-Cookie", &cleared_cookie(ctx.is_https()?))?;
    Ok(response)
}
