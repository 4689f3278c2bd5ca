//! Who is calling, and what they may do on a channel.
//!
//! The key, the channel and the caller's role in it are read from D1 (through
//! [`crate::directory`]) and cached per isolate (see [`super::cache`]), so steady-state reads
//! cost no D1 round trip; what they allow is decided by [`crate::access`] alone. Handlers ask
//! through their [`RequestContext`].

use serde::Serialize;
use worker::Date;

use super::cache::{cached, IsolateCache};
use super::context::RequestContext;
use super::error::{ApiError, ApiResult};
use crate::access::{decide, hidden, Action, Decision, KeyHolder, Role};
use crate::directory::{self, ChannelRow, KeyRow, PublisherGrant, RoleRow, SessionRow};
use crate::keys::{has_key_shape, key_hash};
use crate::mirror::{self, MirrorRulesJson};
use crate::provenance::{Provenance, WorkflowRun};
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
    /// The CI run a key minted for a trusted publisher was minted for (`publisher`: the one of
    /// its first channel, or, once the caller is authorized on a channel, that channel's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<WorkflowRun>,
    /// For a minted key, the publishers it acts for, one per channel, each still registered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publishers: Vec<PublisherGrant>,
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
            minted: self.key.workflow.is_some(),
        }
    }

    /// Who this caller is as the publisher of a file: the user, the key's name, and the CI run
    /// a key minted for a trusted publisher was minted for.
    pub fn provenance(&self) -> Provenance {
        Provenance {
            user: self.name.clone(),
            key: self.key.name.clone(),
            workflow: self.key.workflow.clone(),
        }
    }

    /// The caller as authorized on `channel`: a minted key's run names the publisher that
    /// let it in there, so what it publishes records that publisher.
    fn on_channel(mut self, channel: &str) -> Self {
        let grant = self.key.publishers.iter().find(|g| g.channel == channel);
        if let (Some(run), Some(grant)) = (self.key.workflow.as_mut(), grant) {
            run.publisher = grant.publisher;
        }
        self
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
    /// Its deletion has begun: it is served to no one, and its name stays taken until its
    /// objects are gone.
    #[serde(skip)]
    pub deleting: bool,
    /// A mirror channel's rules; absent for a channel that takes uploads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorRulesJson>,
}

impl Channel {
    /// From D1's columns, which give flags as integers and times as floats.
    pub fn from_columns(name: String, private: i64, created_at: f64) -> Self {
        Self {
            name,
            private: private != 0,
            created_at: created_at as u64,
            deleting: false,
            mirror: None,
        }
    }

    fn from_row(row: ChannelRow) -> ApiResult<Self> {
        Ok(Self {
            deleting: row.deleting_at.is_some(),
            mirror: Self::mirror_rules(&row.name, row.mirror.as_deref())?,
            ..Self::from_columns(row.name, row.private, row.created_at)
        })
    }

    /// A mirror's rules from D1's column. Fails rather than read unreadable rules as none:
    /// that would open the channel to uploads.
    pub fn mirror_rules(name: &str, text: Option<&str>) -> ApiResult<Option<MirrorRulesJson>> {
        text.map(|text| {
            serde_json::from_str(text).map_err(|e| {
                worker::console_error!("channel {name}: unreadable mirror rules: {e}");
                ApiError::internal()
            })
        })
        .transpose()
    }
}

thread_local! {
    static KEYS: IsolateCache<Principal> = IsolateCache::default();
    static CHANNELS: IsolateCache<Channel> = IsolateCache::default();
    static ROLES: IsolateCache<Role> = IsolateCache::default();
}

/// Drops what this isolate cached about a channel, after a change made through the API.
pub fn forget_channel(channel: &str) {
    CHANNELS.with(|cache| cache.borrow_mut().forget(channel));
    let prefix = format!("{channel}\n");
    ROLES.with(|cache| {
        cache
            .borrow_mut()
            .forget_where(|key, _| !key.starts_with(&prefix))
    });
}

/// Drops a session this isolate verified, after it ended through the API.
pub fn forget_session(hash: &str) {
    KEYS.with(|cache| cache.borrow_mut().forget(&session_cache_key(hash)));
}

/// Sessions are cached with the keys, so that revoking a key forgets its sessions too.
fn session_cache_key(hash: &str) -> String {
    format!("session:{hash}")
}

/// Drops a key this isolate verified, and the sessions started with it, after it was revoked
/// through the API.
pub fn forget_key(key_id: i64) {
    KEYS.with(|cache| {
        cache
            .borrow_mut()
            .forget_where(|_, principal| principal.is_none_or(|p| p.key.id != key_id))
    });
}

