//! Starting a browser session: the one way every sign-in (a key, or an identity) ends, so that
//! each gives the same cookie, the same expiry cap and the same replacement of the browser's
//! earlier session (see [`crate::session`]).

use serde::Serialize;
use worker::Date;

use super::auth::{forget_session, KeyInfo, Principal};
use super::context::RequestContext;
use super::error::{ApiError, ApiResult};
use crate::directory;
use crate::session::{random_secret, session_cookie, session_hash};

/// What the pages know of their session.
#[derive(Serialize)]
pub struct SessionBody {
    pub user: String,
    pub is_admin: bool,
    /// Milliseconds since the epoch.
    pub expires_at: u64,
    pub key: KeyInfo,
}

impl SessionBody {
    pub fn of(principal: Principal, expires_at: u64) -> Self {
        Self {
            user: principal.name,
            is_admin: principal.is_admin,
            expires_at,
            key: principal.key,
        }
    }
}

/// A session started: the `Set-Cookie` that hands it to the browser, and what it is.
pub struct Started {
    pub cookie: String,
    pub body: SessionBody,
}

/// The hash of the session the request's cookie names, which a sign-in ends.
pub fn held(ctx: &RequestContext) -> ApiResult<Option<String>> {
    Ok(ctx.session_id()?.map(|id| session_hash(&id)))
}

/// Starts a session acting with `principal`'s key (a site admin's when `site_admin`, for an
/// identity `ADMIN_IDENTITIES` names), ending `replaced` (the hash of the session the browser
/// held, see [`held`]). It lasts `SESSION_HOURS`, never beyond the key. 401 when the key was
/// revoked meanwhile.
pub async fn start(
    ctx: &RequestContext,
    principal: Principal,
    site_admin: bool,
    replaced: Option<String>,
) -> ApiResult<Started> {
    let now = Date::now().as_millis();
    let expires_at = principal
        .key
        .expires_at
        .unwrap_or(u64::MAX)
        .min(now + ctx.config().session_ms);
    let id = random_secret();
    let db = ctx.db()?;
    // The session this browser held until now ends here: a sign-in replaces it.
    let mut housekeeping = vec![directory::delete_expired_sessions(now as i64)];
    housekeeping.extend(directory::delete_expired_sign_ins(now as i64));
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
            site_admin,
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
    let principal = Principal {
        is_admin: principal.is_admin || site_admin,
        ..principal
    };
    Ok(Started {
        cookie,
        body: SessionBody::of(principal, expires_at),
    })
}
