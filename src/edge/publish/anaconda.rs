//! anaconda.org's upload API under `/api/anaconda/`, as `rattler-build upload anaconda
//! --url <base>/api/anaconda --owner <channel>` calls it (key: `Authorization: token <key>`):
//!
//! 1. `GET`, then `POST`/`PATCH` `package/<owner>/<name>` and `release/<owner>/<name>/<version>`;
//! 2. `POST stage/<owner>/<name>/<version>/<subdir>/<file>` `{"sha256", "channels", …}`: 409
//!    if a file of that name with other bytes is stored (the client then deletes it when asked
//!    to `--force`, and starts over); else a `post_url` for the bytes and a `dist_id`;
//! 3. `POST <post_url>`: the file as the `file` part of a form, with no key — anaconda.org's
//!    URL is presigned storage, condaflare's (`transfer/<channel>/<ticket>`) carries a ticket
//!    the stage wrote, good for one upload within [`TICKET_SECONDS`]; the package is stored
//!    here, through the one upload path;
//! 4. `POST commit/…` `{"dist_id"}`: confirms the file is stored with those bytes;
//! 5. (`--force`) `DELETE dist/<owner>/<name>/<version>/<subdir>/<file>`.
//!
//! The owner is the channel. condaflare keeps no package or release apart from the files:
//! those calls check that the caller may read (GET) or write (POST, PATCH) the channel and
//! that the name and version are valid, and change nothing; metadata comes from each file.
//! Labels: only `main` (the channel itself) — see [`crate::publish::check_labels`].

use serde::{Deserialize, Serialize};
use worker::{Date, Response};

use super::super::context::RequestContext;
use super::super::error::{internal, json, ApiError, ApiResult, ErrorCode};
use super::super::storage::{file_key, random_id, staging_key};
use super::super::upload::{multipart_file, stored_response};
use crate::access::Action;
use crate::consistency::read_shard_index;
use crate::multipart::MultipartReader;
use crate::publish::{
    check_dist_path, check_labels, check_name, check_version, shard_sha256, StageAnswer,
    StageRequest, UploadTicket, TICKET_SECONDS,
};
use crate::shards::{shard_path, INDEX_FILENAME};

#[derive(Serialize)]
struct Entity<'a> {
    owner: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
}

fn checked_entity<'a>(
    owner: &'a str,
    name: &'a str,
    version: Option<&'a str>,
) -> ApiResult<Entity<'a>> {
    check_name(name).map_err(ApiError::invalid_name)?;
    if let Some(version) = version {
        check_version(version).map_err(ApiError::invalid_name)?;
    }
    Ok(Entity {
        owner,
        name,
        version,
    })
}

/// `GET package/<owner>/<name>` and `GET release/<owner>/<name>/<version>`.
pub async fn get_entity(
    ctx: &RequestContext,
    owner: &str,
    name: &str,
    version: Option<&str>,
) -> ApiResult<Response> {
    let channel = ctx.channel(owner).await?;
    ctx.authorize(Action::Read, &channel).await?;
    json(200, &checked_entity(owner, name, version)?)
}

/// `POST`/`PATCH` `package/<owner>/<name>` and `release/<owner>/<name>/<version>`.
pub async fn put_entity(
    ctx: &RequestContext,
    owner: &str,
    name: &str,
    version: Option<&str>,
) -> ApiResult<Response> {
    ctx.authorize_change(owner, Action::Write).await?;
    json(200, &checked_entity(owner, name, version)?)
}

/// The ticket objects live among the channel's staging objects: never served, and deleted by
/// the channel index's sweep once old.
fn ticket_key(channel: &str, ticket: &str) -> String {
    staging_key(channel, &format!("{ticket}.ticket"))
}

/// `POST stage/<owner>/<name>/<version>/<subdir>/<filename>`.
pub async fn stage(
    ctx: &mut RequestContext,
    owner: &str,
    name: &str,
    version: &str,
    subdir: &str,
    filename: &str,
) -> ApiResult<Response> {
    let (caller, channel) = ctx.authorize_change(owner, Action::Write).await?;
    check_dist_path(name, version, filename).map_err(ApiError::invalid_name)?;
    let request: StageRequest = ctx.json_body().await?;
    check_labels(&request.channels).map_err(ApiError::bad_request)?;
    let sha256 = request.sha256.to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(
            "sha256 must be the file's SHA-256 as 64 hex digits",
        ));
    }
    let channel = channel.name;
    match stored_sha256(ctx, &channel, subdir, name, filename).await? {
        Some(stored) if stored != sha256 => {
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!(
                "{subdir}/{filename} exists with other content; upload with --force to replace it"
            ),
            ))
        }
        _ => {}
    }
    let ticket_id = random_id();
    let ticket = UploadTicket {
        channel: channel.clone(),
        subdir: subdir.to_owned(),
        filename: filename.to_owned(),
        sha256: sha256.clone(),
        user: caller.name,
        expires_at: Date::now().as_millis() + TICKET_SECONDS * 1000,
    };
    let ticket_json = serde_json::to_string(&ticket).map_err(internal)?;
    ctx.bucket()?
        .put(ticket_key(&channel, &ticket_id), ticket_json.into_bytes())
        .execute()
        .await?;
    let origin = ctx.req().url()?.origin().ascii_serialization();
    json(
        200,
        &StageAnswer {
            post_url: format!("{origin}/api/anaconda/transfer/{channel}/{ticket_id}"),
            form_data: serde_json::Map::new(),
            dist_id: sha256,
        },
    )
}

