//! The management API: channels, members and keys, as JSON over HTTP, authorized by the same
//! policy as every other route.
//!
//! | method | path                                  | who                          |
//! |--------|---------------------------------------|------------------------------|
//! | GET    | /api/v1/whoami                        | any valid key                |
//! | GET    | /api/v1/channels                      | anyone (lists what they may read) |
//! | POST   | /api/v1/channels                      | a key without limits         |
//! | GET    | /api/v1/channels/<c>                  | readers of the channel       |
//! | PATCH  | /api/v1/channels/<c>                  | owners (`{"private": bool}`) |
//! | DELETE | /api/v1/channels/<c>                  | owners                       |
//! | GET    | /api/v1/channels/<c>/members          | owners                       |
//! | PUT    | /api/v1/channels/<c>/members/<user>   | owners (`{"role": ...}`)     |
//! | DELETE | /api/v1/channels/<c>/members/<user>   | owners                       |
//! | GET    | /api/v1/keys                          | any valid key (own keys)     |
//! | POST   | /api/v1/keys                          | a key without limits         |
//! | DELETE | /api/v1/keys/<id>                     | a key without limits (own keys; admins any) |
//! | GET    | /api/v1/channels/<c>/stats            | site admins                  |

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::json;
use wasm_bindgen::JsValue;
use worker::{D1Database, Date, Env, Request, Response};

use super::auth::{
    authorize, authorize_change, find_channel, forget_channel, forget_key, principal,
    require_principal, role, KeyInfo, Principal,
};
use super::channel_index::ChannelIndexClient;
use super::error::{ApiError, ApiResult, ErrorCode};
use crate::access::{Action, Role};
use crate::keys::{key_hash, key_prefix, new_key};
use crate::names::check_channel_name;

const MAX_JSON_BODY: u64 = 64 * 1024;

fn db(env: &Env) -> ApiResult<D1Database> {
    Ok(env.d1("DB")?)
}

fn json_response(status: u16, value: &impl Serialize) -> ApiResult<Response> {
    Ok(Response::from_json(value)?.with_status(status))
}

/// Reads a small JSON body; 400 when it is not the expected shape.
async fn json_body<T: DeserializeOwned>(req: &mut Request) -> ApiResult<T> {
    let length: u64 = req
        .headers()
        .get("Content-Length")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if length > MAX_JSON_BODY {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            "the JSON body is larger than 64 KiB",
        ));
    }
    let text = req.text().await?;
    if text.len() as u64 > MAX_JSON_BODY {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            "the JSON body is larger than 64 KiB",
        ));
    }
    serde_json::from_str(&text)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

pub async fn whoami(env: &Env, req: &Request, path_token: Option<&str>) -> ApiResult<Response> {
    let caller = require_principal(env, req, path_token).await?;
    #[derive(Deserialize, Serialize)]
    struct Membership {
        channel: String,
        role: String,
    }
    let memberships: Vec<Membership> = db(env)?
        .prepare("SELECT channel, role FROM memberships WHERE user_id = ?1 ORDER BY channel")
        .bind(&[JsValue::from(caller.user_id as f64)])?
        .all()
        .await?
        .results()?;
    json_response(
        200,
        &json!({
            "user": caller.name,
            "is_admin": caller.is_admin,
            "key": caller.key,
            "channels": memberships,
        }),
    )
}

#[derive(Deserialize, Serialize)]
struct ChannelRow {
    name: String,
    private: i64,
    created_at: f64,
}

fn channel_json(row: &ChannelRow) -> serde_json::Value {
    json!({ "name": row.name, "private": row.private != 0, "created_at": row.created_at as u64 })
}

pub async fn list_channels(
    env: &Env,
    req: &Request,
    path_token: Option<&str>,
) -> ApiResult<Response> {
    let caller = principal(env, req, path_token).await?;
    let rows: Vec<ChannelRow> = match &caller {
        Some(p) if p.is_admin => db(env)?
            .prepare("SELECT name, private, created_at FROM channels ORDER BY name")
            .all()
            .await?
            .results()?,
        Some(p) => db(env)?
            .prepare(
                "SELECT name, private, created_at FROM channels WHERE private = 0 \
                 OR name IN (SELECT channel FROM memberships WHERE user_id = ?1) ORDER BY name",
            )
            .bind(&[JsValue::from(p.user_id as f64)])?
            .all()
            .await?
            .results()?,
        None => db(env)?
            .prepare(
                "SELECT name, private, created_at FROM channels WHERE private = 0 ORDER BY name",
            )
            .all()
            .await?
            .results()?,
    };
    // A key limited to some channels sees private channels only among those.
    let visible = |row: &&ChannelRow| {
        row.private == 0
            || caller
                .as_ref()
                .and_then(|p| p.key.channels.as_ref())
                .is_none_or(|scope| scope.contains(&row.name))
    };
    let channels: Vec<_> = rows.iter().filter(visible).map(channel_json).collect();
    json_response(200, &json!({ "channels": channels }))
}

