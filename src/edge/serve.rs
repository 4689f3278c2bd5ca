//! GET and HEAD of channel files: repodata and packages, once the caller is authorized, from the
//! data centre's cache (see [`super::edge_cache`]) or else straight from R2.

use worker::{Bucket, Conditional, Date, DateInit, Headers, Method, Response, ResponseBody};

use super::auth::{Channel, Hiding};
use super::channel_index::MirrorFetched;
use super::context::RequestContext;
use super::edge_cache::{self, Copy, Stored};
use super::error::{ApiError, ApiResult, ErrorCode};
use super::mirror;
use super::mirror_counter;
use super::storage::file_key;
use crate::access::Action;
use crate::edge_cache::lifetime_ms;
use crate::http_rules::{
    get_is_not_modified, is_not_modified, parse_range, single_etag, ByteRange, RangeRequest,
};
use crate::names::{ChannelFile, ChannelName, Subdir};
use crate::repodata::empty_noarch;

/// Package files change only by an explicit forced replacement, so they may be cached long.
const PACKAGE_CACHE: &str = "max-age=604800";
/// Index files change with every upload.
const INDEX_CACHE: &str = "max-age=30";
/// Shards are content-addressed: a shard's bytes never change.
const SHARD_CACHE: &str = "max-age=31536000, immutable";
/// Every file of a private channel.
const PRIVATE_CACHE: &str = "private, no-cache";
/// What the answer for a private file depends on besides its URL (a `/t/<key>/` is in the URL).
const PRIVATE_VARY: &str = "Authorization, X-API-Key, Cookie";

pub async fn serve_file(
    ctx: &RequestContext,
    channel_name: &ChannelName,
    subdir: &Subdir,
    filename: &str,
    kind: ChannelFile,
) -> ApiResult<Response> {
    // Authorized before any byte is read, from the cache or from R2. The channel's visibility
    // and the key come from the isolate cache, so a public read is one read.
    let (_, channel) = ctx
        .authorize(channel_name, Action::Read, Hiding::Challenge)
        .await?;
    let stale = match &channel.mirror {
        // A file already kept is served as on any channel (from the edge cache when warm, with
        // no R2 operation); only a miss asks the upstream.
        Some(rules) if kind == ChannelFile::Package => {
            match serve_stored(ctx, &channel, channel_name, subdir, filename, kind).await {
                Err(error) if error.code == ErrorCode::NotFound => {}
                answer => {
                    if answer.is_ok() {
                        mirror_counter::hit(channel_name);
                    }
                    return answer;
                }
            }
            // Only a plain GET is answered from the upstream's bytes as they come; a HEAD, a
            // range or a conditional GET waits for the file to be stored and is read from R2.
            let stream = ctx.req().method() == Method::Get && Conditions::of(ctx).is_plain();
            let fetched =
                mirror::fetch_package(ctx, channel_name, subdir, filename, rules, stream).await?;
            match fetched {
                (MirrorFetched::Streamed(body), size) => {
                    return respond_streamed(body, size, filename, &Caching::of(&channel, kind));
                }
                (MirrorFetched::Stored, _) => mirror_counter::hit(channel_name),
            }
            None
        }
        // repodata.json, its .zst, the shard index and run_exports.json are built from the
        // mirror's index, kept fresh first.
        Some(rules) if kind == ChannelFile::Index => {
            mirror::sync(ctx, channel_name, subdir, rules).await?
        }
        // Shards are content-addressed: the shard index names only stored ones.
        _ => None,
    };
    let response = serve_stored(ctx, &channel, channel_name, subdir, filename, kind).await?;
    match stale {
        Some(age) => {
            let headers = response.headers();
            headers.set("Age", &age.to_string())?;
            headers.set(
                "X-Condaflare-Stale",
                "the mirror's upstream failed; this copy is Age seconds old",
            )?;
            Ok(response)
        }
        None => Ok(response),
    }
}

