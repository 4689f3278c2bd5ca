//! The management API: channels, members and keys, as JSON over HTTP, authorized by the same
//! policy as every other route.
//!
//! Its routes, who may call each and what they answer: `docs/api.md`.
//!
//! Every answer is `Cache-Control: no-store` (see [`json`]): a new key, or what a caller may
//! see, must not outlive the request in any cache.

use serde::{Deserialize, Serialize};
use worker::{Date, Response};

use super::auth::{forget_channel, forget_key, key_channels, Channel, Hiding, KeyInfo, Principal};
use super::context::RequestContext;
use super::error::{internal, json, ApiError, ApiResult, ErrorCode};
use crate::access::{decide, listed, Action, Decision, Role};
use crate::consistency::{CheckOptions, CheckReport};
use crate::directory::{self, ChannelRoleRow, KeyListRow, RoleRow, UserRow};
use crate::keys::{key_hash, key_prefix, new_key};
use crate::mirror::{MirrorRules, MirrorRulesJson};
use crate::names::{check_channel_name, ChannelName};

/// A channel of the caller's and their role in it: a row of [`directory::memberships_of`],
/// answered as it is read.
#[derive(Deserialize, Serialize)]
struct Membership {
    channel: String,
    role: String,
}

#[derive(Serialize)]
struct WhoAmI {
    user: String,
    is_admin: bool,
    key: KeyInfo,
    channels: Vec<Membership>,
}

/// The caller, and their channels as far as their key reaches: a key limited to some channels
/// names no other.
pub async fn whoami(ctx: &RequestContext) -> ApiResult<Response> {
    let caller = ctx.signed_in().await?;
    let memberships: Vec<Membership> = ctx
        .db()?
        .all(directory::memberships_of(caller.user_id))
        .await?;
    let holder = caller.holder();
    let channels = memberships
        .into_iter()
        .filter(|m| holder.reaches(&m.channel))
        .collect();
    json(
        200,
        &WhoAmI {
            user: caller.name,
            is_admin: caller.is_admin,
            key: caller.key,
            channels,
        },
    )
}

#[derive(Serialize)]
struct Channels {
    channels: Vec<ListedChannel>,
}

/// A channel as the channel list shows it: with a mirror's rules, the caller's role and the
/// figures its index last reported (see `channel_index::browse`), so the list costs one D1
/// query.
#[derive(Serialize)]
struct ListedChannel {
    #[serde(flatten)]
    channel: Channel,
    role: Option<String>,
    package_count: i64,
    /// When the newest package was indexed (milliseconds since the epoch).
    last_upload: Option<u64>,
}

/// Every channel the caller may read, as [`listed`] decides it row by row.
pub async fn list_channels(ctx: &RequestContext) -> ApiResult<Response> {
    let caller = ctx.caller().await?;
    let rows: Vec<ChannelRoleRow> = ctx
        .db()?
        .all(directory::channels_with_role(
            caller.as_ref().map(|p| p.user_id),
        ))
        .await?;
    let holder = caller.as_ref().map(Principal::holder);
    let channels = rows
        .into_iter()
        .filter(|row| {
            let role = row.role.as_deref().and_then(Role::parse);
            listed(holder.as_ref(), &row.name, row.private != 0, role)
        })
        .map(|row| {
            Ok(ListedChannel {
                channel: Channel {
                    mirror: Channel::mirror_rules(&row.name, row.mirror.as_deref())?,
                    ..Channel::from_columns(row.name, row.private, row.created_at)
                },
                role: row.role,
                package_count: row.package_count,
                last_upload: row.last_upload.map(|at| at as u64),
            })
        })
        .collect::<ApiResult<_>>()?;
    json(200, &Channels { channels })
}

#[derive(Deserialize)]
struct NewChannel {
    name: String,
    #[serde(default)]
    private: bool,
    /// Makes it a mirror of an upstream channel, by these rules.
    mirror: Option<MirrorRulesJson>,
}

