//! The Worker: one router in front of small handlers (wasm32 only).
//!
//! | method      | path                                         | handler            |
//! |-------------|----------------------------------------------|--------------------|
//! | POST        | /api/v1/upload/<channel>                     | [`upload::upload`] |
//! | POST        | /api/v1/import/<channel> (a tar of packages)  | [`bulk::import`]   |
//! | DELETE      | /api/v1/delete/<channel>/<subdir>/<filename> | [`delete::delete`] |
//! | POST        | /api/v1/reindex/<channel>/<subdir>           | [`publish::prefix::reindex`] |
//! | POST        | /api/channels/<channel>/upload/<filename> (quetz) | [`publish::quetz::upload`] |
//! | PUT         | /<channel>/<subdir>/<filename> (Artifactory)  | [`publish::artifactory::deploy`] |
//! | (see there) | /api/anaconda, /api/anaconda/{user,package,release,stage,transfer,commit,dist}/… | [`publish::anaconda`] |
//! | GET, HEAD   | /<channel>/<subdir>/<file> (and `shards/<hash>.msgpack.zst`, `<package>.v0.sigs`) | [`serve::serve_file`] |
//! | (see there) | /api/v1/whoami, /api/v1/channels…, /api/v1/keys… | [`manage`]     |
//! | POST, GET, DELETE | /api/v1/session (a browser's sign-in)   | [`session`]        |
//! | GET         | /api/v1/signin/{oidc,github} and `…/callback` (identity sign-in) | [`signin::oidc`], [`signin::github`] |
//! | POST        | /api/v1/signin/access (Cloudflare Access)    | [`signin::access`] |
//! | POST        | /api/oidc/mint_token (a CI job's OIDC token for a key) | [`trusted_publishing::mint_token`] |
//! | GET, POST, DELETE | /api/v1/channels/<c>/publishers[/<id>] (trusted publishers) | [`trusted_publishing`] |
//! | GET         | /api/v1/channels/<c>/packages…, /api/v1/server | [`browse`]     |
//! | GET         | /api/v1/channels/<c>/mirror (a mirror's rules, freshness, kept files) | [`mirror_state`] |
//! | GET (Accept: text/html) | the web app's page URLs: `/`, `/<channel>`… | [`pages::shell`] |
//!
//! What each route answers, and who may call it: `docs/api.md` and `docs/publishing.md`.
//!
//! The web app's static files (`/-/<file>`, a dot in the name) never reach the Worker: Static
//! Assets serves them; every other path comes here with no asset lookup first (`wrangler.toml`).
//!
//! Any path may be prefixed by `/t/<key>` (conda's token-in-URL form); the prefix is removed
//! before routing and never logged. Each request gets one [`RequestContext`]: its settings,
//! its caller and the bindings; handlers take it and the names the route matched, parsed
//! ([`crate::names`]).

mod attestation;
mod auth;
mod browse;
mod bulk;
mod cache;
mod channel_index;
mod context;
mod db;
mod delete;
mod edge_cache;
mod error;
mod form;
mod ingest;
mod jwt;
mod log;
mod manage;
mod mirror;
mod mirror_counter;
mod mirror_state;
mod object_writer;
mod pages;
mod publish;
mod r2_counter;
mod removal;
mod serve;
mod session;
mod sessions;
mod signin;
mod storage;
mod tee;
mod trusted_publishing;
mod upload;
mod upstream;

use worker::{event, Context, Date, Env, Method, Request, Response};

use crate::names::{ChannelFile, ChannelName, PackageFilename, Subdir};
use crate::publish::DistPath;
use context::RequestContext;
use error::{ApiError, ApiResult, ErrorCode};

#[event(fetch)]
async fn fetch(req: Request, env: Env, lifetime: Context) -> worker::Result<Response> {
    let started = Date::now().as_millis();
    let method = req.method();
    let raw_path = req.path();
    let (path_token, path) = split_token(&raw_path);
    let (answered, config) = match RequestContext::new(env, req, lifetime, path_token) {
        Ok(mut ctx) => (route(&mut ctx, &method, path).await, Some(*ctx.config())),
        Err(error) => (Err(error), None),
    };
    let response = answered.unwrap_or_else(|error| error::response(&error));
    let status = response.status_code();
    let read = matches!(method, Method::Get | Method::Head);
    // Without settings (a configuration error) every request is logged.
    if config.is_none_or(|config| config.logs_request(read, status)) {
        log::request(
            method.as_ref(),
            path,
            status,
            Date::now().as_millis() - started,
        );
    }
    Ok(response)
}

