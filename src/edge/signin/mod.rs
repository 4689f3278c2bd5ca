//! Signing in with an identity provider (the rules: [`crate::signin`]): what the three methods'
//! handlers share. A redirect flow (`oidc`, `github`) begins with [`begin`], which stores the
//! attempt and binds it to the browser, and its callback [`take`]s the attempt back, once; every
//! method ends in [`sign_in`], which finds or makes the identity's user and starts the same
//! session a key sign-in starts (`sessions`). A refused callback sends the browser to the
//! sign-in page with the refusal's code, having stored nothing.

pub mod access;
pub mod github;
pub mod oidc;

use wasm_bindgen::JsValue;
use worker::{Date, Fetch, Headers, Method, Request, RequestInit, RequestRedirect, Response};

use super::auth;
use super::context::RequestContext;
use super::error::{internal, ApiError, ApiResult, ErrorCode};
use super::sessions::{self, Started};
use crate::directory::{
    self, IdRow, IdentityRow, NewIdentity, NewSignInAttempt, SignInAttemptRow, UserRow,
};
use crate::keys::{key_hash, new_key};
use crate::session::session_hash;
use crate::signin::{
    attempt_cookie, attempt_from_cookies, check_attempt, cleared_attempt_cookie, name_suffix,
    safe_next, user_name_candidates, AttemptSecrets, Callback, Profile, Provider, Refusal,
    SignInConfig, ATTEMPT_SECONDS,
};

/// Why a sign-in step did not go on: a refusal the person is told of (with what the log says
/// of it), or a failure of the platform (a 500, as anywhere).
pub enum Failure {
    Refused(Refusal, String),
    Api(ApiError),
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Self {
        Self::Refused(refusal, String::new())
    }
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Self::Api(error)
    }
}

impl From<worker::Error> for Failure {
    fn from(error: worker::Error) -> Self {
        Self::Api(error.into())
    }
}

type Step<T> = Result<T, Failure>;

/// A provider's failure as the JWT verifier or discovery reports it: a token that does not
/// verify is [`Refusal::Token`], a provider that cannot be read [`Refusal::Unavailable`]; the
/// sentence, which names the failed check, goes to the log.
pub fn provider_failure(error: ApiError) -> Failure {
    match error.code {
        ErrorCode::InvalidKey => Failure::Refused(Refusal::Token, error.message),
        ErrorCode::Upstream => Failure::Refused(Refusal::Unavailable, error.message),
        _ => Failure::Api(error),
    }
}

/// A navigation's answer: `303 See Other` to `location`.
fn see_other(location: &str) -> ApiResult<Response> {
    let mut response = Response::empty()?.with_status(303);
    response.headers_mut().set("Location", location)?;
    response.headers_mut().set("Cache-Control", "no-store")?;
    Ok(response)
}

/// The answer to a step of a redirect flow: what it answered, or, refused, the sign-in page
/// saying why. A refusal sets no cookie: a callback that is not this browser's must not end
/// the attempt it has under way.
pub fn navigation(provider: Provider, answer: Step<Response>) -> ApiResult<Response> {
    match answer {
        Ok(response) => Ok(response),
        Err(Failure::Api(error)) => Err(error),
        Err(Failure::Refused(refusal, detail)) => {
            super::log::sign_in_refused(provider.as_str(), refusal.code(), &detail);
            see_other(&refusal.page())
        }
    }
}

/// Starts an attempt: keeps its secrets for [`ATTEMPT_SECONDS`], binds it to this browser with
/// the attempt cookie, and sends the browser to the provider's `authorization_url`.
pub async fn begin(
    ctx: &RequestContext,
    provider: Provider,
    secrets: &AttemptSecrets,
    authorization_url: &str,
) -> Step<Response> {
    let url = ctx.req().url()?;
    let next = url
        .query_pairs()
        .find(|(name, _)| name == "next")
        .map(|(_, value)| value.into_owned());
    let now = Date::now().as_millis();
    ctx.db()?
        .batch([directory::create_sign_in_attempt(&NewSignInAttempt {
            state_hash: &session_hash(&secrets.state),
            provider: provider.as_str(),
            nonce: &secrets.nonce,
            verifier: &secrets.verifier,
            next: &safe_next(next.as_deref()),
            replaces: sessions::held(ctx)?.as_deref(),
            expires_at: (now + ATTEMPT_SECONDS * 1000) as i64,
        })])
        .await?;
    let mut response = see_other(authorization_url)?;
    response.headers_mut().set(
        "Set-Cookie",
        &attempt_cookie(&secrets.state, ctx.is_https()?),
    )?;
    Ok(response)
}