pub async fn create_channel(ctx: &mut RequestContext) -> ApiResult<Response> {
    let caller = ctx.signed_in().await?;
    caller.require_unlimited_key()?;
    let body: NewChannel = ctx.json_body().await?;
    check_channel_name(&body.name).map_err(ApiError::invalid_name)?;
    let mirror = match &body.mirror {
        Some(rules) => Some(
            MirrorRules::from_parts(rules, ctx.config().mirror_allow_http)
                .map_err(|e| ApiError::bad_request(e.0))?
                .to_json(),
        ),
        None => None,
    };
    let mirror_text = mirror
        .as_ref()
        .map(|rules| serde_json::to_string(rules).expect("rules serialize"));
    let now = Date::now().as_millis();
    let db = ctx.db()?;
    let created = db
        .returns_row(directory::create_channel(
            &body.name,
            body.private,
            mirror_text.as_deref(),
            now as i64,
        ))
        .await?;
    if !created {
        return Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!("a channel named '{}' exists", body.name),
        ));
    }
    // The channel exists and the caller becomes its owner: this cannot be refused.
    let owner = directory::put_member(&body.name, caller.user_id, Role::Owner);
    db.returns_row(owner).await?;
    forget_channel(&body.name);
    super::log::change("channel create", &caller.name, &body.name, 201);
    json(
        201,
        &Channel {
            mirror,
            ..Channel::from_columns(body.name, body.private.into(), now as f64)
        },
    )
}

#[derive(Serialize)]
struct ChannelDetails {
    #[serde(flatten)]
    channel: Channel,
    your_role: Option<&'static str>,
    /// What the caller may do here by the access policy (key limits included), so that the web
    /// app shows only the controls that will work.
    you_may: Permissions,
}

#[derive(Serialize)]
struct Permissions {
    /// Upload and delete packages.
    write: bool,
    /// Members, visibility, deleting the channel.
    manage: bool,
}

pub async fn get_channel(ctx: &RequestContext, name: &ChannelName) -> ApiResult<Response> {
    let (caller, channel) = ctx.authorize(name, Action::Read, Hiding::NotFound).await?;
    let role = match &caller {
        Some(p) => ctx.role(name, p.user_id).await?,
        None => None,
    };
    let holder = caller.as_ref().map(|p| p.holder().on(name, role));
    let may = |action| decide(action, channel.private, holder) == Decision::Allow;
    let you_may = Permissions {
        // A mirror takes no uploads, whoever asks.
        write: may(Action::Write) && channel.mirror.is_none(),
        manage: may(Action::Manage),
    };
    json(
        200,
        &ChannelDetails {
            your_role: role.map(Role::as_str),
            you_may,
            channel,
        },
    )
}

/// What `PATCH /api/v1/channels/<c>` changes: the visibility, a mirror's rules, or both.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelSettings {
    private: Option<bool>,
    mirror: Option<MirrorRulesJson>,
}

pub async fn update_channel(ctx: &mut RequestContext, name: &ChannelName) -> ApiResult<Response> {
    let (caller, channel) = ctx.authorize_change(name, Action::Manage).await?;
    let body: ChannelSettings = ctx.json_body().await?;
    if body.private.is_none() && body.mirror.is_none() {
        return Err(ApiError::bad_request(
            "nothing to change: send \"private\", \"mirror\" or both",
        ));
    }
    // The next read of each subdir filters it again by the new rules (its index remembers the
    // rules it was filtered by).
    let mirror = match (&body.mirror, &channel.mirror) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(ApiError::bad_request(format!(
                "channel '{name}' is no mirror: it has no rules to change"
            )))
        }
        (Some(rules), Some(_)) => Some(
            MirrorRules::from_parts(rules, ctx.config().mirror_allow_http)
                .map_err(|e| ApiError::bad_request(e.0))?
                .to_json(),
        ),
    };
    let private = body.private.unwrap_or(channel.private);
    let mirror_text = mirror
        .as_ref()
        .map(|rules| serde_json::to_string(rules).expect("rules serialize"));
    let updated = ctx
        .db()?
        .returns_row(directory::set_channel_settings(
            name,
            private,
            mirror_text.as_deref(),
        ))
        .await?;
    forget_channel(name);
    if !updated {
        return Err(ApiError::not_found(format!("no channel named '{name}'")));
    }
    super::log::change("channel update", &caller.name, name, 200);
    json(
        200,
        &Channel {
            private,
            mirror: mirror.or(channel.mirror.clone()),
            ..channel
        },
    )
}

