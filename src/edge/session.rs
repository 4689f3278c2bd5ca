//! `/api/v1/session`: a browser signs in with an API key and gets a session cookie (see
//! [`crate::session`]).
//!
//! `POST` signs in, `GET` answers the session, `DELETE` signs out; what each answers is in
//! `docs/api.md`, the security model in `docs/access.md`, "Sessions".

use serde::{Deserialize, Serialize};
use worker::{Date, Response};

use super::auth::{self, forget_session, KeyInfo, Principal};
use super::context::RequestContext;
use super::error::{json, ApiError, ApiResult, ErrorCode};
use crate::directory;
use crate::session::{cleared_cookie, new_session_id, session_cookie, session_hash};

#[derive(Deserialize)]
struct SignIn {
    key: String,
}

/// What the pages know of their session.
#[derive(Serialize)]
struct SessionBody {
    user: String,
    is_admin: bool,
    /// Milliseconds since the epoch.
    expires_at: u64,
    key: KeyInfo,
}

impl SessionBody {
    fn of(principal: Principal, expires_at: u64) -> Self {
        Self {
            user: principal.name,
            is_admin: principal.is_admin,
            expires_at,
            key: principal.key,
        }
    }
}

pub async fn sign_in(ctx: &mut RequestContext) -> ApiResult<Response> {
    ctx.refuse_other_sites()?;
    let body: SignIn = ctx.json_body().await?;
    let principal = auth::verify_key(ctx, body.key.trim()).await?;
    let now = Date::now().as_millis();
    // A session never outlives its key.
    let expires_at = principal
        .key
        .expires_at
        .unwrap_or(u64::MAX)
        .min(now + ctx.config().session_ms);
    let id = new_session_id();
    let db = ctx.db()?;
    // The session this browser held until now ends here: a sign-in replaces it.
    let replaced = ctx.session_id()?.map(|old| session_hash(&old));
    let mut housekeeping = vec![directory::delete_expired_sessions(now as i64)];
    if let Some(old) = &replaced {
        housekeeping.push(directory::end_session(old, now as i64));
    }
    db.batch(housekeeping).await?;
    if let Some(old) = &replaced {
        forget_session(old);
    }
    let started = db
        .returns_row(directory::create_session(
            &session_hash(&id),
            principal.key.id,
            now as i64,
            expires_at as i64,
        ))
        .await?;
    if !started {
        return Err(ApiError::invalid_key("invalid, expired or revoked API key"));
    }
    super::log::change(
        "session start",
        &principal.name,
        &principal.key.id.to_string(),
        201,
    );
    let cookie = session_cookie(&id, (expires_at - now) / 1000, ctx.is_https()?);
    let mut response = json(201, &SessionBody::of(principal, expires_at))?;
    response.headers_mut().set("Set-Cookie", &cookie)?;
    Ok(response)
}

pub async fn current(ctx: &RequestContext) -> ApiResult<Response> {
    let principal = ctx.session_caller().await?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthenticated,
            "no session: sign in with an API key",
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