#[derive(Deserialize)]
struct NewChannel {
    name: String,
    #[serde(default)]
    private: bool,
}

pub async fn create_channel(
    env: &Env,
    mut req: Request,
    path_token: Option<&str>,
) -> ApiResult<Response> {
    let caller = require_principal(env, &req, path_token).await?;
    caller.require_unlimited_key()?;
    let body: NewChannel = json_body(&mut req).await?;
    check_channel_name(&body.name).map_err(ApiError::invalid_name)?;
    let now = Date::now().as_millis() as f64;
    let db = db(env)?;
    let inserted = db
        .prepare(
            "INSERT INTO channels (name, private, created_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO NOTHING RETURNING name",
        )
        .bind(&[
            JsValue::from(body.name.as_str()),
            JsValue::from(i32::from(body.private)),
            JsValue::from(now),
        ])?
        .first::<String>(Some("name"))
        .await?;
    if inserted.is_none() {
        return Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!("a channel named '{}' exists", body.name),
        ));
    }
    db.prepare("INSERT INTO memberships (channel, user_id, role) VALUES (?1, ?2, 'owner')")
        .bind(&[
            JsValue::from(body.name.as_str()),
            JsValue::from(caller.user_id as f64),
        ])?
        .run()
        .await?;
    forget_channel(&body.name);
    super::log::change("channel create", &caller.name, &body.name, 201);
    json_response(
        201,
        &json!({ "name": body.name, "private": body.private, "created_at": now as u64 }),
    )
}

