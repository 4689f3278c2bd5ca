//! Who is calling, and what they may do on a channel.
//!
//! Keys are looked up by their SHA-256 in D1; verified keys, channels and memberships are
//! cached per isolate (see [`super::cache`]) so steady-state reads cost no D1 round trip.

use serde::Deserialize;
use wasm_bindgen::JsValue;
use worker::{Date, Env, Request};

use super::cache::{ttl_ms, TtlCache};
use super::error::{ApiError, ApiResult};
use crate::access::{decide, may_manage_account, Action, Caller, Decision, KeyScope, Role};
use crate::keys::{key_hash, PresentedCredentials};

/// A signed-in user, and the key they signed in with.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: i64,
    pub name: String,
    pub is_admin: bool,
    pub key: KeyInfo,
}

/// What is known of a key besides its owner.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    pub id: i64,
    pub name: String,
    pub read_only: bool,
    /// The channels the key is limited to; `None`: no limit.
    pub channels: Option<Vec<String>>,
    /// Milliseconds since the epoch.
    pub expires_at: Option<u64>,
}

impl Principal {
    fn scope_for(&self, channel: &str) -> KeyScope {
        KeyScope {
            read_only: self.key.read_only,
            covers_channel: self
                .key
                .channels
                .as_ref()
                .is_none_or(|channels| channels.iter().any(|c| c == channel)),
        }
    }

    /// 403 unless the caller is a site admin; `what` names what is reserved to them.
    pub fn require_admin(&self, what: &str) -> ApiResult<()> {
        if self.is_admin {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("{what} is for site admins")))
        }
    }

    /// Creating channels and managing keys (see [`may_manage_account`]); 403 otherwise.
    pub fn require_unlimited_key(&self) -> ApiResult<()> {
        if may_manage_account(self.key.read_only, self.key.channels.is_some()) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "this needs a key without limits; this one is read-only or limited to some channels",
            ))
        }
    }
}

/// Drops what this isolate cached about a channel, after a change made through the API.
pub fn forget_channel(channel: &str) {
    CHANNELS.with(|cache| cache.forget(channel));
    let prefix = format!("{channel}\n");
    ROLES.with(|cache| cache.forget_where(|key, _| !key.starts_with(&prefix)));
}

/// Drops a key this isolate verified, after it was revoked through the API.
pub fn forget_key(key_id: i64) {
    KEYS.with(|cache| {
        cache.forget_where(|_, principal| principal.as_ref().is_none_or(|p| p.key.id != key_id))
    });
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
    let headers = req.headers();
    let authorization = headers.get("Authorization")?;
    let x_api_key = headers.get("X-API-Key")?;
    PresentedCredentials {
        path_token,
        authorization: authorization.as_deref(),
        x_api_key: x_api_key.as_deref(),
    }
    .key()
}

/// The user behind a key; 401 for a key that is unknown, revoked or expired.
pub async fn verify_key(env: &Env, key: &str) -> ApiResult<Principal> {
    let hash = key_hash(key);
    let now = Date::now().as_millis();
    let cached = KEYS.with(|cache| cache.get(&hash));
    let principal = match cached {
        Some(principal) => principal,
        None => {
            let principal = load_key(env, &hash).await?;
            KEYS.with(|cache| cache.put(hash, principal.clone(), ttl_ms(env)));
            principal
        }
    };
    principal
        .filter(|p| p.key.expires_at.is_none_or(|at| at > now))
        .ok_or_else(invalid_key)
}

async fn load_key(env: &Env, hash: &str) -> ApiResult<Option<Principal>> {
    #[derive(Deserialize)]
    struct Row {
        key_id: i64,
        key_name: String,
        read_only: i64,
        channels: Option<String>,
        expires_at: Option<f64>,
        user_id: i64,
        name: String,
        is_admin: i64,
    }
    let row: Option<Row> = env
        .d1("DB")?
        .prepare(
            "SELECT k.id AS key_id, k.name AS key_name, k.read_only, k.channels, k.expires_at, \
             k.user_id, u.name, u.is_admin FROM api_keys k JOIN users u ON u.id = k.user_id \
             WHERE k.key_hash = ?1 AND k.revoked_at IS NULL",
        )
        .bind(&[JsValue::from(hash)])?
        .first(None)
        .await?;
    Ok(row.map(|row| Principal {
        user_id: row.user_id,
        name: row.name,
        is_admin: row.is_admin != 0,
        key: KeyInfo {
            id: row.key_id,
            name: row.key_name,
            read_only: row.read_only != 0,
            channels: row
                .channels
                .and_then(|text| serde_json::from_str(&text).ok()),
            expires_at: row.expires_at.map(|at| at as u64),
        },
    }))
}

fn invalid_key() -> ApiError {
    ApiError::invalid_key("invalid, expired or revoked API key")
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
    CHANNELS.with(|cache| cache.put(name.to_owned(), channel.clone(), ttl_ms(env)));
    Ok(channel)
}

pub async fn role(env: &Env, channel: &str, user_id: i64) -> ApiResult<Option<Role>> {
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
    ROLES.with(|cache| cache.put(key, role, ttl_ms(env)));
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
        Some(p) => Some(Caller {
            is_admin: p.is_admin,
            role: if p.is_admin {
                None
            } else {
                role(env, &channel.name, p.user_id).await?
            },
            scope: p.scope_for(&channel.name),
        }),
        None => None,
    };
    match decide(action, channel.private, caller) {
        Decision::Allow => Ok(()),
        Decision::Unauthenticated => Err(ApiError::unauthenticated()),
        Decision::Forbidden => Err(ApiError::forbidden(match action {
            Action::Read => "your key has no access to this channel",
            Action::Write | Action::Manage => {
                "only an owner of this channel, with a key that may write to it, may change it"
            }
        })),
    }
}

/// The signed-in caller; 401 when the request carries no key.
pub async fn require_principal(
    env: &Env,
    req: &Request,
    path_token: Option<&str>,
) -> ApiResult<Principal> {
    principal(env, req, path_token)
        .await?
        .ok_or_else(ApiError::unauthenticated)
}

/// The caller and channel of a request that acts on a channel: a key is required, the channel
/// must exist and the caller must be allowed `action` on it.
pub async fn authorize_change(
    env: &Env,
    req: &Request,
    path_token: Option<&str>,
    channel_name: &str,
    action: Action,
) -> ApiResult<(Principal, Channel)> {
    let caller = require_principal(env, req, path_token).await?;
    let channel = find_channel(env, channel_name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no channel named '{channel_name}'")))?;
    authorize(env, action, &channel, Some(&caller)).await?;
    Ok((caller, channel))
}
