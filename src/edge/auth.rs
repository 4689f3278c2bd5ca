//! Who is calling, and what they may do on a channel.
//!
//! Keys are looked up by their SHA-256 in D1; verified keys, channels and memberships are
//! cached per isolate (see [`super::cache`]) so steady-state reads cost no D1 round trip.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use wasm_bindgen::JsValue;
use worker::{Date, Env, Request};

use super::cache::TtlCache;
use super::error::{ApiError, ApiResult};
use crate::access::{decide, Action, Caller, Decision, Role};

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: i64,
    pub name: String,
    pub is_admin: bool,
}

/// A channel as D1 knows it.
#[derive(Debug, Clone)]
pub struct Channel {
    pub name: String,
    pub private: bool,
    /// Milliseconds since the epoch.
    pub created_at: u64,
}

thread_local! {
    static KEYS: TtlCache<Principal> = TtlCache::new();
    static CHANNELS: TtlCache<Channel> = TtlCache::new();
    static ROLES: TtlCache<Role> = TtlCache::new();
}

/// The key a request carries, in any of the forms clients send: a `/t/<key>/` path prefix
/// (passed in by the router, which strips it), `Authorization: Bearer`, `Authorization: Basic`
/// with the key as password, or `X-API-Key`.
pub fn presented_key(req: &Request, path_token: Option<&str>) -> ApiResult<Option<String>> {
    if let Some(token) = path_token {
        return Ok(Some(token.to_owned()));
    }
    let headers = req.headers();
    if let Some(value) = headers.get("Authorization")? {
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            return Ok(Some(rest.to_owned()));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| ApiError::unauthorized("malformed Basic credentials"))?;
            let (_, password) = decoded.split_once(':').unwrap_or(("", &decoded));
            return Ok(Some(password.to_owned()));
        }
        return Err(ApiError::unauthorized(
            "unsupported Authorization scheme; send 'Bearer <key>'",
        ));
    }
    Ok(headers.get("X-API-Key")?.filter(|key| !key.is_empty()))
}

/// The user behind a key; 401 for a key that is unknown, revoked or expired.
pub async fn verify_key(env: &Env, key: &str) -> ApiResult<Principal> {
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    if let Some(cached) = KEYS.with(|cache| cache.get(&hash)) {
        return cached.ok_or_else(invalid_key);
    }

    #[derive(Deserialize)]
    struct Row {
        user_id: i64,
        name: String,
        is_admin: i64,
    }
    let now = Date::now().as_millis() as f64;
    let row: Option<Row> = env
        .d1("DB")?
        .prepare(
            "SELECT k.user_id, u.name, u.is_admin FROM api_keys k JOIN users u ON u.id = k.user_id \
             WHERE k.key_hash = ?1 AND k.revoked_at IS NULL \
             AND (k.expires_at IS NULL OR k.expires_at > ?2)",
        )
        .bind(&[JsValue::from(hash.as_str()), JsValue::from(now)])?
        .first(None)
        .await?;
    let principal = row.map(|row| Principal {
        user_id: row.user_id,
        name: row.name,
        is_admin: row.is_admin != 0,
    });
    KEYS.with(|cache| cache.put(hash, principal.clone()));
    principal.ok_or_else(invalid_key)
}

fn invalid_key() -> ApiError {
    ApiError::unauthorized("invalid, expired or revoked API key")
}

/// The signed-in user, if the request carries a key; 401 if it carries a bad one.
pub async fn principal(
    env: &Env,
    req: &Request,
    path_token: Option<&str>,
) -> ApiResult<Option<Principal>> {
    match presented_key(req, path_token)? {
        Some(key) => verify_key(env, &key).await.map(Some),
        None => Ok(None),
    }
}

pub async fn find_channel(env: &Env, name: &str) -> ApiResult<Option<Channel>> {
    if let Some(cached) = CHANNELS.with(|cache| cache.get(name)) {
        return Ok(cached);
    }

    #[derive(Deserialize)]
    struct Row {
        name: String,
        private: i64,
        created_at: f64,
    }
    let row: Option<Row> = env
        .d1("DB")?
        .prepare("SELECT name, private, created_at FROM channels WHERE name = ?1")
        .bind(&[JsValue::from(name)])?
        .first(None)
        .await?;
    let channel = row.map(|row| Channel {
        name: row.name,
        private: row.private != 0,
        created_at: row.created_at as u64,
    });
    CHANNELS.with(|cache| cache.put(name.to_owned(), channel.clone()));
    Ok(channel)
}

async fn role(env: &Env, channel: &str, user_id: i64) -> ApiResult<Option<Role>> {
    let key = format!("{channel}\n{user_id}");
    if let Some(cached) = ROLES.with(|cache| cache.get(&key)) {
        return Ok(cached);
    }
    let role: Option<String> = env
        .d1("DB")?
        .prepare("SELECT role FROM memberships WHERE channel = ?1 AND user_id = ?2")
        .bind(&[JsValue::from(channel), JsValue::from(user_id as f64)])?
        .first(Some("role"))
        .await?;
    let role = role.as_deref().and_then(Role::parse);
    ROLES.with(|cache| cache.put(key, role));
    Ok(role)
}

/// Applies the access policy; the error is the answer to give.
pub async fn authorize(
    env: &Env,
    action: Action,
    channel: &Channel,
    principal: Option<&Principal>,
) -> ApiResult<()> {
    let caller = match principal {
        Some(p) if p.is_admin => Some(Caller {
            is_admin: true,
            role: None,
        }),
        Some(p) => Some(Caller {
            is_admin: false,
            role: role(env, &channel.name, p.user_id).await?,
        }),
        None => None,
    };
    match decide(action, channel.private, caller) {
        Decision::Allow => Ok(()),
        Decision::Unauthenticated => Err(ApiError::unauthorized(
            "this needs an API key: send 'Authorization: Bearer <key>'",
        )),
        Decision::Forbidden => Err(ApiError::forbidden(match action {
            Action::Read => "your key has no access to this channel",
            Action::Write => "only an owner of this channel may change it",
        })),
    }
}

/// The caller and channel of a request that changes the channel: a key is required, the
/// channel must exist and the caller must own it (or be a site admin).
pub async fn authorize_change(
    env: &Env,
    req: &Request,
    path_token: Option<&str>,
    channel_name: &str,
) -> ApiResult<(Principal, Channel)> {
    let caller = principal(env, req, path_token).await?.ok_or_else(|| {
        ApiError::unauthorized(
            "changing a channel needs an API key: send 'Authorization: Bearer <key>'",
        )
    })?;
    let channel = find_channel(env, channel_name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no channel named '{channel_name}'")))?;
    authorize(env, Action::Write, &channel, Some(&caller)).await?;
    Ok((caller, channel))
}
