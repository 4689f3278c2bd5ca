//! anaconda.org's upload API under `/api/anaconda/`, as `rattler-build upload anaconda
//! --url <base>/api/anaconda --owner <channel>` and `anaconda upload -u <channel>` (with the
//! site's `url` set to `<base>/api/anaconda`) call it (key: `Authorization: token <key>`):
//!
//! 0. (anaconda-client) `HEAD /` (is the server there?), `GET user/<owner>` (or `GET user`:
//!    the caller, whose name is then the owner), `GET dist/<owner>/<name>/<version>/<subdir>/<file>`
//!    (404: not stored yet; stored: skip, fail, or with `--force` delete it first);
//! 1. `GET`, then `POST`/`PATCH` `package/<owner>/<name>` and `release/<owner>/<name>/<version>`;
//! 2. `POST stage/<owner>/<name>/<version>/<subdir>/<file>` `{"sha256", "channels", …}`: 409
//!    if a file of that name with other bytes is stored (the client then deletes it when asked
//!    to `--force`, and starts over); else a `post_url` for the bytes and a `dist_id`;
//! 3. `POST <post_url>`: the file as the `file` part of a form (after anaconda-client's
//!    `Content-MD5` field), with no key — anaconda.org's URL is presigned storage,
//!    condaflare's (`transfer/<channel>/<ticket>`) carries a ticket the stage wrote, good for
//!    one upload within [`TICKET_SECONDS`] by the key that staged it, checked again now; the
//!    package is stored here, through the one upload path. Like the storage it stands in for,
//!    it answers 201, and its errors as S3's XML `<Error>` (see [`storage_error_xml`]);
//! 4. `POST commit/…` `{"dist_id"}`: confirms the file is stored with those bytes;
//! 5. (`--force`) `DELETE dist/<owner>/<name>/<version>/<subdir>/<file>`.
//!
//! The owner is the channel. condaflare keeps no package or release apart from the files:
//! those calls check that the caller may read (GET) or write (POST, PATCH) the channel and
//! that the name and version are valid, and change nothing; metadata comes from each file.
//! Labels: only `main` (the channel itself) — see [`crate::publish::check_labels`].

use serde::{Deserialize, Serialize};
use worker::{Date, Response};

use super::super::auth::{verify_key_id, Hiding};
use super::super::context::RequestContext;
use super::super::error::{internal, json, ApiError, ApiResult, ErrorCode};
use super::super::ingest::{ingest, Answer, Body, FormFields, Named, Options};
use super::super::removal::remove_package;
use super::super::storage::{file_key, random_id, staging_key};
use crate::access::Action;
use crate::consistency::read_shard_index;
use crate::index_plan::conflicts;
use crate::multipart::MultipartReader;
use crate::names::ChannelName;
use crate::publish::{
    check_labels, check_name, check_version, shard_sha256, storage_error_xml, DistPath,
    StageAnswer, StageRequest, UploadTicket, TICKET_SECONDS,
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

/// `HEAD` and `GET` of the API's root: how anaconda-client checks the server is there.
pub fn root() -> ApiResult<Response> {
    #[derive(Serialize)]
    struct Root {
        api: &'static str,
    }
    json(
        200,
        &Root {
            api: "anaconda.org upload",
        },
    )
}

/// An account, as anaconda.org's `user` calls answer: a user, or the channel that owns files.
#[derive(Serialize)]
struct Account<'a> {
    login: &'a str,
    user_type: &'static str,
}

/// `GET user`: the caller, whose name anaconda-client takes as the owner when it is given none.
pub async fn caller(ctx: &RequestContext) -> ApiResult<Response> {
    let caller = ctx.signed_in().await?;
    json(
        200,
        &Account {
            login: &caller.name,
            user_type: "user",
        },
    )
}

/// `GET user/<owner>`: the channel, if the caller may read it.
pub async fn owner(ctx: &RequestContext, owner: &ChannelName) -> ApiResult<Response> {
    ctx.authorize(owner, Action::Read, Hiding::NotFound).await?;
    json(
        200,
        &Account {
            login: owner,
            user_type: "org",
        },
    )
}

/// A stored file, as `GET dist/…` answers it.
#[derive(Serialize)]
struct Distribution<'a> {
    basename: String,
    version: &'a str,
    sha256: String,
}

/// `GET dist/<owner>/<name>/<version>/<subdir>/<filename>`: the file if it is stored, else 404.
pub async fn distribution(ctx: &RequestContext, dist: &DistPath) -> ApiResult<Response> {
    let (_, channel) = ctx
        .authorize(&dist.owner, Action::Read, Hiding::NotFound)
        .await?;
    let basename = dist.basename();
    let sha256 = stored_sha256(ctx, &channel.name, dist)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no file {basename} is stored")))?;
    json(
        200,
        &Distribution {
            basename,
            version: &dist.version,
            sha256,
        },
    )
}

/// `GET package/<owner>/<name>` and `GET release/<owner>/<name>/<version>`.
pub async fn get_entity(
    ctx: &RequestContext,
    owner: &ChannelName,
    name: &str,
    version: Option<&str>,
) -> ApiResult<Response> {
    ctx.authorize(owner, Action::Read, Hiding::NotFound).await?;
    json(200, &checked_entity(owner, name, version)?)
}

