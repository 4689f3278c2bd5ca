//! GET and HEAD of channel files: repodata and packages, straight from R2 once the caller is
//! authorized.

use worker::{Bucket, Conditional, Date, DateInit, Headers, Method, Request, Response};

use super::auth::{Channel, Hiding};
use super::context::RequestContext;
use super::error::{ApiError, ApiResult, ErrorCode};
use super::storage::file_key;
use crate::access::Action;
use crate::http_rules::{is_not_modified, parse_range, single_etag, ByteRange, RangeRequest};
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
    // Authorized before any byte is read. The channel's visibility and the key come from the
    // isolate cache, so a public read stays one R2 read.
    let (_, channel) = ctx
        .authorize(channel_name, Action::Read, Hiding::Challenge)
        .await?;

    let req = ctx.req();
    let head_only = req.method() == Method::Head;
    let key = file_key(channel_name, subdir, filename);
    let fetched = fetch_object(&ctx.bucket()?, req, &key, head_only).await?;
    let caching = Caching::of(&channel, kind);
    match fetched {
        Some(fetched) => respond(fetched, filename, &caching, head_only),
        None if subdir.as_str() == "noarch" && kind == ChannelFile::Index => {
            serve_empty_noarch(req, &channel, filename, &caching, head_only)
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

/// What R2 gave back for a request.
enum Fetched {
    /// The object, or the part of it that was asked for.
    Body {
        object: worker::Object,
        range: Option<ByteRange>,
    },
    /// A conditional request whose condition says the client's copy is current.
    NotModified(worker::Object),
    Unsatisfiable(u64),
}

async fn fetch_object(
    bucket: &Bucket,
    req: &Request,
    key: &str,
    head_only: bool,
) -> ApiResult<Option<Fetched>> {
    let headers = req.headers();
    let if_none_match = headers.get("If-None-Match")?;
    let if_modified_since = headers
        .get("If-Modified-Since")?
        .and_then(|value| parse_http_date(&value));
    let range_header = headers.get("Range")?;

    if head_only || range_header.is_some() {
        // Metadata first: HEAD needs nothing else, and a range needs the size.
        let Some(object) = bucket.head(key).await? else {
            return Ok(None);
        };
        let last_modified = object.uploaded().as_millis();
        if is_not_modified(
            if_none_match.as_deref(),
            if_modified_since,
            &object.http_etag(),
            last_modified,
        ) {
            return Ok(Some(Fetched::NotModified(object)));
        }
        if head_only {
            return Ok(Some(Fetched::Body {
                object,
                range: None,
            }));
        }
        let size = object.size();
        return match parse_range(range_header.as_deref(), size) {
            RangeRequest::Unsatisfiable => Ok(Some(Fetched::Unsatisfiable(size))),
            RangeRequest::Whole => get(bucket, key, None).await,
            RangeRequest::Partial(range) => {
                let fetched = get(bucket, key, Some((range.start, range.length()))).await?;
                Ok(fetched.map(|fetched| match fetched {
                    Fetched::Body { object, .. } => Fetched::Body {
                        object,
                        range: Some(range),
                    },
                    other => other,
                }))
            }
        };
    }

    // A plain GET, with the client's condition passed to R2 so a 304 costs no body read.
    let mut request = bucket.get(key);
    if let Some(tag) = if_none_match.as_deref().and_then(single_etag) {
        request = request.only_if(Conditional {
            etag_does_not_match: Some(tag.to_owned()),
            ..Default::default()
        });
    } else if let (None, Some(since)) = (&if_none_match, if_modified_since) {
        // HTTP dates have whole seconds; R2 times have milliseconds.
        request = request.only_if(Conditional {
            uploaded_after: Some(Date::new(DateInit::Millis(since + 999))),
            ..Default::default()
        });
    }
    Ok(request.execute().await?.map(|object| {
        if object.body().is_some() {
            Fetched::Body {
                object,
                range: None,
            }
        } else {
            Fetched::NotModified(object)
        }
    }))
}

async fn get(bucket: &Bucket, key: &str, range: Option<(u64, u64)>) -> ApiResult<Option<Fetched>> {
    let mut request = bucket.get(key);
    if let Some((offset, length)) = range {
        request = request.range(worker::Range::OffsetWithLength { offset, length });
    }
    Ok(request.execute().await?.map(|object| Fetched::Body {
        object,
        range: None,
    }))
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
    let (object, status, length) = match fetched {
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
        Fetched::NotModified(object) => {
            set_validators(&headers, &object)?;
            return Ok(Response::builder()
                .with_status(304)
                .with_headers(headers)
                .empty());
        }
        Fetched::Body { object, range } => match range {
            Some(range) => {
                headers.set("Content-Range", &range.content_range(object.size()))?;
                (object, 206, range.length())
            }
            None => {
                let size = object.size();
                (object, 200, size)
            }
        },
    };
    set_validators(&headers, &object)?;
    headers.set("Content-Type", ChannelFile::content_type(filename))?;
    headers.set("Content-Length", &length.to_string())?;
    let builder = Response::builder()
        .with_status(status)
        .with_headers(headers);
    match object.body().filter(|_| !head_only) {
        Some(body) => Ok(builder.body(body.response_body()?)),
        None => Ok(builder.empty()),
    }
}

fn set_validators(headers: &Headers, object: &worker::Object) -> ApiResult<()> {
    headers.set("ETag", &object.http_etag())?;
    headers.set("Last-Modified", &http_date(object.uploaded().as_millis()))?;
    Ok(())
}

/// A channel's noarch index files before its first noarch package: clients need them to exist.
fn serve_empty_noarch(
    req: &Request,
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
    let headers_in = req.headers();
    let since = headers_in
        .get("If-Modified-Since")?
        .and_then(|v| parse_http_date(&v));
    let not_modified = is_not_modified(
        headers_in.get("If-None-Match")?.as_deref(),
        since,
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