#[derive(Serialize)]
struct ChannelDeleted<'a> {
    deleted: &'a str,
    objects_removed: u64,
}

/// Takes the channel out of service in D1 (no one is served from it from then on), removes its
/// index and objects, and only then its row. A deletion cut short leaves the row, marked, so
/// the same request finishes it, and the name cannot be taken while old objects remain.
pub async fn delete_channel(ctx: &RequestContext, name: &ChannelName) -> ApiResult<Response> {
    let (caller, channel) = ctx.authorize_deletion(name).await?;
    let db = ctx.db()?;
    let now = Date::now().as_millis() as i64;
    db.returns_row(directory::begin_channel_deletion(name, now))
        .await?;
    forget_channel(name);
    let removed = ctx
        .channel_index(&channel.name)?
        .destroy(&channel.name)
        .await?;
    db.batch(directory::delete_channel(name)).await?;
    forget_channel(name);
    super::log::change("channel delete", &caller.name, name, 200);
    json(
        200,
        &ChannelDeleted {
            deleted: name,
            objects_removed: removed.objects,
        },
    )
}

/// A member of a channel and their role: a row of [`directory::members`], answered as it is
/// read.
#[derive(Deserialize, Serialize)]
struct Member {
    user: String,
    role: String,
}

#[derive(Serialize)]
struct Members {
    members: Vec<Member>,
}

pub async fn list_members(ctx: &RequestContext, name: &ChannelName) -> ApiResult<Response> {
    ctx.authorize_change(name, Action::Manage).await?;
    let members: Vec<Member> = ctx.db()?.all(directory::members(name)).await?;
    json(200, &Members { members })
}

async fn user_id(ctx: &RequestContext, user: &str) -> ApiResult<i64> {
    let row: Option<UserRow> = ctx.db()?.first(directory::user_by_name(user)).await?;
    row.map(|row| row.id)
        .ok_or_else(|| ApiError::not_found(format!("no user named '{user}'")))
}

/// Why a guarded membership change returned no row, read from D1 as it is now.
async fn membership_refusal(
    ctx: &RequestContext,
    channel: &str,
    user: &str,
    user_id: i64,
) -> ApiResult<ApiError> {
    let db = ctx.db()?;
    let exists = db.returns_row(directory::channel(channel)).await?;
    let role: Option<RoleRow> = db.first(directory::role(channel, user_id)).await?;
    let role = role.and_then(|row| Role::parse(&row.role));
    Ok(directory::membership_refusal(channel, user, exists, role))
}

#[derive(Deserialize)]
struct NewRole {
    role: String,
}

#[derive(Serialize)]
struct MemberPut<'a> {
    channel: &'a str,
    user: &'a str,
    role: &'static str,
}

#[derive(Serialize)]
struct MemberRemoved<'a> {
    channel: &'a str,
    user: &'a str,
    removed: bool,
}

pub async fn put_member(
    ctx: &mut RequestContext,
    name: &ChannelName,
    user: &str,
) -> ApiResult<Response> {
    let (caller, _) = ctx.authorize_change(name, Action::Manage).await?;
    let body: NewRole = ctx.json_body().await?;
    let role = Role::parse(&body.role)
        .ok_or_else(|| ApiError::bad_request("role must be 'owner', 'contributor' or 'member'"))?;
    let id = user_id(ctx, user).await?;
    let changed = ctx
        .db()?
        .returns_row(directory::put_member(name, id, role))
        .await?;
    if !changed {
        return Err(membership_refusal(ctx, name, user, id).await?);
    }
    forget_channel(name);
    super::log::change("member put", &caller.name, &format!("{name}/{user}"), 200);
    json(
        200,
        &MemberPut {
            channel: name,
            user,
            role: role.as_str(),
        },
    )
}