/// The callback's code and the attempt it completes, taken from D1 so that it counts once: its
/// `state` must be this browser's attempt cookie's, of this provider, still waiting.
pub async fn take(ctx: &RequestContext, provider: Provider) -> Step<(Callback, SignInAttemptRow)> {
    let cookies = ctx.header("Cookie").unwrap_or_default();
    let cookie_state = attempt_from_cookies(cookies, ctx.is_https()?);
    let callback = Callback::read(ctx.req().url()?.query_pairs(), cookie_state)?;
    let attempt: Option<SignInAttemptRow> = ctx
        .db()?
        .first(directory::take_sign_in_attempt(&session_hash(
            &callback.state,
        )))
        .await?;
    let attempt = check_attempt(attempt, provider, Date::now().as_millis())?;
    Ok((callback, attempt))
}

/// Signs the browser in as `profile`'s user (made now on a first sign-in), ending the session
/// it held when the attempt started, and sends it to the attempt's `next`, its attempt cookie
/// dropped.
pub async fn finish(
    ctx: &RequestContext,
    config: &SignInConfig,
    profile: Profile,
    attempt: &SignInAttemptRow,
) -> Step<Response> {
    let started = sign_in(ctx, config, profile, attempt.replaces.clone()).await?;
    let mut response = see_other(&safe_next(Some(&attempt.next)))?;
    let headers = response.headers_mut();
    headers.append("Set-Cookie", &started.cookie)?;
    headers.append("Set-Cookie", &cleared_attempt_cookie(ctx.is_https()?))?;
    Ok(response)
}

/// Starts a session of `profile`'s identity: through a key of its own (no limits, expiring with
/// the session, its secret never kept), as a site admin if `ADMIN_IDENTITIES` names it, ending
/// `replaced` (see [`sessions::start`]).
pub async fn sign_in(
    ctx: &RequestContext,
    config: &SignInConfig,
    profile: Profile,
    replaced: Option<String>,
) -> ApiResult<Started> {
    let identity_id = identity_of(ctx, &profile).await?;
    let now = Date::now().as_millis();
    let name = format!("{} sign-in", profile.provider.as_str());
    let key: Option<IdRow> = ctx
        .db()?
        .first(directory::create_sign_in_key(
            identity_id,
            &name,
            &key_hash(&new_key()),
            now as i64,
            (now + ctx.config().session_ms) as i64,
        ))
        .await?;
    let key = key.ok_or_else(|| internal("the identity went before its sign-in key was made"))?;
    let principal = auth::verify_key_id(ctx, key.id).await?;
    let site_admin = config.names_admin(profile.provider, &profile.subject);
    sessions::start(ctx, principal, site_admin, replaced).await
}

/// The identity's id, linked now to a new user (a member of nothing) if it has none: named
/// after the profile's hints, made unique.
async fn identity_of(ctx: &RequestContext, profile: &Profile) -> ApiResult<i64> {
    let db = ctx.db()?;
    let provider = profile.provider.as_str();
    let find = || directory::identity(provider, &profile.issuer, &profile.subject);
    if let Some(found) = db.first::<IdentityRow>(find()).await? {
        return Ok(found.id);
    }
    let now = Date::now().as_millis() as i64;
    let mut user = None;
    for name in user_name_candidates(&profile.name_hints, &name_suffix()) {
        user = db
            .first::<UserRow>(directory::create_user(&name, false, now))
            .await?;
        if user.is_some() {
            break;
        }
    }
    let user = user.ok_or_else(|| internal("no free user name for a first sign-in"))?;
    let linked: Option<IdRow> = db
        .first(directory::create_identity(&NewIdentity {
            provider,
            issuer: &profile.issuer,
            subject: &profile.subject,
            user_id: user.id,
            label: &profile.label,
            now,
        }))
        .await?;
    if let Some(linked) = linked {
        super::log::change("user create", &user.name, provider, 201);
        return Ok(linked.id);
    }
    // Another sign-in of the same identity linked it first: its user is the one.
    db.batch([directory::delete_unused_user(user.id)]).await?;
    db.first::<IdentityRow>(find())
        .await?
        .map(|found| found.id)
        .ok_or_else(|| internal("an identity vanished while it was linked"))
}

/// A request to a provider: its status and body. Redirects are not followed: an endpoint
/// answers itself.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> Step<(u16, String)> {
    let request_headers = Headers::new();
    // GitHub's API refuses requests without a User-Agent.
    request_headers.set("User-Agent", "condaflare")?;
    request_headers.set("Accept", "application/json")?;
    for (name, value) in headers {
        request_headers.set(name, value)?;
    }
    let mut init = RequestInit::new();
    init.with_method(method)
        .with_headers(request_headers)
        .with_redirect(RequestRedirect::Manual);
    if let Some(body) = body {
        init.with_body(Some(JsValue::from_str(&body)));
    }
    let request = Request::new_with_init(url, &init)?;
    let Ok(mut response) = Fetch::Request(request).send().await else {
        return Err(Refusal::Unavailable.into());
    };
    let text = response.text().await.map_err(|_| Refusal::Unavailable)?;
    Ok((response.status_code(), text))
}