/// `POST`/`PATCH` `package/<owner>/<name>` and `release/<owner>/<name>/<version>`.
pub async fn put_entity(
    ctx: &RequestContext,
    owner: &ChannelName,
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
pub async fn stage(ctx: &mut RequestContext, dist: &DistPath) -> ApiResult<Response> {
    let (caller, channel) = ctx.authorize_change(&dist.owner, Action::Write).await?;
    let request: StageRequest = ctx.json_body().await?;
    check_labels(&request.channels).map_err(ApiError::bad_request)?;
    let sha256 = request.sha256.to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(
            "sha256 must be the file's SHA-256 as 64 hex digits",
        ));
    }
    let channel = channel.name;
    // A stage is never forced: the client deletes the stored file first when told to.
    let stored = stored_sha256(ctx, &channel, dist).await?;
    if conflicts(stored.as_deref(), &sha256, false) {
        return Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!(
                "{} exists with other content; upload with --force to replace it",
                dist.basename()
            ),
        ));
    }
    let ticket_id = random_id();
    let ticket = UploadTicket {
        channel: channel.clone(),
        subdir: dist.subdir.to_string(),
        filename: dist.filename.to_string(),
        sha256: sha256.clone(),
        key_id: caller.key.id,
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
/// Answered as the storage it stands in for: 201, or S3's XML error document.
pub async fn transfer(
    ctx: &mut RequestContext,
    channel_name: &ChannelName,
    ticket_id: &str,
) -> ApiResult<Response> {
    match store_transferred(ctx, channel_name, ticket_id).await {
        Ok(response) => Ok(response),
        Err(error) => Ok(Response::builder()
            .with_status(error.status())
            .with_header("Content-Type", "application/xml")?
            .with_header("Cache-Control", "no-store")?
            .fixed(storage_error_xml(&error).into_bytes())),
    }
}

async fn store_transferred(
    ctx: &mut RequestContext,
    channel_name: &ChannelName,
    ticket_id: &str,
) -> ApiResult<Response> {
    let ticket = take_ticket(ctx, channel_name, ticket_id).await?;
    ticket
        .check(channel_name, Date::now().as_millis())
        .map_err(ApiError::forbidden)?;
    // The key that staged the file must still be allowed to write it: not revoked, not
    // expired, its limits and its user's role as they are now.
    let staged_by = verify_key_id(ctx, ticket.key_id).await?;
    let (staged_by, channel) = ctx
        .authorize_key(staged_by, &ticket.channel, Action::Write)
        .await?;

    let length = ctx.upload_length()?;
    let content_type = ctx.header("Content-Type").unwrap_or_default();
    let boundary = MultipartReader::boundary_of(content_type)
        .ok_or_else(|| ApiError::bad_request("send the file as multipart/form-data"))?
        .to_owned();
    let body = Body::Form {
        stream: ctx.body_stream()?,
        boundary,
        length,
        file: Some(Named {
            filename: ticket.filename.clone(),
            sha256: Some(ticket.sha256.clone()),
        }),
        fields: FormFields {
            content_md5: true,
            ..FormFields::default()
        },
    };
    let options = Options {
        subdir: Some(&ticket.subdir),
        // Storage answers a completed POST with 201, stored anew or not; the client needs it.
        answer: Answer::Created,
        ..Options::upload("upload (anaconda)", &staged_by, false)
    };
    ingest(ctx, &channel.name, body, options)
        .await?
        .response(&ticket.channel)
}

/// Reads and deletes the ticket a stage wrote: each is used once, whatever comes of it (a
/// failed transfer is staged again by the client).
async fn take_ticket(
    ctx: &RequestContext,
    channel_name: &str,
    ticket_id: &str,
) -> ApiResult<UploadTicket> {
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
    bucket.delete(&key).await?;
    // A ticket of an earlier shape names no key: it cannot be honoured.
    serde_json::from_str(&text).map_err(|_| unknown())
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
    /// The package's page, which anaconda-client prints as where the upload is.
    url: String,
}

/// `POST commit/<owner>/<name>/<version>/<subdir>/<filename>`: 200 once the file is stored
/// with the staged bytes.
pub async fn commit(ctx: &mut RequestContext, dist: &DistPath) -> ApiResult<Response> {
    let (_, channel) = ctx.authorize_change(&dist.owner, Action::Write).await?;
    let body: CommitBody = ctx.json_body().await?;
    let stored = stored_sha256(ctx, &channel.name, dist).await?;
    if !stored.is_some_and(|sha256| sha256.eq_ignore_ascii_case(&body.dist_id)) {
        return Err(ApiError::not_found(format!(
            "{} is not stored with the staged bytes: send them to the post_url first",
            dist.basename()
        )));
    }
    json(
        200,
        &Committed {
            owner: &dist.owner,
            basename: dist.basename(),
            sha256: &body.dist_id,
            url: format!(
                "{}/{}/packages/{}",
                ctx.req().url()?.origin().ascii_serialization(),
                dist.owner,
                dist.name
            ),
        },
    )
}

/// `DELETE dist/<owner>/<name>/<version>/<subdir>/<filename>`: the package delete.
pub async fn remove(ctx: &RequestContext, dist: &DistPath) -> ApiResult<Response> {
    remove_package(ctx, &dist.owner, &dist.subdir, &dist.filename).await
}

/// The SHA-256 the channel's index holds for a file, read from the shard of its name (written
/// before any upload is answered).
async fn stored_sha256(
    ctx: &RequestContext,
    channel: &str,
    dist: &DistPath,
) -> ApiResult<Option<String>> {
    let DistPath {
        name,
        subdir,
        filename,
        ..
    } = dist;
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