/// Answers a file from the cache or R2, once its channel is authorized.
async fn serve_stored(
    ctx: &RequestContext,
    channel: &Channel,
    channel_name: &ChannelName,
    subdir: &Subdir,
    filename: &str,
    kind: ChannelFile,
) -> ApiResult<Response> {
    let head_only = ctx.req().method() == Method::Head;
    let key = file_key(channel_name, subdir, filename);
    let caching = Caching::of(channel, kind);
    let conditions = Conditions::of(ctx);
    // A range is read from R2: the cache keeps whole files, and slicing one would read it all.
    let cached_kind = lifetime_ms(kind).is_some() && conditions.range.is_none();
    if cached_kind {
        if let Some(copy) = edge_cache::lookup(&key, kind, channel.created_at).await {
            let fetched = from_copy(copy, &conditions, head_only);
            return respond(fetched, filename, &caching, head_only);
        }
    }
    let fetched = fetch_object(&ctx.bucket()?, &conditions, &key, head_only).await?;
    match fetched {
        Some(Fetched::Body {
            meta,
            body: Some(body),
            range: None,
        }) if cached_kind && !head_only && conditions.is_plain() => {
            let (answer, copy) = edge_cache::tee(body);
            if let Some(copy) = copy {
                let stored = Stored {
                    object_key: key,
                    kind,
                    channel_created: channel.created_at,
                    etag: meta.etag.clone(),
                    uploaded_ms: meta.uploaded_ms,
                    size: meta.size,
                    content_type: ChannelFile::content_type(filename),
                };
                // After the answer: the copy is read as the client reads its branch.
                ctx.wait_until(edge_cache::store(stored, copy));
            }
            let fetched = Fetched::Body {
                meta,
                body: Some(answer),
                range: None,
            };
            respond(fetched, filename, &caching, head_only)
        }
        Some(fetched) => respond(fetched, filename, &caching, head_only),
        None if subdir.as_str() == "noarch" && kind == ChannelFile::Index => {
            serve_empty_noarch(&conditions, channel, filename, &caching, head_only)
        }
        None => Err(ApiError::not_found(format!(
            "no file {subdir}/{filename} in channel '{channel_name}'"
        ))),
    }
}

/// How long a file may be kept, and by whom.
struct Caching {
    cache_control: String,
    vary: Option<&'static str>,
}

impl Caching {
    /// A private channel's files are kept by no shared cache, revalidated on every use by the
    /// client's own (a shared browser keeps nothing a signed-out user could read), and vary on
    /// the credentials. Public files are cached by their kind.
    fn of(channel: &Channel, kind: ChannelFile) -> Self {
        if channel.private {
            return Self {
                cache_control: PRIVATE_CACHE.to_owned(),
                vary: Some(PRIVATE_VARY),
            };
        }
        let lifetime = match kind {
            // An attestation may be added to a package already stored, or replaced with it.
            ChannelFile::Index | ChannelFile::Attestation => INDEX_CACHE,
            ChannelFile::Shard => SHARD_CACHE,
            ChannelFile::Package => PACKAGE_CACHE,
        };
        Self {
            cache_control: format!("public, {lifetime}"),
            vary: None,
        }
    }

    fn set(&self, headers: &Headers) -> ApiResult<()> {
        headers.set("Cache-Control", &self.cache_control)?;
        if let Some(vary) = self.vary {
            headers.set("Vary", vary)?;
        }
        Ok(())
    }
}

/// What answers need of a stored file.
struct Meta {
    etag: String,
    uploaded_ms: u64,
    size: u64,
}

impl Meta {
    fn of(object: &worker::Object) -> Self {
        Self {
            etag: object.http_etag(),
            uploaded_ms: object.uploaded().as_millis(),
            size: object.size(),
        }
    }
}

/// What R2 (or the cache) gave back for a request.
enum Fetched {
    /// The file, or the part of it that was asked for (no body for HEAD).
    Body {
        meta: Meta,
        body: Option<ResponseBody>,
        range: Option<ByteRange>,
    },
    /// A conditional request whose condition says the client's copy is current.
    NotModified(Meta),
    Unsatisfiable(u64),
}

impl Fetched {
    fn of(object: worker::Object, range: Option<ByteRange>) -> ApiResult<Self> {
        Ok(match object.body() {
            Some(body) => Self::Body {
                meta: Meta::of(&object),
                body: Some(body.response_body()?),
                range,
            },
            None => Self::NotModified(Meta::of(&object)),
        })
    }
}

