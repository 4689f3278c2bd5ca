//! Who is calling, and what they may do on a channel.
//!
//! The key, the channel and the caller's role in it are read from D1 (through
//! [`crate::directory`]) and cached per isolate (see [`super::cache`]), so steady-state reads
//! cost no D1 round trip; what they allow is decided by [`crate::access`] alone. Handlers ask
//! through their [`RequestContext`].

use serde::Serialize;
use worker::Date;

use super::cache::{cached, TtlCache};
use super::context::RequestContext;
use super::error::{ApiError, ApiResult, ErrorCode};
use crate::access::{decide, Action, Decision, KeyHolder, Role};
use crate::directory::{self, ChannelRow, KeyRow, RoleRow, SessionRow};
use crate::keys::key_hash;
use crate::session::session_hash;

/// A signed-in user, and the key they signed in with.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: i64,
    pub name: String,
    pub is_admin: bool,
    pub key: KeyInfo,
    /// When the browser session this caller signed in with ends (milliseconds since the
    /// epoch); `None` when the request carried the key itself.
    pub session_expires_at: Option<u64>,
}

/// What is known of a key besides its owner.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub id: i64,
    pub name: String,
    pub read_only: bool,
    /// The channels the key is limited to; `None`: no limit.
    pub channels: Option<Vec<String>>,
    /// Milliseconds since the epoch.
    pub expires_at: Option<u64>,
}

/// The channel list of a key as D1 stores it (a JSON array; NULL: no limit).
pub fn key_channels(stored: Option<&str>) -> Option<Vec<String>> {
    stored.and_then(|text| serde_json::from_str(text).ok())
}

impl Principal {
    pub fn holder(&self) -> KeyHolder<'_> {
        KeyHolder {
            is_admin: self.is_admin,
            read_only: self.key.read_only,
            channels: self.key.channels.as_deref(),
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

    /// Creating channels and managing keys (see [`KeyHolder::may_manage_account`]); 403
    /// otherwise.
    pub fn require_unlimited_key(&self) -> ApiResult<()> {
        if self.holder().may_manage_account() {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "this needs a key without limits; this one is read-only or limited to some channels",
            ))
        }
    }

    /// Whether neither the key nor the session it signed in with has expired at `now`.
    fn live_at(&self, now: u64) -> bool {
        self.key.expires_at.is_none_or(|at| at > now)
            && self.session_expires_at.is_none_or(|at| at > now)
    }
}

/// A channel as D1 knows it, and as the API describes it.
#[derive(Debug, Clone, Serialize)]
pub struct Channel {
    pub name: String,
    pub private: bool,
    /// Milliseconds since the epoch.
    pub created_at: u64,
}

impl Channel {
    /// From D1's columns, which give flags as integers and times as floats.
    pub fn from_columns(name: String, private: i64, created_at: f64) -> Self {
        Self {
            name,
            private: private != 0,
            created_at: created_at as u64,
        }
    }
}

thread_local! {
    static KEYS: TtlCache<Principal> = TtlCache::new();
    static CHANNELS: TtlCache<Channel> = TtlCache::new();
    static ROLES: TtlCache<Role> = TtlCache::new();
}

/// Drops what this isolate cached about a channel, after a change made through the API.
pub fn forget_channel(channel: &str) {
    CHANNELS.with(|cache| cache.forget(channel));
    let prefix = format!("{channel}\n");
    ROLES.with(|cache| cache.forget_where(|key, _| !key.starts_with(&prefix)));
}

/// Drops a session this isolate verified, after it ended through the API.
pub fn forget_session(hash: &str) {
    KEYS.with(|cache| cache.forget(&session_cache_key(hash)));
}

/// Sessions are cached with the keys, so that revoking a key forgets its sessions too.
fn session_cache_key(hash: &str) -> String {
    format!("session:{hash}")
}

/// Drops a key this isolate verified, and the sessions started with it, after it was revoked
/// through the API.
pub fn forget_key(key_id: i64) {
    KEYS.with(|cache| {
        cache.forget_where(|_, principal| principal.as_ref().is_none_or(|p| p.key.id != key_id))
    });
}

/// The user behind a key; 401 for a key that is unknown, revoked or expired. Expiry is checked
/// on every call, cached or not.
pub(super) async fn verify_key(ctx: &RequestContext, key: &str) -> ApiResult<Principal> {
    let hash = key_hash(key);
    let principal = cached(&KEYS, hash.clone(), ctx.config(), async {
        let row: Option<KeyRow> = ctx.db()?.first(directory::key_by_hash(&hash)).await?;
        Ok(row.map(principal_of))
    })
    .await?;
    let now = Date::now().as_millis();
    principal
        .filter(|p| p.live_at(now))
        .ok_or_else(|| ApiError::invalid_key("invalid, expired or revoked API key"))
}