/// `POST transfer/<channel>/<ticket>`: the bytes a stage announced, as a form's `file` part.
pub async fn transfer(
    ctx: &mut RequestContext,
    channel_name: &str,
    ticket_id: &str,
) -> ApiResult<Response> {
    let unknown = || ApiError::not_found("no such upload URL: each is good for one upload");
    if ticket_id.len() != 32 || !ticket_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(unknown());
    }
    let bucket = ctx.bucket()?;
    let key = ticket_key(channel_name, ticket_id);
    let object = bucket.get(&key).execute().await?.ok_or_else(unknown)?;
    let text = object
        .body()
        .ok_or_else(|| internal("upload ticket without a body"))?
        .text()
        .await?;
    let ticket: UploadTicket = serde_json::from_str(&text).map_err(internal)?;
    // Used once, whatever comes of it: a failed transfer is staged again by the client.
    bucket.delete(&key).await?;
    ticket
        .check(channel_name, Date::now().as_millis())
        .map_err(ApiError::forbidden)?;

    let length = ctx.upload_length()?;
    let content_type = ctx.req().headers().get("Content-Type")?.unwrap_or_default();
    let boundary = MultipartReader::boundary_of(&content_type)
        .ok_or_else(|| ApiError::bad_request("send the file as multipart/form-data"))?
        .to_owned();
    let body = ctx.body_stream()?;
    let naming = Some((ticket.filename.clone(), ticket.sha256.clone()));
    let result = async {
        let (file, _form) = multipart_file(body, &boundary, length, naming).await?;
        let mut received = file.receive(ctx, &ticket.channel).await?;
        received.expect_subdir(&ticket.subdir);
        received.commit(ctx, &ticket.channel, false, true).await
    }
    .await;
    let status = result.as_ref().map_or_else(|e| e.status(), |r| r.status);
    let path = format!("{}/{}/{}", ticket.channel, ticket.subdir, ticket.filename);
    super::super::log::change("upload (anaconda)", &ticket.user, &path, status);
    stored_response(&ticket.channel, &ticket.filename, &result?)
}

#[derive(Deserialize)]
struct CommitBody {
    dist_id: String,
}

#[derive(Serialize)]
struct Committed<'a> {
    owner: &'a str,
    basename: String,
    sha256: &'a str,
}

/// `POST commit/<owner>/<name>/<version>/<subdir>/<filename>`: 200 once the file is stored
/// with the staged bytes.
pub async fn commit(
    ctx: &mut RequestContext,
    owner: &str,
    name: &str,
    version: &str,
    subdir: &str,
    filename: &str,
) -> ApiResult<Response> {
    let (_, channel) = ctx.authorize_change(owner, Action::Write).await?;
    check_dist_path(name, version, filename).map_err(ApiError::invalid_name)?;
    let body: CommitBody = ctx.json_body().await?;
    let stored = stored_sha256(ctx, &channel.name, subdir, name, filename).await?;
    if !stored.is_some_and(|sha256| sha256.eq_ignore_ascii_case(&body.dist_id)) {
        return Err(ApiError::not_found(format!(
            "{subdir}/{filename} is not stored with the staged bytes: send them to the post_url first"
        )));
    }
    json(
        200,
        &Committed {
            owner,
            basename: format!("{subdir}/{filename}"),
            sha256: &body.dist_id,
        },
    )
}

/// `DELETE dist/<owner>/<name>/<version>/<subdir>/<filename>`: the package delete.
pub async fn remove(
    ctx: &RequestContext,
    owner: &str,
    name: &str,
    version: &str,
    subdir: &str,
    filename: &str,
) -> ApiResult<Response> {
    check_dist_path(name, version, filename).map_err(ApiError::invalid_name)?;
    super::super::delete::delete(ctx, owner, subdir, filename).await
}

/// The SHA-256 the channel's index holds for a file, read from the shard of its name (written
/// before any upload is answered).
async fn stored_sha256(
    ctx: &RequestContext,
    channel: &str,
    subdir: &str,
    name: &str,
    filename: &str,
) -> ApiResult<Option<String>> {
    let bucket = ctx.bucket()?;
    let read = |key: String| {
        let bucket = bucket.clone();
        async move {
            match bucket.get(&key).execute().await? {
                Some(object) => match object.body() {
                    Some(body) => Ok::<_, ApiError>(Some(body.bytes().await?)),
                    None => Ok(None),
                },
                None => Ok(None),
            }
        }
    };
    let Some(index) = read(file_key(channel, subdir, INDEX_FILENAME)).await? else {
        return Ok(None);
    };
    let shards = read_shard_index(&index).map_err(internal)?;
    let Some(hash) = shards.get(name) else {
        return Ok(None);
    };
    let Some(shard) = read(file_key(channel, subdir, &shard_path(hash))).await? else {
        return Ok(None);
    };
    shard_sha256(&shard, filename).map_err(internal)
}
