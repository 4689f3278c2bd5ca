//! Trusted publishing: a CI job exchanges its OIDC token for a short-lived key
//! (`POST /api/oidc/mint_token`, as prefix.dev answers it to `rattler-build upload prefix`), and
//! a channel's owners register the publishers whose tokens it accepts
//! (`/api/v1/channels/<c>/publishers`). The rules are in [`crate::trusted_publishing`], what a
//! minted key may do in [`crate::access`]; `docs/publishing.md` shows the CI side.

use serde::{Deserialize, Serialize};
use worker::{Date, Response};

use super::auth::forget_publisher;
use super::context::RequestContext;
use super::error::{internal, json, ApiError, ApiResult, ErrorCode};
use super::jwt::{verify, KeySource};
use crate::access::Action;
use crate::directory::{self, CandidateRow, IdRow, MintedRun, NewKey, NewPublisher, PublisherRow};
use crate::jwt::{parse, Expected};
use crate::keys::{key_hash, key_prefix, new_key};
use crate::names::ChannelName;
use crate::trusted_publishing::{accepting, check_publisher, Conditions, Settings};

#[derive(Deserialize)]
struct MintRequest {
    token: String,
}

/// `POST /api/oidc/mint_token` `{"token": "<JWT>"}`: a key for the channels whose trusted
/// publishers accept the token's run, as the raw body (what the clients read). Each token is
/// used once. The key belongs to the user who registered the oldest of those publishers.
pub async fn mint_token(ctx: &mut RequestContext) -> ApiResult<Response> {
    let body: MintRequest = ctx.json_body().await?;
    let settings = ctx.trusted_publishing()?;
    let claimed = parse(&body.token)
        .map_err(|error| ApiError::invalid_key(error.to_string()))?
        .claimed_issuer()
        .unwrap_or_default();
    let issuer = settings.issuer(&claimed).ok_or_else(|| {
        ApiError::invalid_key(format!(
            "the token's issuer '{}' is not one this server trusts",
            claimed.chars().take(100).collect::<String>()
        ))
    })?;
    let url = ctx.req().url()?;
    let audiences = settings.accepted_audiences(url.host_str().unwrap_or_default());
    let now = Date::now().as_millis();
    let expected = Expected {
        issuer: &issuer.url,
        audiences: &audiences,
        now: now / 1000,
    };
    let source = KeySource::Discovery {
        issuer: &issuer.url,
    };
    let claims = verify(source, &body.token, &expected).await?;
    let jti = claims
        .jti
        .clone()
        .filter(|jti| !jti.is_empty())
        .ok_or_else(|| {
            ApiError::invalid_key("the token has no 'jti' claim, so its use once cannot be ensured")
        })?;
    let run = issuer
        .provider
        .run(&claims.extra)
        .map_err(ApiError::invalid_key)?;

    let db = ctx.db()?;
    let candidates: Vec<CandidateRow> = db
        .all(directory::publishers_of_repository(
            &issuer.url,
            &run.repository,
        ))
        .await?;
    let matched = accepting(&candidates, &run).map_err(ApiError::forbidden)?;
    // Never empty: `accepting` refuses instead.
    let first = matched[0];

    db.batch(directory::delete_expired_mints(now as i64))
        .await?;
    let used = db
        .returns_row(directory::use_token(
            &issuer.url,
            &jti,
            claims.exp.saturating_mul(1000).min(i64::MAX as u64) as i64,
        ))
        .await?;
    if !used {
        return Err(ApiError::invalid_key("this token was already used"));
    }
    let key = new_key();
    let hash = key_hash(&key);
    let name: String = format!("trusted publisher {}", run.repository)
        .chars()
        .take(100)
        .collect();
    let ids: Vec<i64> = matched.iter().map(|m| m.id).collect();
    let ids = serde_json::to_string(&ids).map_err(internal)?;
    let minted = directory::mint_key(
        &NewKey {
            user_id: first.created_by,
            name: &name,
            hash: &hash,
            prefix: key_prefix(&key),
            now: now as i64,
            expires_at: Some((now + ctx.config().minted_key_ms) as i64),
            read_only: false,
            channels_json: None,
        },
        &MintedRun {
            issuer: &issuer.url,
            repository: &run.repository,
            workflow: run.workflow.as_deref(),
            run_id: run.run_id.as_deref(),
            git_ref: run.git_ref.as_deref(),
            commit: run.commit.as_deref(),
            environment: run.environment.as_deref(),
        },
        &ids,
    );
    db.batch(minted).await?;
    let channels: Vec<&str> = matched.iter().map(|m| m.channel.as_str()).collect();
    super::log::change("key mint", &run.repository, &channels.join(","), 200);
    let mut response = Response::ok(key)?;
    response
        .headers_mut()
        .set("Content-Type", "text/plain; charset=utf-8")?;
    response.headers_mut().set("Cache-Control", "no-store")?;
    Ok(response)
}