pub async fn remove_member(
    ctx: &RequestContext,
    name: &ChannelName,
    user: &str,
) -> ApiResult<Response> {
    let (caller, _) = ctx.authorize_change(name, Action::Manage).await?;
    let id = user_id(ctx, user).await?;
    let removed = ctx
        .db()?
        .returns_row(directory::remove_member(name, id))
        .await?;
    if !removed {
        return Err(membership_refusal(ctx, name, user, id).await?);
    }
    forget_channel(name);
    super::log::change(
        "member remove",
        &caller.name,
        &format!("{name}/{user}"),
        200,
    );
    json(
        200,
        &MemberRemoved {
            channel: name,
            user,
            removed: true,
        },
    )
}

/// A key as its owner sees it listed: never the secret.
#[derive(Serialize)]
struct ListedKey {
    id: i64,
    name: String,
    prefix: String,
    read_only: bool,
    channels: Option<Vec<String>>,
    created_at: u64,
    expires_at: Option<u64>,
    revoked: bool,
}

#[derive(Serialize)]
struct Keys {
    keys: Vec<ListedKey>,
}

/// The caller's keys; to a key limited to some channels, only itself, since the others' limits
/// name other channels.
pub async fn list_keys(ctx: &RequestContext) -> ApiResult<Response> {
    let caller = ctx.signed_in().await?;
    let rows: Vec<KeyListRow> = ctx.db()?.all(directory::keys(Some(&caller.name))).await?;
    let limited = caller.key.channels.is_some();
    let keys = rows
        .into_iter()
        .filter(|row| !limited || row.id == caller.key.id)
        .map(|row| ListedKey {
            id: row.id,
            name: row.name,
            prefix: row.prefix,
            read_only: row.read_only != 0,
            channels: key_channels(row.channels.as_deref()),
            created_at: row.created_at as u64,
            expires_at: row.expires_at.map(|at| at as u64),
            revoked: row.revoked_at.is_some(),
        })
        .collect();
    json(200, &Keys { keys })
}

#[derive(Deserialize)]
struct NewKey {
    #[serde(default = "default_key_name")]
    name: String,
    /// Milliseconds since the epoch.
    expires_at: Option<u64>,
    #[serde(default)]
    read_only: bool,
    channels: Option<Vec<String>>,
}

fn default_key_name() -> String {
    "default".into()
}

/// The new key, shown this once, and what it may do.
#[derive(Serialize)]
struct CreatedKey {
    key: String,
    info: KeyInfo,
}

/// The `id` a `RETURNING id` statement gives back.
#[derive(Deserialize)]
struct Id {
    id: i64,
}

pub async fn create_key(ctx: &mut RequestContext) -> ApiResult<Response> {
    let caller = ctx.signed_in().await?;
    caller.require_unlimited_key()?;
    let body: NewKey = ctx.json_body().await?;
    let now = Date::now().as_millis();
    if body.name.is_empty() || body.name.len() > 100 {
        return Err(ApiError::bad_request("a key name has 1 to 100 characters"));
    }
    if body.expires_at.is_some_and(|at| at <= now) {
        return Err(ApiError::bad_request(
            "expires_at must be in the future (milliseconds since the epoch)",
        ));
    }
    if let Some(channels) = &body.channels {
        if channels.is_empty() || channels.len() > 100 {
            return Err(ApiError::bad_request(
                "channels lists 1 to 100 channel names",
            ));
        }
        for channel in channels {
            check_channel_name(channel).map_err(ApiError::invalid_name)?;
        }
    }
    let key = new_key();
    let hash = key_hash(&key);
    let channels_json = body
        .channels
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(internal)?;
    let statement = directory::create_key(&directory::NewKey {
        user_id: caller.user_id,
        name: &body.name,
        hash: &hash,
        prefix: key_prefix(&key),
        now: now as i64,
        expires_at: body.expires_at.map(|at| at as i64),
        read_only: body.read_only,
        channels_json: channels_json.as_deref(),
    });
    let Id { id } = ctx
        .db()?
        .first(statement)
        .await?
        .ok_or_else(|| internal("key insert returned no id"))?;
    super::log::change("key create", &caller.name, &id.to_string(), 201);
    let info = KeyInfo {
        id,
        name: body.name,
        read_only: body.read_only,
        channels: body.channels,
        expires_at: body.expires_at,
        workflow: None,
        publishers: Vec::new(),
    };
    json(201, &CreatedKey { key, info })
}