/// Drops the keys this isolate verified that were minted for a publisher, after it was removed
/// through the API.
pub fn forget_publisher(publisher_id: i64) {
    KEYS.with(|cache| {
        cache.borrow_mut().forget_where(|_, principal| {
            principal.is_none_or(|p| !p.key.publishers.iter().any(|g| g.publisher == publisher_id))
        })
    });
}

/// The user behind a key; 401 for a key that is unknown, revoked or expired. Expiry is checked
/// on every call, cached or not.
pub(super) async fn verify_key(ctx: &RequestContext, key: &str) -> ApiResult<Principal> {
    let refused = || ApiError::invalid_key("invalid, expired or revoked API key");
    if !has_key_shape(key) {
        return Err(refused());
    }
    let hash = key_hash(key);
    let principal = cached(&KEYS, hash.clone(), ctx.config(), async {
        let row: Option<KeyRow> = ctx.db()?.first(directory::key_by_hash(&hash)).await?;
        Ok(row.map(principal_of))
    })
    .await?;
    let now = Date::now().as_millis();
    principal.filter(|p| p.live_at(now)).ok_or_else(refused)
}

/// The user behind the key with this id, read from D1 now (not from the cache, so a key
/// revoked a moment ago is seen as such); 401 for a key that is revoked or expired.
pub async fn verify_key_id(ctx: &RequestContext, id: i64) -> ApiResult<Principal> {
    let row: Option<KeyRow> = ctx.db()?.first(directory::key_by_id(id)).await?;
    row.map(principal_of)
        .filter(|p| p.live_at(Date::now().as_millis()))
        .ok_or_else(|| {
            ApiError::invalid_key("the key that staged this upload is revoked or expired")
        })
}

/// The user behind a session id (the hash of which D1 holds), with the limits of the key the
/// session was started with; `None` for a session that is unknown, ended, expired, or whose
/// key was revoked or expired. Expiry is checked on every call, cached or not.
pub(super) async fn verify_session(ctx: &RequestContext, id: &str) -> ApiResult<Option<Principal>> {
    let hash = session_hash(id);
    let principal = cached(&KEYS, session_cache_key(&hash), ctx.config(), async {
        let row: Option<SessionRow> = ctx.db()?.first(directory::session_by_hash(&hash)).await?;
        Ok(row.map(|row| {
            let principal = principal_of(row.key);
            Principal {
                // An identity's session that ADMIN_IDENTITIES named when it started.
                is_admin: principal.is_admin || row.site_admin != 0,
                session_expires_at: Some(row.session_expires_at as u64),
                ..principal
            }
        }))
    })
    .await?;
    let now = Date::now().as_millis();
    Ok(principal.filter(|p| p.live_at(now)))
}

fn principal_of(row: KeyRow) -> Principal {
    let minted = row.minted_for();
    // A minted key reaches the channels of its publishers that are still registered.
    let channels = match &minted {
        Some(minted) => Some(
            minted
                .publishers
                .iter()
                .map(|g| g.channel.clone())
                .collect(),
        ),
        None => key_channels(row.channels.as_deref()),
    };
    // A minted key acts for its publishers, never as a site admin.
    let is_admin = row.is_admin != 0 && minted.is_none();
    let (workflow, publishers) = match minted {
        Some(minted) => {
            let run = WorkflowRun {
                publisher: minted.publishers.first().map_or(0, |g| g.publisher),
                issuer: minted.issuer,
                repository: minted.repository,
                workflow: minted.workflow,
                run_id: minted.run_id,
                git_ref: minted.git_ref,
                commit: minted.commit,
                environment: minted.environment,
            };
            (Some(run), minted.publishers)
        }
        None => (None, Vec::new()),
    };
    Principal {
        user_id: row.user_id,
        name: row.name,
        is_admin,
        key: KeyInfo {
            id: row.key_id,
            name: row.key_name,
            read_only: row.read_only != 0,
            channels,
            expires_at: row.expires_at.map(|at| at as u64),
            workflow,
            publishers,
        },
        session_expires_at: None,
    }
}

/// How a caller who may not read a channel is refused: the same whether it exists or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hiding {
    /// The API and the pages: 404.
    NotFound,
    /// Channel file URLs: 401 with the challenge to an anonymous caller (clients send their
    /// credentials only when challenged), 404 to anyone signed in.
    Challenge,
}