/// A trusted publisher as the API answers it.
#[derive(Serialize)]
struct Publisher {
    id: i64,
    channel: String,
    /// `github` or `gitlab`: whose claims its tokens carry; `None` when the server no longer
    /// trusts its issuer.
    provider: Option<&'static str>,
    issuer: String,
    repository: String,
    workflow: Option<String>,
    environment: Option<String>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    created_by: String,
    /// Milliseconds since the epoch.
    created_at: u64,
}

impl Publisher {
    fn of(row: PublisherRow, settings: &Settings) -> Self {
        Self {
            provider: settings.issuer(&row.issuer).map(|i| i.provider.as_str()),
            id: row.id,
            channel: row.channel,
            issuer: row.issuer,
            repository: row.repository,
            workflow: row.workflow,
            environment: row.environment,
            git_ref: row.git_ref,
            created_by: row.created_by,
            created_at: row.created_at as u64,
        }
    }
}

#[derive(Serialize)]
struct Publishers {
    publishers: Vec<Publisher>,
}

/// `GET /api/v1/channels/<c>/publishers` (owners).
pub async fn list(ctx: &RequestContext, channel: &ChannelName) -> ApiResult<Response> {
    ctx.authorize_change(channel, Action::Manage).await?;
    let settings = ctx.trusted_publishing()?;
    let rows: Vec<PublisherRow> = ctx.db()?.all(directory::publishers(channel)).await?;
    let publishers = rows
        .into_iter()
        .map(|row| Publisher::of(row, &settings))
        .collect();
    json(200, &Publishers { publishers })
}

#[derive(Deserialize)]
struct NewPublisherBody {
    issuer: String,
    repository: String,
    workflow: Option<String>,
    environment: Option<String>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
}

/// An optional field, trimmed; empty is none (what a form's empty field sends).
fn given(field: &Option<String>) -> Option<&str> {
    field
        .as_deref()
        .map(str::trim)
        .filter(|text| !text.is_empty())
}

/// `POST /api/v1/channels/<c>/publishers` (owners): registers a publisher; 409 when the channel
/// has one of the same description.
pub async fn add(ctx: &mut RequestContext, channel: &ChannelName) -> ApiResult<Response> {
    let (caller, _) = ctx.authorize_change(channel, Action::Manage).await?;
    let body: NewPublisherBody = ctx.json_body().await?;
    let settings = ctx.trusted_publishing()?;
    let issuer = settings
        .named(body.issuer.trim())
        .map_err(ApiError::bad_request)?;
    let repository = body.repository.trim();
    let conditions = Conditions {
        workflow: given(&body.workflow),
        environment: given(&body.environment),
        git_ref: given(&body.git_ref),
    };
    check_publisher(issuer.provider, repository, &conditions).map_err(ApiError::bad_request)?;
    let now = Date::now().as_millis();
    let created: Option<IdRow> = ctx
        .db()?
        .first(directory::create_publisher(&NewPublisher {
            channel,
            issuer: &issuer.url,
            repository,
            workflow: conditions.workflow,
            environment: conditions.environment,
            git_ref: conditions.git_ref,
            created_by: caller.user_id,
            now: now as i64,
        }))
        .await?;
    let Some(created) = created else {
        return Err(ApiError::new(
            ErrorCode::AlreadyExists,
            "this channel has a trusted publisher of that description",
        ));
    };
    super::log::change(
        "publisher add",
        &caller.name,
        &format!("{channel}/{}", created.id),
        201,
    );
    let publisher = PublisherRow {
        id: created.id,
        channel: channel.to_string(),
        issuer: issuer.url.clone(),
        repository: repository.to_owned(),
        workflow: conditions.workflow.map(str::to_owned),
        environment: conditions.environment.map(str::to_owned),
        git_ref: conditions.git_ref.map(str::to_owned),
        created_by: caller.name.clone(),
        created_at: now as f64,
    };
    json(201, &Publisher::of(publisher, &settings))
}

#[derive(Serialize)]
struct Removed {
    id: i64,
    removed: bool,
}

/// `DELETE /api/v1/channels/<c>/publishers/<id>` (owners): the publisher goes, and the keys
/// minted for it stop working on the channel at once (in this isolate; elsewhere within
/// `AUTH_CACHE_SECONDS`).
pub async fn remove(ctx: &RequestContext, channel: &ChannelName, id: &str) -> ApiResult<Response> {
    let (caller, _) = ctx.authorize_change(channel, Action::Manage).await?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request("a publisher id is a number"))?;
    let removed = ctx
        .db()?
        .returns_row(directory::remove_publisher(channel, id))
        .await?;
    if !removed {
        return Err(ApiError::not_found(format!(
            "channel '{channel}' has no trusted publisher with id {id}"
        )));
    }
    forget_publisher(id);
    super::log::change(
        "publisher remove",
        &caller.name,
        &format!("{channel}/{id}"),
        200,
    );
    json(200, &Removed { id, removed: true })
}