#[derive(Serialize)]
struct RevokedKey {
    id: i64,
    revoked: bool,
}

pub async fn revoke_key(ctx: &RequestContext, id: &str) -> ApiResult<Response> {
    let caller = ctx.signed_in().await?;
    caller.require_unlimited_key()?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request("a key id is a number"))?;
    // A site admin may revoke anyone's key; everyone else only their own.
    let owner = (!caller.is_admin).then_some(caller.user_id);
    let now = Date::now().as_millis() as i64;
    let revoked = ctx
        .db()?
        .returns_row(directory::revoke_key(id, owner, now))
        .await?;
    if !revoked {
        return Err(ApiError::not_found(format!(
            "you have no active key with id {id}"
        )));
    }
    forget_key(id);
    super::log::change("key revoke", &caller.name, &id.to_string(), 200);
    json(200, &RevokedKey { id, revoked: true })
}

#[derive(Serialize)]
struct ChannelStats<'a, S> {
    channel: &'a str,
    index: S,
    /// The R2 operations of the isolate that answered, per kind, of every channel.
    r2_operations: std::collections::BTreeMap<String, u64>,
    /// A mirror's upstream fetches of repodata.json and hits in the isolate that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    mirror: Option<super::mirror_counter::MirrorCounts>,
}

/// `GET /api/v1/channels/<c>/stats`: what the channel's index holds and the memory its Durable
/// Object has used. Site admins only: it is about the server, not the channel.
pub async fn channel_stats(ctx: &RequestContext, name: &ChannelName) -> ApiResult<Response> {
    let (_, channel) = ctx.authorize_change(name, Action::Inspect).await?;
    let index = ctx.channel_index(name)?.stats().await?;
    json(
        200,
        &ChannelStats {
            channel: name,
            index,
            r2_operations: super::r2_counter::counts(),
            mirror: channel
                .mirror
                .is_some()
                .then(|| super::mirror_counter::counts(name)),
        },
    )
}

#[derive(Serialize)]
struct Rebuilt<'a> {
    channel: &'a str,
    rebuilt: Vec<String>,
}

/// Rebuilds every artifact of a channel from its stored records (after a change to how they
/// are written, say); answers once all are written.
pub async fn rebuild_channel(ctx: &RequestContext, name: &ChannelName) -> ApiResult<Response> {
    let (caller, _) = ctx.authorize_change(name, Action::Repair).await?;
    let rebuilt = ctx.channel_index(name)?.rebuild(name).await?;
    super::log::change("rebuild", &caller.name, name, 200);
    json(
        200,
        &Rebuilt {
            channel: name,
            rebuilt,
        },
    )
}

#[derive(Serialize)]
struct Checked<'a> {
    channel: &'a str,
    #[serde(flatten)]
    report: CheckReport,
}

/// `POST /api/v1/channels/<c>/check`: the consistency check of a channel's objects, rows and
/// artifacts (see [`crate::consistency`]); with `?repair=true` it also fixes what it can.
pub async fn check_channel(ctx: &RequestContext, name: &ChannelName) -> ApiResult<Response> {
    let options =
        CheckOptions::from_query(ctx.req().url()?.query_pairs()).map_err(ApiError::bad_request)?;
    let action = if options.repair {
        Action::Repair
    } else {
        Action::Inspect
    };
    let (caller, _) = ctx.authorize_change(name, action).await?;
    let report = ctx.channel_index(name)?.check(name, options).await?;
    if options.repair {
        super::log::change("repair", &caller.name, name, 200);
    }
    json(
        200,
        &Checked {
            channel: name,
            report,
        },
    )
}