/// The request's conditions and range.
struct Conditions {
    if_none_match: Option<String>,
    if_modified_since: Option<u64>,
    range: Option<String>,
}

impl Conditions {
    fn of(ctx: &RequestContext) -> Self {
        Self {
            if_none_match: ctx.header("If-None-Match").map(str::to_owned),
            if_modified_since: ctx.header("If-Modified-Since").and_then(parse_http_date),
            range: ctx.header("Range").map(str::to_owned),
        }
    }

    /// Neither conditional nor ranged: the GETs whose whole file is stored in the cache (so
    /// what a copy answers never depends on which request stored it).
    fn is_plain(&self) -> bool {
        self.if_none_match.is_none() && self.if_modified_since.is_none() && self.range.is_none()
    }
}

/// The answer from a cached copy, decided exactly as a read from R2 decides it: HEAD by the
/// same comparison as after R2's head, a GET as R2's conditional get.
fn from_copy(copy: Copy, conditions: &Conditions, head_only: bool) -> Fetched {
    let meta = Meta {
        etag: copy.etag,
        uploaded_ms: copy.uploaded_ms,
        size: copy.size,
    };
    let condition = if head_only {
        is_not_modified
    } else {
        get_is_not_modified
    };
    if condition(
        conditions.if_none_match.as_deref(),
        conditions.if_modified_since,
        &meta.etag,
        meta.uploaded_ms,
    ) {
        return Fetched::NotModified(meta);
    }
    Fetched::Body {
        meta,
        body: copy.body.filter(|_| !head_only).map(ResponseBody::Stream),
        range: None,
    }
}

async fn fetch_object(
    bucket: &Bucket,
    conditions: &Conditions,
    key: &str,
    head_only: bool,
) -> ApiResult<Option<Fetched>> {
    let if_none_match = conditions.if_none_match.as_deref();
    let if_modified_since = conditions.if_modified_since;
    let range_header = conditions.range.as_deref();

    if head_only || range_header.is_some() {
        // Metadata first: HEAD needs nothing else, and a range needs the size.
        let Some(object) = bucket.head(key).await? else {
            return Ok(None);
        };
        let meta = Meta::of(&object);
        if is_not_modified(
            if_none_match,
            if_modified_since,
            &meta.etag,
            meta.uploaded_ms,
        ) {
            return Ok(Some(Fetched::NotModified(meta)));
        }
        if head_only {
            return Ok(Some(Fetched::Body {
                meta,
                body: None,
                range: None,
            }));
        }
        return match parse_range(range_header, meta.size) {
            RangeRequest::Unsatisfiable => Ok(Some(Fetched::Unsatisfiable(meta.size))),
            RangeRequest::Whole => get(bucket, key, None).await,
            RangeRequest::Partial(range) => get(bucket, key, Some(range)).await,
        };
    }

    // A plain GET, with the client's condition passed to R2 so a 304 costs no body read.
    let mut request = bucket.get(key);
    if let Some(tag) = if_none_match.and_then(single_etag) {
        request = request.only_if(Conditional {
            etag_does_not_match: Some(tag.to_owned()),
            ..Default::default()
        });
    } else if let (None, Some(since)) = (if_none_match, if_modified_since) {
        // HTTP dates have whole seconds; R2 times have milliseconds.
        request = request.only_if(Conditional {
            uploaded_after: Some(Date::new(DateInit::Millis(since + 999))),
            ..Default::default()
        });
    }
    request
        .execute()
        .await?
        .map(|object| Fetched::of(object, None))
        .transpose()
}

async fn get(bucket: &Bucket, key: &str, range: Option<ByteRange>) -> ApiResult<Option<Fetched>> {
    let mut request = bucket.get(key);
    if let Some(range) = range {
        request = request.range(worker::Range::OffsetWithLength {
            offset: range.start,
            length: range.length(),
        });
    }
    request
        .execute()
        .await?
        .map(|object| Fetched::of(object, range))
        .transpose()
}