impl Hiding {
    fn refusal(self, signed_in: bool) -> ApiError {
        if self == Self::Challenge && !signed_in {
            ApiError::unauthenticated()
        } else {
            ApiError::not_found("no such channel, or it is private and you may not read it")
        }
    }
}

/// Which channels a lookup finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finding {
    /// Channels in service.
    Live,
    /// Channels being deleted too: only deleting one again may reach them.
    Deleting,
}

impl RequestContext {
    /// The channel named `name`, as D1 holds it (through the isolate cache), being deleted or not.
    async fn channel_row(&self, name: &str) -> ApiResult<Option<Channel>> {
        cached(&CHANNELS, name.to_owned(), self.config(), async {
            let row: Option<ChannelRow> = self.db()?.first(directory::channel(name)).await?;
            row.map(Channel::from_row).transpose()
        })
        .await
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

    /// The channel named `name` and the request's caller (`None`: anonymous), if the access
    /// policy allows them `action` on it. A bad key is a 401 before anything else; a channel
    /// the caller may not read is refused as `hiding` says, exactly as a missing one.
    pub async fn authorize(
        &self,
        name: &str,
        action: Action,
        hiding: Hiding,
    ) -> ApiResult<(Option<Principal>, Channel)> {
        let principal = self.caller().await?;
        self.authorize_as(principal, name, action, hiding, Finding::Live)
            .await
    }

    /// [`Self::authorize`] for a request that must carry a key (401 without one).
    pub async fn authorize_change(
        &self,
        name: &str,
        action: Action,
    ) -> ApiResult<(Principal, Channel)> {
        let principal = self.signed_in().await?;
        self.authorize_key(principal, name, action).await
    }

    /// [`Self::authorize_change`] for a caller known otherwise than by this request's
    /// credentials (the key an upload ticket names).
    pub async fn authorize_key(
        &self,
        principal: Principal,
        name: &str,
        action: Action,
    ) -> ApiResult<(Principal, Channel)> {
        let (principal, channel) = self
            .authorize_as(
                Some(principal),
                name,
                action,
                Hiding::NotFound,
                Finding::Live,
            )
            .await?;
        Ok((principal.expect("given"), channel))
    }

    /// [`Self::authorize_change`] of the channel's deletion, which also finds a channel whose
    /// deletion stopped half-way, so that it can be finished.
    pub async fn authorize_deletion(&self, name: &str) -> ApiResult<(Principal, Channel)> {
        let principal = self.signed_in().await?;
        let (principal, channel) = self
            .authorize_as(
                Some(principal),
                name,
                Action::Manage,
                Hiding::NotFound,
                Finding::Deleting,
            )
            .await?;
        Ok((principal.expect("given"), channel))
    }

    async fn authorize_as(
        &self,
        principal: Option<Principal>,
        name: &str,
        action: Action,
        hiding: Hiding,
        finding: Finding,
    ) -> ApiResult<(Option<Principal>, Channel)> {
        let refusal = || hiding.refusal(principal.is_some());
        let channel = match self.channel_row(name).await? {
            Some(channel) if !channel.deleting || finding == Finding::Deleting => channel,
            _ => return Err(refusal()),
        };
        let caller = match &principal {
            // A site admin's role changes nothing, nor a minted key's user's: no D1 read for it.
            Some(p) if !p.holder().role_matters() => Some(p.holder().on(&channel.name, None)),
            Some(p) => {
                let role = self.role(&channel.name, p.user_id).await?;
                Some(p.holder().on(&channel.name, role))
            }
            None => None,
        };
        if hidden(channel.private, caller) {
            return Err(refusal());
        }
        match decide(action, channel.private, caller) {
            Decision::Allow => match channel.mirror.as_ref().and(mirror::refusal(action)) {
                Some(refused) => Err(refused),
                None => Ok((principal.map(|p| p.on_channel(&channel.name)), channel)),
            },
            Decision::Unauthenticated => Err(ApiError::unauthenticated()),
            Decision::Forbidden => Err(ApiError::forbidden(match action {
                _ if principal.as_ref().is_some_and(|p| p.holder().minted) => {
                    "a key minted for a trusted publisher only reads and uploads, and only on \
                     the channels of its publishers"
                }
                Action::Read => "your key has no access to this channel",
                Action::Write | Action::Delete | Action::Manage => {
                    "only an owner of this channel, with a key that may write to it, may change it"
                }
                Action::Inspect | Action::Repair => {
                    "this is for site admins, with a key that may do it on this channel"
                }
            })),
        }
    }
}