/// The user behind a session id (the hash of which D1 holds), with the limits of the key the
/// session was started with; `None` for a session that is unknown, ended, expired, or whose
/// key was revoked or expired. Expiry is checked on every call, cached or not.
pub(super) async fn verify_session(ctx: &RequestContext, id: &str) -> ApiResult<Option<Principal>> {
    let hash = session_hash(id);
    let principal = cached(&KEYS, session_cache_key(&hash), ctx.config(), async {
        let row: Option<SessionRow> = ctx.db()?.first(directory::session_by_hash(&hash)).await?;
        Ok(row.map(|row| Principal {
            session_expires_at: Some(row.session_expires_at as u64),
            ..principal_of(row.key())
        }))
    })
    .await?;
    let now = Date::now().as_millis();
    Ok(principal.filter(|p| p.live_at(now)))
}

fn principal_of(row: KeyRow) -> Principal {
    Principal {
        user_id: row.user_id,
        name: row.name,
        is_admin: row.is_admin != 0,
        key: KeyInfo {
            id: row.key_id,
            name: row.key_name,
            read_only: row.read_only != 0,
            channels: key_channels(row.channels.as_deref()),
            expires_at: row.expires_at.map(|at| at as u64),
        },
        session_expires_at: None,
    }
}

impl RequestContext {
    /// The channel named `name`; 404 when there is none.
    pub async fn channel(&self, name: &str) -> ApiResult<Channel> {
        cached(&CHANNELS, name.to_owned(), self.config(), async {
            let row: Option<ChannelRow> = self.db()?.first(directory::channel(name)).await?;
            Ok(row.map(|row| Channel::from_columns(row.name, row.private, row.created_at)))
        })
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no channel named '{name}'")))
    }

    /// The role of `user_id` in `channel`, if any.
    pub async fn role(&self, channel: &str, user_id: i64) -> ApiResult<Option<Role>> {
        cached(
            &ROLES,
            format!("{channel}\n{user_id}"),
            self.config(),
            async {
                let row: Option<RoleRow> =
                    self.db()?.first(directory::role(channel, user_id)).await?;
                Ok(row.and_then(|row| Role::parse(&row.role)))
            },
        )
        .await
    }

    /// Applies the access policy to the caller, and returns the caller. The credentials are
    /// checked even where none are needed: a bad key is an error to report, not to ignore.
    pub async fn authorize(
        &self,
        action: Action,
        channel: &Channel,
    ) -> ApiResult<Option<Principal>> {
        let principal = self.caller().await?;
        let caller = match &principal {
            // A site admin's role changes nothing: no D1 read for it.
            Some(p) if p.is_admin => Some(p.holder().on(&channel.name, None)),
            Some(p) => {
                let role = self.role(&channel.name, p.user_id).await?;
                Some(p.holder().on(&channel.name, role))
            }
            None => None,
        };
        match decide(action, channel.private, caller) {
            Decision::Allow => Ok(principal),
            Decision::Unauthenticated => Err(ApiError::unauthenticated()),
            Decision::Forbidden => Err(ApiError::forbidden(match action {
                Action::Read => "your key has no access to this channel",
                Action::Write | Action::Manage => {
                    "only an owner of this channel, with a key that may write to it, may change it"
                }
            })),
        }
    }

    /// The channel named `name` if the caller may read it. Otherwise a 404 that says the same
    /// whether the channel is missing or private, so nothing tells whether it exists. A bad
    /// key is still a 401, before the channel is looked at.
    pub async fn readable_channel(&self, name: &str) -> ApiResult<Channel> {
        self.caller().await?;
        let hidden =
            || ApiError::not_found("no such channel, or it is private and you may not read it");
        let channel = match self.channel(name).await {
            Err(error) if error.code == ErrorCode::NotFound => return Err(hidden()),
            found => found?,
        };
        match self.authorize(Action::Read, &channel).await {
            Ok(_) => Ok(channel),
            Err(error)
                if matches!(
                    error.code,
                    ErrorCode::Unauthenticated | ErrorCode::Forbidden
                ) =>
            {
                Err(hidden())
            }
            Err(error) => Err(error),
        }
    }

    /// The caller and channel of a request that acts on a channel: a key is required, the
    /// channel must exist and the caller must be allowed `action` on it.
    pub async fn authorize_change(
        &self,
        channel_name: &str,
        action: Action,
    ) -> ApiResult<(Principal, Channel)> {
        let caller = self.signed_in().await?;
        let channel = self.channel(channel_name).await?;
        self.authorize(action, &channel).await?;
        Ok((caller, channel))
    }
}