fn parse_http_date(value: &str) -> Option<u64> {
    let millis = js_sys::Date::parse(value);
    (millis.is_finite() && millis >= 0.0).then_some(millis as u64)
}

fn http_date(millis: u64) -> String {
    String::from(js_sys::Date::new(&(millis as f64).into()).to_utc_string())
}

fn respond(
    fetched: Fetched,
    filename: &str,
    caching: &Caching,
    head_only: bool,
) -> ApiResult<Response> {
    let headers = Headers::new();
    caching.set(&headers)?;
    headers.set("Accept-Ranges", "bytes")?;
    let (meta, body, status, length) = match fetched {
        Fetched::Unsatisfiable(size) => {
            let mut response = super::error::response(&ApiError::new(
                ErrorCode::RangeNotSatisfiable,
                "the requested range is outside the file",
            ));
            response
                .headers_mut()
                .set("Content-Range", &format!("bytes */{size}"))?;
            return Ok(response);
        }
        Fetched::NotModified(meta) => {
            set_validators(&headers, &meta)?;
            return Ok(Response::builder()
                .with_status(304)
                .with_headers(headers)
                .empty());
        }
        Fetched::Body { meta, body, range } => match range {
            Some(range) => {
                headers.set("Content-Range", &range.content_range(meta.size))?;
                let length = range.length();
                (meta, body, 206, length)
            }
            None => {
                let size = meta.size;
                (meta, body, 200, size)
            }
        },
    };
    set_validators(&headers, &meta)?;
    headers.set("Content-Type", ChannelFile::content_type(filename))?;
    headers.set("Content-Length", &length.to_string())?;
    let builder = Response::builder()
        .with_status(status)
        .with_headers(headers);
    match body.filter(|_| !head_only) {
        Some(body) => Ok(builder.body(body)),
        None => Ok(builder.empty()),
    }
}

/// A mirror's package file as its upstream sends it, while it is being stored. It has no ETag
/// or Last-Modified yet (R2 gives them once the put ends); its body ends in an error, not
/// cleanly, if R2 refuses the bytes.
fn respond_streamed(
    body: ResponseBody,
    size: u64,
    filename: &str,
    caching: &Caching,
) -> ApiResult<Response> {
    let headers = Headers::new();
    caching.set(&headers)?;
    headers.set("Content-Type", ChannelFile::content_type(filename))?;
    headers.set("Content-Length", &size.to_string())?;
    Ok(Response::builder()
        .with_status(200)
        .with_headers(headers)
        .body(body))
}

fn set_validators(headers: &Headers, meta: &Meta) -> ApiResult<()> {
    headers.set("ETag", &meta.etag)?;
    headers.set("Last-Modified", &http_date(meta.uploaded_ms))?;
    Ok(())
}

/// A channel's noarch index files before its first noarch package: clients need them to exist.
fn serve_empty_noarch(
    conditions: &Conditions,
    channel: &Channel,
    filename: &str,
    caching: &Caching,
    head_only: bool,
) -> ApiResult<Response> {
    let created_at =
        String::from(js_sys::Date::new(&(channel.created_at as f64).into()).to_iso_string());
    let body = empty_noarch(filename, &created_at)
        .ok_or_else(|| ApiError::not_found(format!("no file noarch/{filename}")))?;
    let etag = format!(
        "\"empty-{}-{}\"",
        channel.created_at,
        filename.replace('.', "-")
    );
    let headers = Headers::new();
    caching.set(&headers)?;
    headers.set("ETag", &etag)?;
    headers.set("Last-Modified", &http_date(channel.created_at))?;
    let not_modified = is_not_modified(
        conditions.if_none_match.as_deref(),
        conditions.if_modified_since,
        &etag,
        channel.created_at,
    );
    if not_modified {
        return Ok(Response::builder()
            .with_status(304)
            .with_headers(headers)
            .empty());
    }
    headers.set("Content-Type", ChannelFile::content_type(filename))?;
    headers.set("Content-Length", &body.len().to_string())?;
    let builder = Response::builder().with_status(200).with_headers(headers);
    Ok(if head_only {
        builder.empty()
    } else {
        builder.fixed(body)
    })
}