/// Splits `/t/<key>/rest` into the key and `/rest`.
fn split_token(path: &str) -> (Option<&str>, &str) {
    if let Some(rest) = path.strip_prefix("/t/") {
        if let Some(slash) = rest.find('/') {
            return (Some(&rest[..slash]), &rest[slash..]);
        }
        return (Some(rest), "/");
    }
    (None, path)
}

async fn route(ctx: &mut RequestContext, method: &Method, path: &str) -> ApiResult<Response> {
    if let Some(page) = pages::requested(ctx, method, path)? {
        return pages::shell(ctx, page).await;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // Names are parsed in path order, so the first bad one is the one refused.
    match (method, segments.as_slice()) {
        (Method::Post, ["api", "v1", "upload", channel]) => {
            upload::upload(ctx, &channel.parse()?).await
        }
        (Method::Post, ["api", "v1", "import", channel]) => {
            bulk::import(ctx, &channel.parse()?).await
        }
        (Method::Delete, ["api", "v1", "delete", channel, subdir, filename]) => {
            let (channel, subdir, filename) = file_path(channel, subdir, filename)?;
            delete::delete(ctx, &channel, &subdir, &filename).await
        }
        (Method::Post, ["api", "v1", "reindex", channel, subdir]) => {
            let channel: ChannelName = channel.parse()?;
            publish::prefix::reindex(ctx, &channel, &subdir.parse()?).await
        }
        (Method::Post, ["api", "channels", channel, "upload", filename]) => {
            let channel: ChannelName = channel.parse()?;
            publish::quetz::upload(ctx, &channel, &filename.parse()?).await
        }
        (Method::Get | Method::Head, ["api", "anaconda"]) => publish::anaconda::root(),
        (Method::Get, ["api", "anaconda", "user"]) => publish::anaconda::caller(ctx).await,
        (Method::Get, ["api", "anaconda", "user", owner]) => {
            publish::anaconda::owner(ctx, &owner.parse()?).await
        }
        (Method::Get, ["api", "anaconda", "dist", owner, name, version, subdir, filename]) => {
            let dist = DistPath::parse(owner, name, version, subdir, filename)?;
            publish::anaconda::distribution(ctx, &dist).await
        }
        (Method::Get, ["api", "anaconda", "package", owner, name]) => {
            publish::anaconda::get_entity(ctx, &owner.parse()?, name, None).await
        }
        (Method::Post | Method::Patch, ["api", "anaconda", "package", owner, name]) => {
            publish::anaconda::put_entity(ctx, &owner.parse()?, name, None).await
        }
        (Method::Get, ["api", "anaconda", "release", owner, name, version]) => {
            publish::anaconda::get_entity(ctx, &owner.parse()?, name, Some(version)).await
        }
        (Method::Post | Method::Patch, ["api", "anaconda", "release", owner, name, version]) => {
            publish::anaconda::put_entity(ctx, &owner.parse()?, name, Some(version)).await
        }
        (Method::Post, ["api", "anaconda", "stage", owner, name, version, subdir, filename]) => {
            let dist = DistPath::parse(owner, name, version, subdir, filename)?;
            publish::anaconda::stage(ctx, &dist).await
        }
        (Method::Post, ["api", "anaconda", "transfer", channel, ticket]) => {
            publish::anaconda::transfer(ctx, &channel.parse()?, ticket).await
        }
        (Method::Post, ["api", "anaconda", "commit", owner, name, version, subdir, filename]) => {
            let dist = DistPath::parse(owner, name, version, subdir, filename)?;
            publish::anaconda::commit(ctx, &dist).await
        }
        (Method::Delete, ["api", "anaconda", "dist", owner, name, version, subdir, filename]) => {
            let dist = DistPath::parse(owner, name, version, subdir, filename)?;
            publish::anaconda::remove(ctx, &dist).await
        }
        (Method::Post, ["api", "oidc", "mint_token"]) => trusted_publishing::mint_token(ctx).await,
        (Method::Get, ["api", "v1", "whoami"]) => manage::whoami(ctx).await,
        (Method::Post, ["api", "v1", "session"]) => session::sign_in(ctx).await,
        (Method::Get, ["api", "v1", "session"]) => session::current(ctx).await,
        (Method::Delete, ["api", "v1", "session"]) => session::sign_out(ctx).await,
        (Method::Get, ["api", "v1", "signin", "oidc"]) => signin::oidc::start(ctx).await,
        (Method::Get, ["api", "v1", "signin", "oidc", "callback"]) => {
            signin::oidc::callback(ctx).await
        }
        (Method::Get, ["api", "v1", "signin", "github"]) => signin::github::start(ctx).await,
        (Method::Get, ["api", "v1", "signin", "github", "callback"]) => {
            signin::github::callback(ctx).await
        }
        (Method::Post, ["api", "v1", "signin", "access"]) => signin::access::sign_in(ctx).await,
        (Method::Get, ["api", "v1", "server"]) => browse::server_info(ctx).await,
        (Method::Get, ["api", "v1", "channels"]) => manage::list_channels(ctx).await,
        (Method::Post, ["api", "v1", "channels"]) => manage::create_channel(ctx).await,
        (_, ["api", "v1", "channels", channel, rest @ ..]) => {
            let channel: ChannelName = channel.parse()?;
            match (method, rest) {
                (Method::Get, ["packages"]) => browse::list_packages(ctx, &channel).await,
                (Method::Get, ["packages", name]) => browse::package(ctx, &channel, name).await,
                (Method::Get, []) => manage::get_channel(ctx, &channel).await,
                (Method::Patch, []) => manage::update_channel(ctx, &channel).await,
                (Method::Delete, []) => manage::delete_channel(ctx, &channel).await,
                (Method::Get, ["members"]) => manage::list_members(ctx, &channel).await,
                (Method::Get, ["publishers"]) => trusted_publishing::list(ctx, &channel).await,
                (Method::Post, ["publishers"]) => trusted_publishing::add(ctx, &channel).await,
                (Method::Delete, ["publishers", id]) => {
                    trusted_publishing::remove(ctx, &channel, id).await
                }
                (Method::Get, ["stats"]) => manage::channel_stats(ctx, &channel).await,
                (Method::Get, ["mirror"]) => mirror_state::mirror_state(ctx, &channel).await,
                (Method::Post, ["rebuild"]) => manage::rebuild_channel(ctx, &channel).await,
                (Method::Post, ["check"]) => manage::check_channel(ctx, &channel).await,
                (Method::Put, ["members", user]) => manage::put_member(ctx, &channel, user).await,
                (Method::Delete, ["members", user]) => {
                    manage::remove_member(ctx, &channel, user).await
                }
                _ => Err(ApiError::not_found("no such API endpoint")),
            }
        }
        (Method::Get, ["api", "v1", "keys"]) => manage::list_keys(ctx).await,
        (Method::Post, ["api", "v1", "keys"]) => manage::create_key(ctx).await,
        (Method::Delete, ["api", "v1", "keys", id]) => manage::revoke_key(ctx, id).await,
        (_, ["api", ..]) => Err(ApiError::not_found("no such API endpoint")),
        (Method::Put, [channel, subdir, filename]) => {
            let (channel, subdir, filename) = file_path(channel, subdir, filename)?;
            publish::artifactory::deploy(ctx, &channel, &subdir, &filename).await
        }
        (Method::Get | Method::Head, [channel, subdir, rest @ ..]) if !rest.is_empty() => {
            let file = rest.join("/");
            let missing = || ApiError::not_found(format!("no such file: {}", short(path)));
            let kind = ChannelFile::of(&file).ok_or_else(missing)?;
            let channel: ChannelName = channel.parse().map_err(|_| missing())?;
            let subdir: Subdir = subdir.parse().map_err(|_| missing())?;
            serve::serve_file(ctx, &channel, &subdir, &file, kind).await
        }
        (Method::Get | Method::Head, _) => Err(ApiError::not_found(format!(
            "no such file: {}",
            short(path)
        ))),
        _ => Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            "method not allowed here",
        )),
    }
}

/// The names of a package file's path, parsed before they reach a handler.
fn file_path(
    channel: &str,
    subdir: &str,
    filename: &str,
) -> ApiResult<(ChannelName, Subdir, PackageFilename)> {
    Ok((channel.parse()?, subdir.parse()?, filename.parse()?))
}

/// Paths echoed in errors are cut short: clients show at most 512 characters of a message.
fn short(path: &str) -> String {
    path.chars().take(200).collect()
}