pub async fn get_channel(
    env: &Env,
    req: &Request,
    path_token: Option<&str>,
    name: &str,
) -> ApiResult<Response> {
    let channel = find_channel(env, name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no channel named '{name}'")))?;
    let caller = principal(env, req, path_token).await?;
    authorize(env, Action::Read, &channel, caller.as_ref()).await?;
    let your_role = match &caller {
        Some(p) => role(env, name, p.user_id).await?.map(Role::as_str),
        None => None,
    };
    json_response(
        200,
        &json!({
            "name": channel.name,
            "private": channel.private,
            "created_at": channel.created_at,
            "your_role": your_role,
        }),
    )
}

#[derive(Deserialize)]
struct ChannelSettings {
    private: bool,
}

pub async fn update_channel(
    env: &Env,
    mut req: Request,
    path_token: Option<&str>,
    name: &str,
) -> ApiResult<Response> {
    let (caller, channel) = authorize_change(env, &req, path_token, name, Action::Manage).await?;
    let body: ChannelSettings = json_body(&mut req).await?;
    db(env)?
        .prepare("UPDATE channels SET private = ?1 WHERE name = ?2")
        .bind(&[JsValue::from(i32::from(body.private)), JsValue::from(name)])?
        .run()
        .await?;
    forget_channel(name);
    super::log::change("channel update", &caller.name, name, 200);
    json_response(
        200,
        &json!({ "name": name, "private": body.private, "created_at": channel.created_at }),
    )
}

/// Removes the channel from D1 first (so it stops being served), then its index and objects.
pub async fn delete_channel(
    env: &Env,
    req: &Request,
    path_token: Option<&str>,
    name: &str,
) -> ApiResult<Response> {
    let (caller, channel) = authorize_change(env, req, path_token, name, Action::Manage).await?;
    let db = db(env)?;
    db.batch(vec![
        db.prepare("DELETE FROM memberships WHERE channel = ?1")
            .bind(&[JsValue::from(name)])?,
        db.prepare("DELETE FROM channels WHERE name = ?1")
            .bind(&[JsValue::from(name)])?,
    ])
    .await?;
    forget_channel(name);
    let removed = ChannelIndexClient::new(env, &channel.name)?
        .destroy(&channel.name)
        .await?;
    super::log::change("channel delete", &caller.name, name, 200);
    json_response(
        200,
        &json!({ "deleted": name, "objects_removed": removed.objects }),
    )
}

pub async fn list_members(
    env: &Env,
    req: &Request,
    path_token: Option<&str>,
    name: &str,
) -> ApiResult<Response> {
    authorize_change(env, req, path_token, name, Action::Manage).await?;
    #[derive(Deserialize, Serialize)]
    struct Member {
        user: String,
        role: String,
    }
    let members: Vec<Member> = db(env)?
        .prepare(
            "SELECT u.name AS user, m.role FROM memberships m JOIN users u ON u.id = m.user_id \
             WHERE m.channel = ?1 ORDER BY m.role DESC, u.name",
        )
        .bind(&[JsValue::from(name)])?
        .all()
        .await?
        .results()?;
    json_response(200, &json!({ "members": members }))
}

async fn user_id(env: &Env, user: &str) -> ApiResult<i64> {
    db(env)?
        .prepare("SELECT id FROM users WHERE name = ?1")
        .bind(&[JsValue::from(user)])?
        .first::<f64>(Some("id"))
        .await?
        .map(|id| id as i64)
        .ok_or_else(|| ApiError::not_found(format!("no user named '{user}'")))
}

/// Refuses a change that would leave the channel without an owner.
async fn keep_an_owner(env: &Env, channel: &str, user_id: i64) -> ApiResult<()> {
    let other_owners = db(env)?
        .prepare(
            "SELECT COUNT(*) AS n FROM memberships WHERE channel = ?1 AND role = 'owner' AND user_id != ?2",
        )
        .bind(&[JsValue::from(channel), JsValue::from(user_id as f64)])?
        .first::<f64>(Some("n"))
        .await?
        .unwrap_or(0.0);
    if other_owners < 1.0 && role(env, channel, user_id).await? == Some(Role::Owner) {
        return Err(ApiError::new(
            ErrorCode::LastOwner,
            "a channel must keep at least one owner",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
struct Membership {
    role: String,
}

pub async fn put_member(
    env: &Env,
    mut req: Request,
    path_token: Option<&str>,
    name: &str,
    user: &str,
) -> ApiResult<Response> {
    let (caller, _) = authorize_change(env, &req, path_token, name, Action::Manage).await?;
    let body: Membership = json_body(&mut req).await?;
    let role = Role::parse(&body.role)
        .ok_or_else(|| ApiError::bad_request("role must be 'owner' or 'member'"))?;
    let id = user_id(env, user).await?;
    if role != Role::Owner {
        keep_an_owner(env, name, id).await?;
    }
    db(env)?
        .prepare(
            "INSERT INTO memberships (channel, user_id, role) VALUES (?1, ?2, ?3) \
             ON CONFLICT (channel, user_id) DO UPDATE SET role = excluded.role",
        )
        .bind(&[
            JsValue::from(name),
            JsValue::from(id as f64),
            JsValue::from(role.as_str()),
        ])?
        .run()
        .await?;
    forget_channel(name);
    super::log::change("member put", &caller.name, &format!("{name}/{user}"), 200);
    json_response(
        200,
        &json!({ "channel": name, "user": user, "role": role.as_str() }),
    )
}

pub async fn remove_member(
    env: &Env,
    req: &Request,
    path_token: Option<&str>,
    name: &str,
    user: &str,
) -> ApiResult<Response> {
    let (caller, _) = authorize_change(env, req, path_token, name, Action::Manage).await?;
    let id = user_id(env, user).await?;
    keep_an_owner(env, name, id).await?;
    let removed = db(env)?
        .prepare("DELETE FROM memberships WHERE channel = ?1 AND user_id = ?2 RETURNING role")
        .bind(&[JsValue::from(name), JsValue::from(id as f64)])?
        .first::<String>(Some("role"))
        .await?;
    forget_channel(name);
    if removed.is_none() {
        return Err(ApiError::not_found(format!(
            "{user} is not a member of '{name}'"
        )));
    }
    super::log::change(
        "member remove",
        &caller.name,
        &format!("{name}/{user}"),
        200,
    );
    json_response(
        200,
        &json!({ "channel": name, "user": user, "removed": true }),
    )
}

#[derive(Deserialize, Serialize)]
struct KeyRow {
    id: i64,
    name: String,
    prefix: String,
    read_only: i64,
    channels: Option<String>,
    created_at: f64,
    expires_at: Option<f64>,
    revoked_at: Option<f64>,
}

pub async fn list_keys(env: &Env, req: &Request, path_token: Option<&str>) -> ApiResult<Response> {
    let caller = require_principal(env, req, path_token).await?;
    let rows: Vec<KeyRow> = db(env)?
        .prepare(
            "SELECT id, name, prefix, read_only, channels, created_at, expires_at, revoked_at \
             FROM api_keys WHERE user_id = ?1 ORDER BY id",
        )
        .bind(&[JsValue::from(caller.user_id as f64)])?
        .all()
        .await?
        .results()?;
    let keys: Vec<_> = rows
        .iter()
        .map(|row| {
            json!({
                "id": row.id,
                "name": row.name,
                "prefix": row.prefix,
                "read_only": row.read_only != 0,
                "channels": row.channels.as_deref().and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok()),
                "created_at": row.created_at as u64,
                "expires_at": row.expires_at.map(|v| v as u64),
                "revoked": row.revoked_at.is_some(),
            })
        })
        .collect();
    json_response(200, &json!({ "keys": keys }))
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

pub async fn create_key(
    env: &Env,
    mut req: Request,
    path_token: Option<&str>,
) -> ApiResult<Response> {
    let caller: Principal = require_principal(env, &req, path_token).await?;
    caller.require_unlimited_key()?;
    let body: NewKey = json_body(&mut req).await?;
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
    let channels_json = body.channels.as_ref().map(|c| json!(c).to_string());
    let id = db(env)?
        .prepare(
            "INSERT INTO api_keys (user_id, name, key_hash, prefix, created_at, expires_at, read_only, channels) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
        )
        .bind(&[
            JsValue::from(caller.user_id as f64),
            JsValue::from(body.name.as_str()),
            JsValue::from(key_hash(&key)),
            JsValue::from(key_prefix(&key)),
            JsValue::from(now as f64),
            body.expires_at.map_or(JsValue::NULL, |at| JsValue::from(at as f64)),
            JsValue::from(i32::from(body.read_only)),
            channels_json.as_deref().map_or(JsValue::NULL, JsValue::from),
        ])?
        .first::<f64>(Some("id"))
        .await?
        .ok_or_else(|| super::error::internal("key insert returned no id"))? as i64;
    super::log::change("key create", &caller.name, &id.to_string(), 201);
    let info = KeyInfo {
        id,
        name: body.name,
        read_only: body.read_only,
        channels: body.channels,
        expires_at: body.expires_at,
    };
    json_response(201, &json!({ "key": key, "info": info }))
}

pub async fn revoke_key(
    env: &Env,
    req: &Request,
    path_token: Option<&str>,
    id: &str,
) -> ApiResult<Response> {
    let caller = require_principal(env, req, path_token).await?;
    caller.require_unlimited_key()?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request("a key id is a number"))?;
    let now = Date::now().as_millis() as f64;
    let revoked = db(env)?
        .prepare(
            "UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL \
             AND (user_id = ?3 OR ?4) RETURNING id",
        )
        .bind(&[
            JsValue::from(now),
            JsValue::from(id as f64),
            JsValue::from(caller.user_id as f64),
            JsValue::from(i32::from(caller.is_admin)),
        ])?
        .first::<f64>(Some("id"))
        .await?;
    if revoked.is_none() {
        return Err(ApiError::not_found(format!(
            "you have no active key with id {id}"
        )));
    }
    forget_key(id);
    super::log::change("key revoke", &caller.name, &id.to_string(), 200);
    json_response(200, &json!({ "id": id, "revoked": true }))
}

/// `GET /api/v1/channels/<c>/stats`: what the channel's index holds and the memory its Durable
/// Object has used. Site admins only: it is about the server, not the channel.
pub async fn channel_stats(
    env: &Env,
    req: &Request,
    path_token: Option<&str>,
    name: &str,
) -> ApiResult<Response> {
    admin_on_channel(env, req, path_token, name, "channel statistics").await?;
    let stats = ChannelIndexClient::new(env, name)?.stats().await?;
    json_response(200, &json!({ "channel": name, "index": stats }))
}

/// Rebuilds every artifact of a channel from its stored records (after a change to how they
/// are written, say); answers once all are written.
pub async fn rebuild_channel(
    env: &Env,
    req: &Request,
    path_token: Option<&str>,
    name: &str,
) -> ApiResult<Response> {
    let caller =
        admin_on_channel(env, req, path_token, name, "rebuilding a channel's index").await?;
    let rebuilt = ChannelIndexClient::new(env, name)?.rebuild(name).await?;
    super::log::change("rebuild", &caller.name, name, 200);
    json_response(200, &json!({ "channel": name, "rebuilt": rebuilt }))
}

/// The caller, if a site admin, of an operation on channel `name`, which must exist.
async fn admin_on_channel(
    env: &Env,
    req: &Request,
    path_token: Option<&str>,
    name: &str,
    what: &str,
) -> ApiResult<Principal> {
    let caller = require_principal(env, req, path_token).await?;
    caller.require_admin(what)?;
    find_channel(env, name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no channel named '{name}'")))?;
    Ok(caller)
}
